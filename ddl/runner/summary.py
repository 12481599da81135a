"""The end of a run: final train/dev/test metrics with the course's diagnosis, `summary.json`,
`final.npz` (course keys), and the MLflow artifacts (config, plots, final parameters)."""
from __future__ import annotations

import json
import logging
import math
import sys
import threading
from pathlib import Path

from ddl import checkpoint as ckpt
from ddl.config import Config
from ddl.diagnosis import CostRise, Diagnosis, describe, diagnose, explain, held_out
from ddl.train.evaluate import evaluate_split
from ddl.atomic import write_text_atomic
from ddl.train.nonfinite import DivergedError
from ddl.runner.hooks import resolve
from ddl.runner.logs import error_paragraph, keep_traceback
from ddl.runner.session import dashboard_hint
from ddl.train import Setup, TrainState

log = logging.getLogger("ddl")


def finish(cfg: Config, setup: Setup, state: TrainState, ds, run_dir: Path, run_id, seconds,
           memory: dict) -> dict:
    """Final metrics on train/dev/test (all ranks), then rank 0 saves final.npz and summary.json.

    run_id: a function giving the MLflow run's id (a tracking worker's run, which may still be
    opening: the plots are drawn meanwhile, on a thread, and a failure there is raised after
    final.npz and summary.json are safe)."""
    errors = final_errors(setup, state, ds)
    rise = CostRise.over(state.history)
    d, judged_on = safe_diagnose(cfg.tracking, *(errors[k]["error"] for k in ("train", "dev", "test")),
                                 cost_rise=rise)
    summary = {
        **errors, "avoidable_bias": d.avoidable_bias, "variance": d.variance, "cost_rise": rise,
        "diagnosis": d.label, "diagnosis_split": judged_on, "epochs_run": state.epoch, "stopped": state.stopped or "completed",
        "diverged": state.diverged, "best_epoch": state.best["epoch"] if state.best else None,
        "skipped_steps": state.skipped_steps, "world_size": setup.comm.size,
        "backend": setup.backend.name, "dtype": cfg.train.dtype,
        "samples_per_s": mean_rate(state.history), "train_seconds": seconds,
        "network": list(setup.spec.sizes), "run_dir": str(run_dir), "mlflow_run_id": None, **memory,
    }
    summary["description"] = run_description(cfg, summary)
    if setup.comm.rank == 0:
        plotting = Background(write_plots, cfg, summary, state.history, run_dir)
        try:
            summary["mlflow_run_id"] = resolve(run_id)
            save_final(setup, state, ds, run_dir, summary)
        except BaseException:
            plotting.join(quiet=True)
            raise
        plotting.join()
        log.info("done: train acc %s, dev acc %s, test acc %s (%s); run directory %s",
                 *(pct(errors[k]["accuracy"]) for k in ("train", "dev", "test")),
                 describe(d.label, judged_on), run_dir)
    return summary


def final_errors(setup: Setup, state: TrainState, ds) -> dict:
    """{"train"|"dev"|"test": {"cost", "accuracy", "error"}} of the final parameters (all ranks:
    the evaluations are collective); train and dev from the epoch record that evaluated them."""
    last = final_record(state)
    if last is not None:   # the last epoch record already evaluated these very parameters
        found = {"train": (last["train_cost"], last["train_error"]), "dev": (last["dev_cost"], last["dev_error"])}
    else:
        found = {split: evaluate_split(setup, state, getattr(ds, split)) for split in ("train", "dev")}
    found["test"] = evaluate_split(setup, state, ds.test)
    return {k: {"cost": cost, "accuracy": 1 - err, "error": err} for k, (cost, err) in found.items()}


def save_final(setup: Setup, state: TrainState, ds, run_dir: Path, summary: dict) -> None:
    """final.npz (course keys, without the optimizer state) and summary.json, each whole or absent."""
    arrays = ckpt.state_arrays(state, setup.backend, ds.normalizer)
    arrays = {k: v for k, v in arrays.items() if not k.startswith(("opt/", "best/"))}
    ckpt.save_npz(run_dir / "final.npz", arrays,
                  {"spec": setup.spec.to_dict(), "class_names": ds.class_names,
                   "run_id": summary["mlflow_run_id"], "epoch": state.epoch, "history": state.history,
                   "input_divisor": getattr(ds, "input_divisor", 1.0)})
    write_text_atomic(run_dir / "summary.json", json.dumps(clean(summary), indent=2) + "\n")


ARTIFACTS = ("config.yaml", "summary.json", "final.npz", "learning_curves.png", "lr_schedule.png")


def track_final(tracker, cfg: Config, summary: dict, state, run_dir: Path) -> None:
    """Final metrics, the diagnosis (tags and the run's description), the artifacts (config,
    plots, final parameters, train.log last); the dashboard hint once (a sweep's at its end)."""
    final = {"test_cost": summary["test"]["cost"], "test_error": summary["test"]["error"]}
    tracker.log_epoch(max(state.epoch - 1, 0), {k: v for k, v in final.items() if not math.isnan(v)})
    tracker.set_tags({"diagnosis": summary["diagnosis"], "diagnosis.split": summary["diagnosis_split"],
                      "ddl.stopped": summary["stopped"], "ddl.diverged": str(summary["diverged"]).lower(),
                      "mlflow.note.content": summary["description"]})
    for name in ARTIFACTS:
        if (run_dir / name).exists():
            tracker.log_artifact(str(run_dir / name))
    t = cfg.tracking
    if tracker.parent is None and tracker.experiment_id is not None:     # a recorded single run
        log.info("MLflow run %s in experiment %r at %s\n%s", tracker.run_id, t.experiment, t.uri,
                 dashboard_hint(t, tracker.experiment_id))
    upload_log(tracker, run_dir)
    # a search's pruned trial: stopped on purpose before its end, neither broken nor complete
    tracker.end("KILLED" if summary["stopped"] == "pruned" else "FINISHED")


def run_description(cfg: Config, summary: dict) -> str:
    """The run's description in the dashboard: the diagnosis in a sentence, with the next step."""
    split = summary["diagnosis_split"]
    held = summary[split]["error"] if split in ("dev", "test") else None
    t = cfg.tracking
    return explain(summary["diagnosis"], split, summary["train"]["error"], held, t.bayes_error,
                   summary["cost_rise"], t.overfit_threshold)


def upload_log(tracker, run_dir: Path) -> None:
    """train.log as an artifact (flushed first: the file handler buffers nothing, the OS might)."""
    path = run_dir / "train.log"
    if path.is_file():
        tracker.log_artifact(str(path))


class StallEnding:
    """How a stall ends rank 0's job (train.on_stall=abort): a thread waits for the run
    communicator's StalledError (`comm.stalled()`; ddl/parallel/watchdog.py holds the stalled
    collective meanwhile, so the state is the one before the step that stalled), writes that
    state's checkpoint, ends the run FAILED, prints the one paragraph and ends the job. The parts
    are given as the run builds them (`watching`, `arm`); the watch of a run that ends, however it
    ends, is stopped here too (`unwatch`)."""

    def __init__(self, comm, run_dir: Path):
        self.comm, self.run_dir = comm, run_dir
        self.run_comm = self.state = self.write = self.tracker = None

    def watching(self, run_comm) -> None:
        self.run_comm = run_comm

    def arm(self, state, write, tracker) -> None:
        self.state, self.write, self.tracker = state, write, tracker
        if self.run_comm is not None and self.run_comm.watch is not None and self.comm.rank == 0:
            threading.Thread(target=self.catch, name="ddl-stall-ending", daemon=True).start()

    def unwatch(self) -> None:
        """Local, however the run ends: its stall watch stops (and `catch` with it)."""
        if self.run_comm is not None:
            self.run_comm.unwatch()

    def catch(self) -> None:
        err = self.run_comm.stalled()
        if err is None:                 # the run ended without a stall that ends it
            return
        try:
            self.write(self.state, "stall")
        except Exception as write_err:  # noqa: BLE001 - the job ends all the same
            log.error("could not write the stalled job's checkpoint: %s", write_err)
        track_failure(self.tracker, self.comm, err, self.run_dir)
        print(error_paragraph(err, self.comm, self.run_dir), file=sys.stderr, flush=True)
        self.run_comm.abort(1)


def track_failure(tracker, comm, err: BaseException, run_dir: Path) -> None:
    """End a failed run: the traceback kept in train.log and uploaded, the error as tags
    (`ddl.error`, the text in the run's description), status FAILED (KILLED for Ctrl-C). Tracking
    errors here are logged, never raised over the error that got us here."""
    status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
    try:
        keep_traceback(run_dir, comm, err)
        if isinstance(err, DivergedError):
            tracker.set_tags({"ddl.diverged": "true"})
        upload_log(tracker, run_dir)
        tracker.end(status, f"{type(err).__name__}: {err}")
    except Exception as tracking_err:  # noqa: BLE001
        log.warning("could not record the failure in MLflow: %s", tracking_err)


class Background:
    """`fn(*args)` on a thread; `join()` waits for it and raises what it raised."""

    def __init__(self, fn, *args):
        self._error = None

        def run():
            try:
                fn(*args)
            except BaseException as err:  # noqa: BLE001 - handed to join()
                self._error = err
        self._thread = threading.Thread(target=run, name="ddl-plots", daemon=True)
        self._thread.start()

    def join(self, quiet: bool = False) -> None:
        """quiet: wait only (an error is already on its way up)."""
        self._thread.join()
        if self._error is not None and not quiet:
            raise self._error


def write_plots(cfg: Config, summary: dict, history: list, run_dir: Path) -> None:
    """The learning curves (train and the held-out split) and the schedule, tracked or not."""
    from ddl.runner import plots  # noqa: PLC0415 - matplotlib at the end only

    title = describe(summary["diagnosis"], summary["diagnosis_split"])
    plots.learning_curves_png(history, run_dir / "learning_curves.png", title=title)
    plots.schedule_png([r["lr"] for r in history], run_dir / "lr_schedule.png",
                       f"{cfg.schedule.name} schedule, lr0={cfg.optimizer.lr}")


def safe_diagnose(t, train_err: float, dev_err: float, test_err: float = math.nan,
                  cost_rise: float = 0.0):
    """(the course's bias/variance diagnosis, the split variance was judged on: dev, else test);
    not defined for regression (no error rate)."""
    if math.isnan(train_err):
        return Diagnosis(math.nan, math.nan, "n/a (regression)"), "none"
    error, split = held_out(dev_err, test_err)
    return diagnose(train_err, error, t.bayes_error, t.bias_threshold, t.variance_threshold,
                    cost_rise, t.overfit_threshold), split


def current_rss_mb() -> float:
    """Resident memory of this process now (MiB)."""
    import psutil  # noqa: PLC0415

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; ru_maxrss is in KiB on Linux)."""
    import resource  # noqa: PLC0415

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def final_record(state: TrainState):
    """The history record that evaluated the final parameters (the best epoch's when early
    stopping restored it, else the last epoch's), or None when no record did."""
    if not state.history:
        return None
    if state.best is not None and state.stopped != "signal":
        return next((r for r in state.history if r["epoch"] == state.best["epoch"]), None)
    last = state.history[-1]
    return last if last["epoch"] == state.epoch - 1 else None


def mean_rate(history) -> float:
    rates = [r["samples_per_s"] for r in history if not math.isnan(r["samples_per_s"])]
    return sum(rates) / len(rates) if rates else math.nan


def pct(x) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.2f}%"


def clean(o):
    """NaN -> None so summary.json is strict JSON."""
    if isinstance(o, dict):
        return {k: clean(v) for k, v in o.items()}
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
