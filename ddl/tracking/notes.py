"""failed.rank<r>.json: the error a failing rank other than 0 leaves in the run directory before
it aborts the job (ddl/runner/job.py), read by the tracking worker that ends the run with it.
Standard library only: no rank but the worker loads MLflow to fail a run."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from ddl.atomic import write_text_atomic

NOTE = "failed.rank*.json"


def note_path(run_dir, rank: int) -> Path:
    """Where a failing rank other than 0 leaves its error (leave_note writes it)."""
    return Path(run_dir) / NOTE.replace("*", str(rank))


def leave_note(run_dir: Path, job, rank: int, error: str, log_name: str) -> None:
    """failed.rank<r>.json: the error of a rank other than 0, for the tracking worker."""
    try:
        write_text_atomic(note_path(run_dir, rank), json.dumps(
            {"job": job, "rank": rank, "error": error, "log": log_name}) + "\n")
    except OSError as err:
        print(f"ddl: could not leave the error for the tracking worker: {err}", file=sys.stderr)


def failure_note(run_dir: Optional[str]) -> Optional[dict]:
    """The note a failing rank other than 0 left for this job (the lowest rank's), if any."""
    notes = sorted(Path(run_dir).glob(NOTE)) if run_dir and Path(run_dir).is_dir() else []
    for path in notes:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return None
