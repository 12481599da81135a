"""Marking a run FAILED from a process that does not track it (a rank other than 0 that is about
to abort the job): one quick call, no retries, so the abort is not held up."""
from __future__ import annotations

import os

from ddl.config import TrackingConfig


def fail_run(cfg: TrackingConfig, run_id: str, error: str, log_name: str) -> None:
    from mlflow.entities import RunTag  # noqa: PLC0415

    from ddl.tracking.store import _client  # noqa: PLC0415

    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="3")
    client = _client(cfg.uri)
    note = f"**FAILED**: {error[:4000]}\n\nThe traceback is in {log_name} in the run directory."
    client.log_batch(run_id, tags=[RunTag("ddl.error", error[:5000]), RunTag("ddl.stopped", "failed"),
                                   RunTag("mlflow.note.content", note)])
    client.set_terminated(run_id, "FAILED")
