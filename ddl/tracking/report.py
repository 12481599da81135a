"""`ddl-report`: a best-first table of an experiment's runs with the bias/variance diagnosis.

    ddl-report [--uri URI] [--experiment NAME] [--parent RUN_ID] [--csv FILE] [--markdown FILE]
               [--limit N]

The helpers below take plain run dicts (see `ddl.tracking.fetch_runs`), so they need no server.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from typing import Any, Mapping, Optional, Sequence

from ddl.config import TrackingConfig
from ddl.diagnosis import diagnose

# (row key, table header, source): source is (kind, name) with kind "text" (a param as is),
# "number" (a param as a float) or "metric" (its final value); None for derived columns.
COLUMNS = (
    ("run", "run", None),
    ("optimizer", "optimizer", ("text", "optimizer.name")),
    ("schedule", "schedule", ("text", "schedule.name")),
    ("lr0", "α₀", ("number", "optimizer.lr")),
    ("decay", "decay", ("number", "schedule.decay_rate")),
    ("train_error", "train err", ("metric", "train_error")),
    ("dev_error", "dev err", ("metric", "dev_error")),
    ("avoidable_bias", "avoid. bias", ("metric", "avoidable_bias")),
    ("variance", "variance", ("metric", "variance")),
    ("diagnosis", "diagnosis", None),
    ("status", "status", None),
)
PERCENT = {"train_error", "dev_error", "avoidable_bias", "variance"}


def _number(value: Any) -> Optional[float]:
    """float(value), or None when missing, not a number or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _row(run: Mapping[str, Any]) -> dict[str, Any]:
    params, metrics = run.get("params", {}), run.get("metrics", {})
    row: dict[str, Any] = {"run": run.get("name") or run["run_id"][:8], "run_id": run["run_id"]}
    for key, _, source in COLUMNS:
        if source is not None:
            kind, name = source
            value = metrics.get(name) if kind == "metric" else params.get(name)
            row[key] = value if kind == "text" else _number(value)
    if row["schedule"] in ("constant", "exponential", "sqrt"):
        row["decay"] = None         # decay_rate plays no part in these schedules
    row["diagnosis"] = run.get("tags", {}).get("diagnosis") or _fallback_label(row, params)
    row["status"] = run.get("status", "")
    return row


def _fallback_label(row: Mapping[str, Any], params: Mapping[str, str]) -> Optional[str]:
    """Diagnose from the final errors when the run carries no "diagnosis" tag."""
    train = row["train_error"]
    if train is None or not 0.0 <= train <= 1.0:
        return None
    dev = row["dev_error"] if row["dev_error"] is not None and 0 <= row["dev_error"] <= 1 else None
    knobs = {k: float(params[f"tracking.{k}"]) for k in ("bayes_error", "bias_threshold",
             "variance_threshold") if _number(params.get(f"tracking.{k}")) is not None}
    return diagnose(train, dev, **knobs).label


def _best_first(row: Mapping[str, Any]) -> tuple:
    # Runs with a dev error first (lowest dev error), then train-only runs, then the rest.
    dev, train = row["dev_error"], row["train_error"]
    if dev is not None:
        return (0, dev, train if train is not None else math.inf)
    return (1, train, 0.0) if train is not None else (2, 0.0, 0.0)


def rows_from_runs(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Report rows, best first; sweep parents (tag ddl.sweep=true) are left out."""
    rows = [_row(r) for r in runs if r.get("tags", {}).get("ddl.sweep") != "true"]
    return sorted(rows, key=_best_first)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in PERCENT:
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _grid(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = [header for _, header, _ in COLUMNS]
    return headers, [[_cell(key, row.get(key)) for key, _, _ in COLUMNS] for row in rows]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    headers, cells = _grid(rows)
    widths = [max(len(c) for c in column) for column in zip(headers, *cells)]
    lines = [headers, ["-" * w for w in widths], *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    headers, cells = _grid(rows)
    lines = [headers, ["---"] * len(headers), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV with raw values (errors as fractions), one row per run, plus the run id."""
    out = io.StringIO()
    keys = [key for key, _, _ in COLUMNS] + ["run_id"]
    writer = csv.DictWriter(out, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in keys} for row in rows)
    return out.getvalue()


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ddl-report", description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--experiment", default="ddl", help="experiment name (default: ddl)")
    parser.add_argument("--parent", help="only the children of this sweep parent run id")
    parser.add_argument("--csv", metavar="FILE", help="also write the rows as CSV")
    parser.add_argument("--markdown", metavar="FILE", help="also write a Markdown table")
    parser.add_argument("--limit", type=int, metavar="N", help="show only the N best runs")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ddl import tracking  # the MLflow edge; kept out of the pure helpers above

    args = _parse(argv)
    cfg = TrackingConfig(uri=args.uri, experiment=args.experiment)
    try:
        runs = tracking.fetch_runs(cfg, parent=args.parent)
    except (tracking.TrackingError, ValueError) as err:
        print(f"ddl-report: error: {err}", file=sys.stderr)
        return 2
    rows = rows_from_runs(runs)[: args.limit]
    print(format_table(rows) if rows else f"no runs in experiment {args.experiment!r} at {cfg.uri}")
    for path, render in ((args.csv, to_csv), (args.markdown, to_markdown)):
        if path:
            with open(path, "w", encoding="utf-8", newline="") as handle:
                handle.write(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
