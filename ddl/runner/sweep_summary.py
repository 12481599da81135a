"""A sweep's answer: its table best-first, the parent run's rollups (best held-out error, its child,
points finished and failed) and artifacts (bias/variance map, error vs each swept numeric
hyperparameter, the table as markdown).

Runs are plain dicts as `ddl.tracking.fetch_runs` returns them; a sweep that ran in this process
builds them from its summaries (`point_run`), so the console table needs no store.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ddl.atomic import write_text_atomic
from ddl.runner.names import distinct_names
from ddl.tracking.keys import SWEEP_KEYS
from ddl.runner import seeds
from ddl.runner.report import format_table, rows_from_runs, status_of, to_markdown

log = logging.getLogger("ddl")

# params that differ between points without being a hyperparameter of the sweep
NOT_SWEPT = seeds.NOT_A_SETTING
LOG_SCALE = ("lr", "learning_rate", "l2", "epsilon")
ARTIFACTS = ("bias_variance_map.png", "sweep_table.md", "seeds_table.md")
BEST_TAG = "sweep.best"     # the parent's answer in the dashboard: the best point and its error


def point_run(index: int, name: str, params: Mapping[str, str], summary: Optional[dict]) -> dict:
    """A sweep point as a run dict, from its summary (None: the point failed)."""
    metrics, tags = {}, {}
    if summary:
        for split in ("train", "dev", "test"):
            metrics[f"{split}_error"] = summary[split]["error"]
        metrics.update(avoidable_bias=summary["avoidable_bias"], variance=summary["variance"])
        tags = {"diagnosis": summary["diagnosis"], "diagnosis.split": summary["diagnosis_split"]}
    run_id = (summary or {}).get("mlflow_run_id") or f"point-{index}"
    status = "FAILED" if not summary else "PRUNED" if summary.get("stopped") == "pruned" else "FINISHED"
    return {"run_id": run_id,
            "name": name, "status": status, "params": dict(params),
            "metrics": {k: v for k, v in metrics.items() if _number(v) is not None}, "tags": tags}


def _number(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def held_out_error(row: Mapping[str, Any]) -> Optional[float]:
    return row["dev_error"] if row["dev_error"] is not None else row["test_error"]


def rollups(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], Optional[Mapping]]:
    """(the parent's sweep/… metrics, the best row): best = lowest held-out error of a finished
    point (rows are best first)."""
    finished = [r for r in rows if r["status"] == "FINISHED"]
    pruned = sum(r["status"] == "PRUNED" for r in rows)      # a search's: stopped early on purpose
    best = next((r for r in finished if held_out_error(r) is not None), None)
    metrics = {SWEEP_KEYS["points"]: float(len(rows)), SWEEP_KEYS["finished"]: float(len(finished)),
               SWEEP_KEYS["failed"]: float(len(rows) - len(finished) - pruned)}
    if pruned:
        metrics[SWEEP_KEYS["pruned"]] = float(pruned)
    if best is not None:
        metrics[SWEEP_KEYS["best_held_out_error"]] = held_out_error(best)
        for key in ("train_error", "dev_error", "test_error", "avoidable_bias", "variance"):
            if best[key] is not None:      # the parent's row in the runs table shows the best point
                metrics[key] = best[key]
    return metrics, best


def seed_rollups(config: Mapping[str, Any]) -> dict[str, float]:
    """The parent's figures from its best configuration: the means under the runs' names (so a
    collapsed sweep shows them), the held-out error's mean and standard deviation under sweep/…."""
    mean, std = config["mean"], config["std"]
    out = {SWEEP_KEYS["best_held_out_error"]: mean["held_out"], SWEEP_KEYS["best_held_out_std"]: std["held_out"],
           "train_error": mean["train_error"], f"{config['split']}_error": mean["held_out"],
           "avoidable_bias": mean["avoidable_bias"], "variance": mean["variance"]}
    return {k: v for k, v in out.items() if v is not None}


def swept_numeric(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Params that take more than one numeric value across the runs: the swept numeric keys."""
    keys = sorted({k for r in runs for k in r.get("params", {})
                   if not k.startswith(NOT_SWEPT) and k not in seeds.SEED_KEYS})   # error vs a seed says nothing
    found = []
    for key in keys:
        values = [_number(r["params"].get(key)) for r in runs]
        if all(v is not None for v in values) and len(set(values)) > 1:
            found.append(key)
    return found


def error_series(runs, rows, key: str) -> dict[str, list[tuple[float, float]]]:
    """label -> [(value of `key`, held-out error)], one label per combination of the other
    differences between the points (their short names without `key`)."""
    by_id = {r["run_id"]: r for r in runs}
    short = dict(zip((r["run_id"] for r in rows), distinct_names([r["run"] for r in rows])))
    last = key.rsplit(".", 1)[-1]
    series: dict[str, list] = {}
    for row in rows:
        error = held_out_error(row)
        if error is None or row["run_id"] not in by_id:
            continue
        label = " ".join(t for t in short[row["run_id"]].split() if not t.startswith(f"{last}="))
        series.setdefault(label, []).append((float(by_id[row["run_id"]]["params"][key]), error))
    return series


def write_artifacts(runs, rows, out_dir: Path, bias_threshold: float,
                    variance_threshold: float) -> list[Path]:
    """The sweep's table (markdown), its bias/variance map and error-vs-hyperparameter plots."""
    from ddl.runner import plots  # noqa: PLC0415 - matplotlib at the end only

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "sweep_table.md"]
    write_text_atomic(written[0], to_markdown(rows))
    configs = seeds.configurations(runs)
    if configs:                     # one point per configuration, with its spread over the seeds
        written.append(out_dir / "seeds_table.md")
        write_text_atomic(written[-1], seeds.markdown(configs))
        points, what = seeds.map_points(configs), "configurations ± std over seeds"
    else:
        names = distinct_names([r["run"] for r in rows])
        points = [(n, r["avoidable_bias"], r["variance"]) for n, r in zip(names, rows)
                  if r["avoidable_bias"] is not None and r["variance"] is not None]
        what = "points"
    if points:
        split = "test" if any((r["diagnosis"] or "").endswith("(test)") for r in rows) else "dev"
        plots.bias_variance_map_png(points, out_dir / "bias_variance_map.png", bias_threshold,
                                    variance_threshold, f"Bias/variance map ({len(points)} {what}, "
                                                        f"variance on {split})")
        written.append(out_dir / "bias_variance_map.png")
    for key in swept_numeric(runs):
        series = error_series(runs, rows, key)
        values = [x for pts in series.values() for x, _ in pts]
        if not values:
            continue
        log_x = key.rsplit(".", 1)[-1] in LOG_SCALE and min(values) > 0
        path = out_dir / f"error_vs_{key.replace('.', '_')}.png"
        plots.error_vs_param_png(key, series, path, log_x)
        written.append(path)
    return written


def thresholds(runs) -> tuple[float, float]:
    """The bias and variance thresholds the points were diagnosed with (the defaults otherwise)."""
    params = runs[0].get("params", {}) if runs else {}
    return (_number(params.get("tracking.bias_threshold")) or 0.05,
            _number(params.get("tracking.variance_threshold")) or 0.05)


def console_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The sweep's table best-first (as `ddl-report --parent` prints it) and its best point."""
    rows = rows_from_runs(runs)
    _, best = rollups(rows)
    table = format_table(rows)
    configs = seeds.configurations(runs)
    if configs:                     # seeds: the best configuration is chosen on the mean
        return (f"{table}\nby configuration, mean ± std over its seeds, best first:\n"
                f"{seeds.table(configs)}\n{seeds.best_line(configs)}")
    answer = best_answer(rows, best, ())
    if answer is None:
        return table + "\nno point finished with a held-out error"
    return f"{table}\nbest: {answer[0]} ({answer[1]}, {answer[2]})"


def sweep_status(points: int, failed: int, stored: Sequence[str], expected: Optional[int]) -> str:
    """FAILED if a point failed; KILLED if one was stopped (Ctrl-C, a signal) or fewer than
    `expected` ran; FINISHED only when every point finished; FAILED when none ran."""
    if failed or "FAILED" in stored:
        return "FAILED"
    if "KILLED" in stored or (expected and points < expected):
        return "KILLED"
    done = points and all(s in ("FINISHED", "PRUNED") for s in stored) and "FINISHED" in stored
    return "FINISHED" if done else "FAILED"


def close_sweep(tracker, out_dir: Path, runs: list, stored: Sequence[str], expected: Optional[int] = None) -> str:
    """End a sweep's parent run (its `tracker`) with its rollups, tags and artifacts, its status by
    `sweep_status`; returns the status. `runs`: its points as run dicts (failed ones too, even those
    that never reached the store); `stored`: the statuses its children have in the store."""
    rows = rows_from_runs(runs)
    metrics, best = rollups(rows)
    configs = seeds.configurations(runs)
    if configs:                     # seeds: the parent answers with the best configuration's means
        metrics.update(seed_rollups(configs[0]))
    tracker.log_epoch(-1, metrics)          # a step of its own each time it is closed (a resumed sweep)
    tracker.set_tags(parent_tags(rows, metrics, best, configs))
    try:
        for path in write_artifacts(runs, rows, out_dir, *thresholds(runs)):
            tracker.log_artifact(path)
    except Exception as err:  # noqa: BLE001 - a plot must not leave the parent RUNNING
        log.warning("sweep artifacts not written: %s: %s", type(err).__name__, err)
    status = sweep_status(metrics[SWEEP_KEYS["points"]], metrics[SWEEP_KEYS["failed"]], stored, expected)
    tracker.end(status)
    return status


def parent_tags(rows, metrics: Mapping[str, float], best: Optional[Mapping],
                configs: Sequence[Mapping]) -> dict[str, str]:
    """The parent's tags: the best point (with seeds, the best configuration on the mean) by name and
    held-out error as BEST_TAG, e.g. 'decay_rate=0.1 (dev err 20.00%)' (the dashboard's column beside
    the diagnosis), its diagnosis, and a description saying so in a sentence or two."""
    tags = {"ddl.sweep.points": str(int(metrics[SWEEP_KEYS["points"]]))}
    if best is not None:
        tags.update({"ddl.sweep.best_run_id": best["run_id"], "ddl.sweep.best_run": best["run"],
                     "diagnosis": f"best point: {best['diagnosis']}"})
    if configs:
        top = configs[0]
        tags.update({"ddl.sweep.best_config": top["label"], "ddl.sweep.configs": str(len(configs)),
                     "ddl.sweep.seeds": str(top["seeds"]), "diagnosis": f"best configuration: {top['diagnosis']}"})
    answer = best_answer(rows, best, configs)
    if answer:
        tags[BEST_TAG] = f"{answer[0]} ({answer[1]})"
    tags["mlflow.note.content"] = description(metrics, answer, bool(configs))
    return tags


def best_answer(rows, best: Optional[Mapping], configs: Sequence[Mapping]) -> Optional[tuple[str, str, str]]:
    """(name, held-out error, diagnosis) of the best point as the sweep's table names it, or of the
    best configuration when there are seeds; None when no point finished with a held-out error."""
    if configs:
        top = configs[0]
        error = seeds.spread(top["mean"]["held_out"], top["std"]["held_out"])
        return top["label"], f"{top['split']} err {error} over {top['seeds']} seeds", top["diagnosis"]
    if best is None:
        return None
    name = dict(zip((r["run_id"] for r in rows), distinct_names([r["run"] for r in rows])))
    split = "dev" if best["dev_error"] is not None else "test"
    return name[best["run_id"]], f"{split} err {100 * held_out_error(best):.2f}%", best["diagnosis"]


def description(metrics: Mapping[str, float], answer: Optional[tuple[str, str, str]], by_seeds: bool) -> str:
    """The parent's description: 'A sweep of 2 points, all finished. Best: **decay_rate=0.1** (dev
    err 20.00%), high bias.' and which artifacts hold the rest. answer: (name, error, diagnosis)."""
    points, finished = int(metrics[SWEEP_KEYS["points"]]), int(metrics[SWEEP_KEYS["finished"]])
    others = [f"{int(metrics[SWEEP_KEYS[k]])} {k}" for k in ("failed", "pruned") if metrics.get(SWEEP_KEYS[k])]
    counts = f"A sweep of {points} point{'s' * (points != 1)}" + (
        ", all finished" if finished == points else ": " + ", ".join([f"{finished} finished", *others]))
    if answer is None:
        return f"{counts}. No point finished with a held-out error: its `sweep_table.md` artifact lists them."
    tables = "`sweep_table.md` and `seeds_table.md` rank" if by_seeds else "`sweep_table.md` ranks"
    return (f"{counts}. Best{' on the mean' * by_seeds}: **{answer[0]}** ({answer[1]}), {answer[2]}.\n\n"
            f"The rest is in the run's artifacts: `bias_variance_map.png` places every point by avoidable "
            f"bias and variance, {tables} them best first.")


def close_stored_sweep(tracking_cfg, parent: str, out_dir: Path) -> tuple[str, str]:
    """End a sweep's parent whose points ran in other processes (a launcher's jobs, a SLURM
    array) from what the store holds of them; (status, experiment id)."""
    from ddl import tracking  # noqa: PLC0415

    stored = tracking.fetch_runs(tracking_cfg, parent=parent)
    tracker = tracking.Tracker.attach(tracking_cfg, parent)
    return close_sweep(tracker, out_dir, stored, [status_of(r) for r in stored]), tracker.experiment_id
