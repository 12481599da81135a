"""The outbox's rules with a store that fails on demand (the real server is killed in
test_tracking_outage.py): in order, said once down and once back, backoff, kept on disk."""
from __future__ import annotations

import logging

import pytest

from ddl.tracking import outbox as ob


class FlakyStore:
    """Records what reaches it; raises while `down`."""

    def __init__(self):
        self.down, self.got = False, []

    def log_batch(self, run_id, metrics=(), tags=()):
        if self.down:
            raise ConnectionError("connection refused")
        self.got += [("m", m.key, m.step) for m in metrics] + [("t", t.key) for t in tags]

    def set_terminated(self, run_id, status):
        if self.down:
            raise ConnectionError("connection refused")
        self.got.append(("end", status))


@pytest.fixture
def box(tmp_path, monkeypatch):
    clock = {"t": 100.0}
    monkeypatch.setattr(ob.time, "monotonic", lambda: clock["t"])
    store = FlakyStore()
    box = ob.Outbox(store, "run1", "http://me:pw@host:5000")
    box.keep_in(tmp_path)
    return box, store, clock, tmp_path / ob.SPOOL


def metrics(step):
    return {"op": "metrics", "metrics": [["error/train", 0.5, 0, step]], "tags": {}}


def test_down_is_said_once_kept_on_disk_retried_with_backoff_and_back_once(box, caplog):
    box, store, clock, spool = box
    caplog.set_level(logging.WARNING, logger="ddl")
    box.add(metrics(0))
    assert box.deliver() and store.got == [("m", "error/train", 0)]
    store.down = True
    box.add(metrics(1))
    assert not box.deliver()
    assert spool.is_file() and "pw" not in spool.read_text()          # kept, password not
    store.down = False
    box.add(metrics(2))
    assert not box.deliver()                  # within the first backoff (5 s): no try at all
    assert store.got == [("m", "error/train", 0)]
    clock["t"] += ob.BACKOFF_S[0]
    assert box.deliver() and not spool.exists()
    assert store.got[1:] == [("m", "error/train", 1), ("m", "error/train", 2)]   # in order
    said = [r.getMessage() for r in caplog.records]
    assert sum("is unreachable" in m for m in said) == 1
    assert sum("answers again after" in m for m in said) == 1
    assert not any("pw@" in m for m in said)


def test_what_is_left_at_the_end_is_reported_and_replayable(box, caplog):
    box, store, clock, spool = box
    caplog.set_level(logging.WARNING, logger="ddl")
    store.down = True
    box.add(metrics(0))
    box.add({"op": "end", "status": "FINISHED"})
    assert not box.deliver(final=True)
    box.report_undelivered()
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "1 metric values, 0 tags, 0 artifacts and the run's end (FINISHED)" in line
    assert f"python -m ddl.tracking.replay {spool.parent}" in line
    head, entries = ob.read_spool(spool)
    assert head == {"run_id": "run1", "uri": "http://me:***@host:5000"} and len(entries) == 2
