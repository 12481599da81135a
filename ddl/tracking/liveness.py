"""No run stays RUNNING after its job is gone, even one that vanished without a word (a SLURM
cgroup kill, a node that lost power, kill -9 of every process, the tracking worker included).

While a run is open, its tracking worker beats every HEARTBEAT_S seconds: the run's `ddl.heartbeat`
tag (the time, in seconds) and the mtime of `.heartbeat` in its run directory. The next time ddl
touches the store (a run or a sweep opening, `ddl-report`), a RUNNING run whose last beat, by both,
is older than STALE_S is ended FAILED, saying so. A job that still lives beats (a stopped one too:
its worker goes on), a resumed run is a new job whose opening beats at once, and a store that was
unreachable for a while leaves the run directory's beat fresh: none of those is ended. A dead run
looks RUNNING until the first touch after STALE_S, at worst.

    DDL_HEARTBEAT_S=60     the beat (the stale limit is five of them)
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

TAG, FILE = "ddl.heartbeat", ".heartbeat"
HEARTBEAT_S = float(os.environ.get("DDL_HEARTBEAT_S", "60"))
STALE_S = 5 * HEARTBEAT_S
_REAPED: set = set()        # the stores whose vanished runs this process has ended
log = logging.getLogger("ddl")


def stamp(now: Optional[float] = None) -> str:
    """The tag's value: seconds, zero-padded (readable, and sorted as they compare)."""
    return f"{int(time.time() if now is None else now):011d}"


def beat(tracker, run_dir: Optional[str]) -> None:
    """One beat of an open run: its tag (through the run's outbox: kept while the store is down)
    and its run directory's file."""
    tracker.set_tags({TAG: stamp()})
    if run_dir and Path(run_dir).is_dir():
        try:
            (Path(run_dir) / FILE).touch()
        except OSError:
            pass


def last_beat(run) -> Optional[float]:
    """The run's last beat, by its tag and its run directory's file (None: it never beat)."""
    tag = run.data.tags.get(TAG)
    if not tag or not tag.isdigit():
        return None
    beats = [float(tag)]
    out_dir = run.data.params.get("out_dir")
    try:
        beats.append((Path(out_dir) / FILE).stat().st_mtime if out_dir else 0.0)
    except OSError:
        pass
    return max(beats)


def end_stale(cfg, keep: Optional[str] = None, now: Optional[float] = None) -> list[str]:
    """End FAILED the RUNNING runs of cfg.experiment whose job stopped beating more than STALE_S
    ago (`keep`: a run id being resumed, never ended here); their ids."""
    from ddl.tracking.runs import search_all  # noqa: PLC0415
    from ddl.tracking.store import existing_client  # noqa: PLC0415
    from ddl.tracking.tracker import Tracker  # noqa: PLC0415

    now = time.time() if now is None else now
    client = existing_client(cfg.uri)
    found = client and client.get_experiment_by_name(cfg.experiment)
    if found is None:
        return []
    ended = []
    for run in search_all(client, found.experiment_id, "attributes.status = 'RUNNING'"):
        last = last_beat(run)
        if run.info.run_id == keep or last is None or now - last < STALE_S:
            continue
        why = (f"its job stopped without a word at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last))} "
               f"(its last heartbeat; found {now - last:.0f} s later): killed with its tracking worker (a "
               "SLURM job's cgroup, a node lost, kill -9 of every process). Resume it from its newest "
               "checkpoint with checkpoint.resume=auto and the same out_dir.")
        Tracker.attach(cfg, run.info.run_id).end("FAILED", why, "lost", "")
        ended.append(run.info.run_id)
    return ended


def end_stale_once(cfg, keep: str) -> None:
    """Once per store, after a run of it opened (so the store is made and reachable): end the
    runs whose job vanished (`keep`: the run just opened, resumed perhaps). Never fails the run."""
    if (cfg.uri, cfg.experiment) in _REAPED:
        return
    _REAPED.add((cfg.uri, cfg.experiment))
    try:
        for run_id in end_stale(cfg, keep=keep):
            log.warning("MLflow run %s was RUNNING, but its job stopped beating long ago: marked FAILED", run_id)
    except Exception as err:  # noqa: BLE001 (a look for others' runs; this run goes on)
        log.warning("could not look for RUNNING runs whose job vanished: %s: %s", type(err).__name__, err)
