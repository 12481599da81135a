"""One MLflow run, rank 0 only: params, buffered per-epoch metrics with the diagnosis, artifacts.

Everything goes through `mlflow.MlflowClient` with explicit run ids, never the fluent global-state
API, so nothing leaks between runs or sweep points in one process. Callers give an epoch record's
flat names (train_cost, dev_error, avoidable_bias, ...); the store gets the grouped names of
`ddl.tracking.keys` (cost/train, error/dev, bias/avoidable, ...), which the report relies on.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Mapping, Optional

from ddl.diagnosis import CostRise, diagnose, held_out

from ddl.config import TrackingConfig, redact
from ddl.tracking.keys import mlflow_key
from ddl.tracking.outbox import Outbox
from ddl.tracking.runs import log_params
from ddl.tracking.store import Store, TrackingError, ensure_store


STALE_ON_RESUME = {"ddl.error", "ddl.stopped"}


class Tracker:
    """One MLflow run, created or resumed; steps already logged are never logged twice."""

    FLUSH_METRICS, FLUSH_SECONDS = 900, 3.0  # one log_batch holds at most 1000 metrics

    def __init__(self, client, run_id: str, cfg: TrackingConfig, last_steps: dict[str, int]):
        self._client, self.run_id, self.cfg = client, run_id, cfg
        self._last = dict(last_steps)  # store's metric key -> largest step already there
        self._rise = CostRise()        # the held-out cost's climb, for the diagnosis
        self._pending, self._label, self._flushed = [], None, time.monotonic()
        self.outbox = Outbox(client, run_id, cfg.uri)   # delivered in order, or kept
        self.parent: Optional[str] = None   # the sweep parent's run id, for a sweep's point
        self.experiment_id: Optional[str] = None

    @classmethod
    def start(cls, cfg: TrackingConfig, params: Mapping[str, Any], tags: Mapping[str, str] = {},
              run_id: Optional[str] = None, nested_in: Optional[str] = None) -> "Tracker":
        """Create a run (child of nested_in or cfg.parent_run_id) or resume `run_id`."""
        store = Store(cfg.uri)
        experiment_id = ensure_store(store, cfg.experiment)
        if run_id is not None:
            tracker, run = cls._existing(cfg, run_id)
            tracker._resume(run)
            tracker.set_tags(tags)
        else:
            client, parent = store.client(), nested_in or cfg.parent_run_id
            run_tags = {**{k: redact(str(v)) for k, v in tags.items()},
                        **({"mlflow.parentRunId": parent} if parent else {})}
            run = client.create_run(experiment_id, tags=run_tags,
                                    run_name=redact(cfg.run_name) if cfg.run_name else None)
            tracker = cls(client, run.info.run_id, cfg, {})
            tracker.parent, tracker.experiment_id = parent, run.info.experiment_id
        tracker._log_params(params, already=run.data.params)
        return tracker

    @classmethod
    def attach(cls, cfg: TrackingConfig, run_id: str) -> "Tracker":
        """An existing run as it is (status, tags and params untouched): to add to it or end it
        from a process that did not start it (a sweep's close, a run whose job is gone)."""
        return cls._existing(cfg, run_id)[0]

    @classmethod
    def reopen(cls, cfg: TrackingConfig, run_id: str) -> "Tracker":
        """An existing run RUNNING again (a sweep's parent when the sweep resumes)."""
        tracker, run = cls._existing(cfg, run_id)
        tracker._resume(run)
        return tracker

    @classmethod
    def _existing(cls, cfg: TrackingConfig, run_id: str):
        store = Store(cfg.uri)
        client = store.client()
        run = _get_run(client, store, run_id)
        tracker = cls(client, run_id, cfg, _last_steps(client, run))
        tracker.parent = run.data.tags.get("mlflow.parentRunId")
        tracker.experiment_id = run.info.experiment_id
        return tracker, run

    def _resume(self, run) -> None:
        """RUNNING again, without the last job's end."""
        if run.info.status != "RUNNING":
            self._client.update_run(self.run_id, status="RUNNING")
        for stale in STALE_ON_RESUME & set(run.data.tags):
            self._client.delete_tag(self.run_id, stale)

    def _log_params(self, params: Mapping[str, Any], already: Mapping[str, str]) -> None:
        log_params(self._client, self.run_id, params, already)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log one epoch (step=epoch) in one log_batch call, skipping keys whose step is already
        stored. Given train_error, avoidable_bias and variance are added (unless given) and the
        "diagnosis" tag is set. The caller applies cfg.log_every (it knows the last epoch).
        epoch -1: the step after every one stored (a resumed sweep's parent, closed again)."""
        if epoch == -1:
            epoch = max(self._last.values(), default=-1) + 1
        derived, label = self._diagnosis(metrics)
        named = {mlflow_key(k): shown(v) for k, v in {**derived, **metrics}.items()}
        fresh = {k: v for k, v in named.items() if epoch > self._last.get(k, -1)}
        if not fresh:  # a resumed job replaying epochs that are already in the store
            return
        ts = int(time.time() * 1000)
        self._pending += [[k, v, ts, epoch] for k, v in fresh.items()]
        self._label = label or self._label
        self._last.update(dict.fromkeys(fresh, epoch))
        if (len(self._pending) >= self.FLUSH_METRICS
                or time.monotonic() - self._flushed >= self.FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Send buffered epochs: a store round trip per epoch would slow short epochs down."""
        self._queue_epochs()
        self.outbox.deliver()

    def _queue_epochs(self) -> None:
        """The buffered epochs into the outbox, ahead of whatever is queued after them."""
        tags = {"diagnosis": self._label} if self._label else {}
        while self._pending or tags:
            batch, self._pending = self._pending[:self.FLUSH_METRICS], self._pending[self.FLUSH_METRICS:]
            self.outbox.add({"op": "metrics", "metrics": batch, "tags": tags})
            tags = {}
        self._label, self._flushed = None, time.monotonic()

    def keep_unsent_in(self, run_dir) -> None:
        """While the store is unreachable, what could not be sent is kept in run_dir/unsent.jsonl."""
        self.outbox.keep_in(run_dir)

    def _diagnosis(self, metrics: Mapping[str, float]) -> tuple[dict[str, float], Optional[str]]:
        train = metrics.get("train_error")
        if train is None or not 0.0 <= train <= 1.0:  # absent, NaN or not a fraction
            return {}, None
        fraction = {k: v for k in ("dev_error", "test_error")
                    if (v := metrics.get(k)) is not None and 0.0 <= v <= 1.0}
        dev, split = held_out(fraction.get("dev_error"), fraction.get("test_error"))
        rise = self._rise.see(metrics.get("train_cost"), metrics.get(f"{split}_cost"))
        cfg = self.cfg
        d = diagnose(train, dev, cfg.bayes_error, cfg.bias_threshold, cfg.variance_threshold,
                     rise, cfg.overfit_threshold)
        variance = {} if math.isnan(d.variance) else {"variance": d.variance, "cost_rise": rise}
        return {"avoidable_bias": d.avoidable_bias, **variance}, d.label

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._queue_epochs()          # in the order they were logged: a tag set now wins
        if tags:
            self.outbox.add({"op": "tags", "tags": {k: redact(str(v)) for k, v in tags.items()}})
        self.outbox.deliver()

    def log_artifact(self, path: str | os.PathLike, artifact_path: Optional[str] = None) -> None:
        self._queue_epochs()
        self.outbox.add({"op": "artifact", "path": os.path.abspath(path), "artifact_path": artifact_path})
        self.outbox.deliver()

    def end(self, status: str = "FINISHED", error: Optional[str] = None, stopped: Optional[str] = None,
            where: str = "The traceback is in the train.log artifact.") -> None:
        """The run's end, whatever ended it (the one place a run is ended): with `error`, its
        failure as tags (ddl.error, ddl.stopped, and the run's description: **STATUS**: error,
        then `where`); then one last try to deliver everything (the backoff does not apply),
        else a report of exactly what did not reach the store and how to replay it."""
        if error is not None:
            self.set_tags({"ddl.error": error[:5000], "ddl.stopped": stopped or status.lower(),
                           "mlflow.note.content": f"**{status}**: {error[:4000]}\n\n{where}".rstrip()})
        self._queue_epochs()
        self.outbox.add({"op": "end", "status": status})
        if not self.outbox.deliver(final=True):
            self.outbox.report_undelivered()

    def current(self) -> tuple[str, Optional[str]]:
        """(the run's status in the store now, the job that has it: its ddl.job tag)."""
        run = self._client.get_run(self.run_id)
        return run.info.status, run.data.tags.get("ddl.job")


def _get_run(client, store: Store, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise TrackingError(f"cannot resume MLflow run {run_id!r} from {store.uri}: {err}") from err


def _last_steps(client, run) -> dict[str, int]:
    """Per metric key, the largest step already logged in `run`."""
    return {
        key: max(m.step for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


def shown(value: float) -> float:
    """A metric as the dashboard shows it: 12 significant digits, so a dev error of 9/40 reads
    0.225 rather than 0.22499999999999998 (far below any difference a run can mean)."""
    return float(f"{float(value):.12g}")


class NullTracker:
    """A run that is not tracked: the Tracker interface, doing nothing. `run_id`: the MLflow run it
    belonged to before (from a checkpoint), kept in its new checkpoints."""

    parent: Optional[str] = None
    experiment_id: Optional[str] = None

    def __init__(self, run_id: Optional[str] = None):
        self.run_id = run_id

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        """Accept any Tracker call and drop it."""

    log_epoch = set_tags = log_artifact = end = flush = keep_unsent_in = _nothing


def open_tracker(cfg: TrackingConfig, params: Mapping[str, Any], tags: Mapping[str, str] = {},
                 run_id: Optional[str] = None, nested_in: Optional[str] = None):
    """A started `Tracker`, or a `NullTracker` when cfg.enabled is false."""
    if not cfg.enabled:
        return NullTracker()
    return Tracker.start(cfg, params, tags, run_id=run_id, nested_in=nested_in)


