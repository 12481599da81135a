"""What a run sends to MLflow, delivered in order or kept: the tracking server is a side service.

Every call a Tracker makes (metrics, tags, an artifact, a text, the run's end) becomes an entry of
the outbox. `deliver()` sends entries in order; when one fails (the server is down, the network
went away) the outbox says so once, keeps the rest in memory and in `<run dir>/unsent.jsonl`, and
tries again later with backoff (at the next flush, never more often than the backoff allows, each
try without MLflow's own retries, so the step is not held up), and says once when the server came
back. What still cannot be delivered at the end is reported with the command that replays it:

    python -m ddl.tracking.replay RUN_DIR [--uri URI]
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ddl.config import redact
from ddl.atomic import write_text_atomic

log = logging.getLogger("ddl")
SPOOL = "unsent.jsonl"
BACKOFF_S = (5.0, 10.0, 20.0, 40.0, 60.0)


class Outbox:
    """Entries for one run, sent through `client` in order (see the module's docstring)."""

    def __init__(self, client, run_id: str, uri: str):
        self.client, self.run_id, self.uri = client, run_id, uri
        self.entries: list[dict] = []
        self.spool: Optional[Path] = None
        self.down_since: Optional[float] = None
        self.failures, self.next_try = 0, 0.0

    def keep_in(self, run_dir) -> None:
        """Where the unsent entries are kept while the store is unreachable."""
        self.spool = Path(run_dir) / SPOOL

    def add(self, entry: dict) -> None:
        self.entries.append(entry)

    def deliver(self, final: bool = False) -> bool:
        """Send what is queued; True when nothing is left. While the store is down, a try is made
        only when the backoff allows (always when final)."""
        if not self.entries:
            return True
        if self.down_since is not None and not final and time.monotonic() < self.next_try:
            return False
        try:
            with (_no_retries() if self.down_since is not None and not final else _as_is()):
                while self.entries:
                    send(self.client, self.run_id, self.entries[0])
                    self.entries.pop(0)
        except Exception as err:  # noqa: BLE001 - any failure to deliver: keep, retry later
            self._went_down(err)
            return False
        self._came_back()
        return True

    def _went_down(self, err: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("MLflow at %s is unreachable (%s: %s); training goes on, and what it "
                        "logs is kept in %s until the store answers again", redact(self.uri),
                        type(err).__name__, _first_line(err), self.spool or "memory")
        self.failures += 1
        self.next_try = time.monotonic() + BACKOFF_S[min(self.failures, len(BACKOFF_S)) - 1]
        self._write_spool()

    def _came_back(self) -> None:
        if self.down_since is not None:
            log.warning("MLflow at %s answers again after %.0f s; everything kept was delivered",
                        redact(self.uri), time.monotonic() - self.down_since)
            self.down_since, self.failures = None, 0
        if self.spool is not None and self.spool.exists():
            self.spool.unlink()

    def _write_spool(self) -> None:
        if self.spool is None:
            return
        head = {"run_id": self.run_id, "uri": redact(self.uri)}
        lines = [json.dumps(head)] + [json.dumps(e) for e in self.entries]
        try:
            write_text_atomic(self.spool, "\n".join(lines) + "\n")
        except OSError as err:
            log.warning("cannot keep the unsent MLflow entries in %s: %s", self.spool, err)

    def report_undelivered(self) -> None:
        """At the end, after a last try: exactly what did not reach the store, and the replay."""
        if not self.entries:
            return
        self._write_spool()
        counts = summarize(self.entries)
        where = f"kept in {self.spool}; deliver them with: python -m ddl.tracking.replay " \
                f"{self.spool.parent}" if self.spool else "lost (no run directory to keep them in)"
        log.error("MLflow at %s did not answer by the end of the run: %s were not delivered; %s",
                  redact(self.uri), counts, where)


def send(client, run_id: str, entry: dict) -> None:
    """One entry to the store (also what the replay does with each line)."""
    from mlflow.entities import Metric, RunTag  # noqa: PLC0415

    kind = entry["op"]
    if kind == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in entry["metrics"]],
                         tags=[RunTag(k, v) for k, v in entry.get("tags", {}).items()])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in entry["tags"].items()])
    elif kind == "artifact":
        if Path(entry["path"]).exists():          # a file removed since is not worth failing for
            client.log_artifact(run_id, entry["path"], entry.get("artifact_path"))
    elif kind == "end":
        client.set_terminated(run_id, entry["status"])
    else:
        raise ValueError(f"unknown outbox entry {kind!r}")


def summarize(entries: list[dict]) -> str:
    """'12 metric values, 3 tags, 2 artifacts and the run's end (FINISHED)'."""
    metrics = sum(len(e["metrics"]) for e in entries if e["op"] == "metrics")
    tags = sum(len(e.get("tags", {})) for e in entries if e["op"] in ("tags", "metrics"))
    files = sum(e["op"] == "artifact" for e in entries)
    ends = [e["status"] for e in entries if e["op"] == "end"]
    parts = [f"{metrics} metric values", f"{tags} tags", f"{files} artifacts"]
    return ", ".join(parts) + (f" and the run's end ({ends[-1]})" if ends else "")


def read_spool(path) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines or "run_id" not in lines[0]:
        raise ValueError(f"{path} is not a ddl outbox (no header line)")
    return lines[0], lines[1:]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return redact(text[0][:200]) if text else ""


@contextmanager
def _no_retries() -> Iterator[None]:
    """One quick try while the store is known to be down: no MLflow retries, a short timeout."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                            "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="3")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _as_is() -> Iterator[None]:
    yield

