"""The MLflow dashboard as a user meets it: a real sweep, a real `mlflow ui`, Debian's Chromium
(headless, driven by Playwright), the link ddl printed.

Screenshots are kept in test-artifacts/browser/ (or $DDL_TEST_ARTIFACTS/browser/). Without a
Chromium the test skips, saying how to install one; CI installs it and sets DDL_REQUIRE_BROWSER=1,
which turns that skip into a failure.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import ddl_train
from mlflow_server import run_mlflow_server

pytestmark = pytest.mark.mpi
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("DDL_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
CHROMIUM = os.environ.get("DDL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# what a sandboxed root CI machine needs (no setuid sandbox, no GPU, no calls home)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 60_000   # the UI's first load compiles a large bundle; generous against a hang only


def browser_or_skip():
    """Playwright's sync API, or a skip (a failure when DDL_REQUIRE_BROWSER=1) saying what is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is None and not Path(CHROMIUM).is_file():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set DDL_CHROMIUM)"
    if missing is None:
        return sync_playwright
    if os.environ.get("DDL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"DDL_REQUIRE_BROWSER=1 but {missing}")
    pytest.skip(missing)


def row_text(page, run_name: str) -> str:
    """A runs-table row's cells, every column: the grid renders a row's pinned name column and its
    other columns as separate elements sharing a row-index."""
    index = page.get_by_role("row").filter(has_text=run_name).first.get_attribute("row-index")
    return "\n".join(page.locator(f'[role="row"][row-index="{index}"]').all_inner_texts())


def assert_on_first_screen(page, element, width: int, height: int) -> None:
    """`element` is seen without scrolling: inside the viewport and inside the grid's visible part
    (right of which sits MLflow's assistant panel, open on a browser's first visit)."""
    grid = page.get_by_role("grid").first.bounding_box()
    box = element.bounding_box()
    right = min(width, grid["x"] + grid["width"])
    assert box and box["x"] >= grid["x"] and box["x"] + box["width"] <= right, (box, grid, width)
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, (box, height)


def test_the_printed_link_opens_the_bias_variance_view(tmp_path):
    """Which decay rate was best? A sweep over the course's schedule_lr_decay, opened by ddl's link
    at the laptop widths 1366 and 1600 px: the answer (diagnosis, the parent's best point) is on the
    first screen; at 2400 px every column of the view is there."""
    sync_playwright = browser_or_skip()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, so, se = ddl_train(0, "-m", "data=moons", "data.m=200", "model.hidden=[6]",
                             "train.epochs=10", "train.batch_size=32", "train.progress=false",
                             "schedule=scheduled", "schedule.time_interval=1", "schedule.decay_rate=0.1,1",
                             f"tracking.uri={uri}", cwd=tmp_path, timeout=300)
    assert code == 0, so + se
    links = re.findall(r"open:\s+(\S+)", so + se)
    assert len(links) == 1 and links[0].startswith("http://127.0.0.1:5000/#/experiments/"), so + se
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("ddl.sweep") == "true")
    children = [r for r in runs if r is not parent]
    best_child = min(children, key=lambda r: r.data.metrics["error/dev"])
    rate = float(best_child.data.params["schedule.decay_rate"])
    answer = parent.data.tags["sweep.best"]                  # which decay rate was best
    assert answer == (f"decay_rate={rate:g} (dev err "
                      f"{100 * best_child.data.metrics['error/dev']:.2f}%)"), answer
    note = parent.data.tags["mlflow.note.content"]           # the parent's description says it too
    assert note.startswith("A sweep of 2 points, all finished. Best: ") and answer.split(" (")[0] in note
    assert "bias_variance_map.png" in note and "sweep_table.md" in note, note
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    (tmp_path / "ui").mkdir()
    with run_mlflow_server(tmp_path / "ui", ui_for=uri) as ui, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        link = links[0].replace("http://127.0.0.1:5000", ui)
        for width in (1366, 1600):                           # a fresh browser profile each
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(link, timeout=WAIT_MS)
            shown_answer = page.get_by_text(answer, exact=True)
            shown_answer.wait_for(timeout=WAIT_MS)
            page.screenshot(path=str(ARTIFACTS / f"runs_table_{width}.png"))
            header = page.get_by_role("columnheader", name="diagnosis", exact=True).first
            assert_on_first_screen(page, header, width, 900)
            assert_on_first_screen(page, shown_answer, width, 900)
            assert parent.info.run_name in row_text(page, answer)      # in the parent's row
            page.close()

        page = browser.new_page(viewport={"width": 2400, "height": 1000})
        page.goto(link, timeout=WAIT_MS)
        page.get_by_text("sweep/best_held_out_error").first.wait_for(timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "runs_table.png"))
        body = page.inner_text("body")
        for column in ("error/train", "error/dev", "bias/avoidable", "bias/variance", "diagnosis",
                       "sweep.best", "sweep/points_finished"):
            assert column in body, (column, body[:3000])
        assert "Sort: error/dev" in body, body[:3000]          # sorted by dev error
        for child in children:                                   # the training runs, by short name
            assert page.get_by_role("link", name=child.info.run_name, exact=True).count() == 1, child
        shown = row_text(page, parent.info.run_name)             # the parent's rollups, in its row
        best = parent.data.metrics["sweep/best_held_out_error"]
        assert repr(best) in shown and "best point:" in shown and answer in shown, shown
        assert parent.data.metrics["sweep/points_finished"] == 2 and "\n2\n" in f"\n{shown}\n", shown

        page.goto(link + "&compareRunsMode=CHART", timeout=WAIT_MS)
        page.get_by_text("Step", exact=True).first.wait_for(timeout=WAIT_MS)      # a chart drawn
        page.screenshot(path=str(ARTIFACTS / "charts.png"))
        sections = re.findall(r"^(\w+)\n\((\d+)\)\nAdd chart$", page.inner_text("body"), re.M)
        assert sections == [("error", "1"), ("bias", "1"), ("cost", "1"), ("schedule", "1"),
                            ("perf", "2")], sections          # ddl's order, no chart per metric

        child = best_child
        page.goto(f"{ui}/#/experiments/{child.info.experiment_id}/runs/{child.info.run_id}"
                  "?workflowType=machine_learning", timeout=WAIT_MS)
        page.get_by_text("Next step").first.wait_for(timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "child_run.png"))
        text = page.inner_text("body")
        assert child.data.tags["mlflow.note.content"].split(" (")[0] in text, text[:3000]
        assert child.data.tags["diagnosis"].capitalize() in text, text[:3000]
        browser.close()
