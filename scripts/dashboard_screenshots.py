"""The README's dashboard pictures, made anew from a real sweep, a real `mlflow ui` and Debian's
Chromium (headless, driven by Playwright):

    python scripts/dashboard_screenshots.py [--out docs]

It runs the course's hidden-layer-size sweep on the flower data (Course 1, week 3) into a
temporary store, opens the link ddl printed at 1600 px, and saves docs/runs_table.png (ddl's view of
the runs table: the diagnosis and the sweep's best point first) and docs/bias_variance_map.png (the
sweep parent's map, as its artifact page shows it).
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("DDL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SWEEP = ["-m", "model.hidden=[1],[2],[4],[20],[50]", "train.progress=false"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"mlflow ui at {url} did not answer within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ddl-shots-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        done = subprocess.run([sys.executable, "-m", "ddl", *SWEEP, f"tracking.uri={uri}"], cwd=tmp,
                              capture_output=True, text=True, timeout=900)
        text = done.stdout + done.stderr
        links, parents = re.findall(r"open:\s+(\S+)", text), re.findall(r"sweep parent run (\w+)", text)
        if done.returncode or not links or not parents:
            sys.exit(f"the sweep failed (exit {done.returncode}):\n{text[-3000:]}")
        port = free_port()
        ui = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port",
                                 str(port), "--workers", "1", "--backend-store-uri", uri], cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            wait_healthy(ui, proc)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                # a laptop's width, MLflow's assistant open beside the table as on a first visit
                page = browser.new_page(viewport={"width": 1600, "height": 900})
                page.goto(links[0].replace("http://127.0.0.1:5000", ui), timeout=120_000)
                page.get_by_role("columnheader", name="sweep.best").first.wait_for(timeout=120_000)
                page.screenshot(path=str(out / "runs_table.png"))
                experiment = re.search(r"experiments/(\w+)", links[0]).group(1)
                page.set_viewport_size({"width": 1400, "height": 900})
                page.goto(f"{ui}/#/experiments/{experiment}/runs/{parents[0]}/artifacts/"
                          "bias_variance_map.png?workflowType=machine_learning", timeout=120_000)
                page.wait_for_function("() => [...document.images].some(i => i.naturalWidth >= 600)",
                                       timeout=120_000)     # the map itself (700 px), decoded
                page.screenshot(path=str(out / "bias_variance_map.png"))
                browser.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"wrote {out / 'runs_table.png'} and {out / 'bias_variance_map.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
