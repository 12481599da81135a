"""`ddl-report`: a best-first table of an experiment's runs with the bias/variance diagnosis.

    ddl-report [--uri URI] [--experiment NAME] [--parent RUN_ID] [--csv FILE] [--markdown FILE]
               [--limit N] [--wide] [--group-by data]

The table fits 120 columns (long run names are shortened in the middle); --wide shows every
column in full. Runs with a dev split rank by dev error; runs without one by test error (their
diagnosis is judged on test, marked "(test)").

The helpers below take plain run dicts (see `ddl.tracking.fetch_runs`), so they need no server.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from typing import Any, Mapping, Optional, Sequence

from ddl.atomic import write_text_atomic

from ddl.config import TrackingConfig
from ddl.diagnosis import diagnose, held_out, knobs_from
from ddl.runner import seeds
from ddl.runner.names import distinct_names, tokens
from ddl.tracking.keys import read_metric

# (row key, table header, source): source is (kind, name) with kind "text" (a param as is),
# "number" (a param as a float) or "metric" (its final value, by its record name: see
# ddl.tracking.keys); None for derived columns.
COLUMNS = (
    ("run", "run", None),
    ("data", "data", ("text", "data.name")),
    ("network", "hidden", ("text", "model.hidden")),
    ("optimizer", "optimizer", ("text", "optimizer.name")),
    ("schedule", "schedule", ("text", "schedule.name")),
    ("lr0", "α₀", ("number", "optimizer.lr")),
    ("decay", "decay", ("number", "schedule.decay_rate")),
    ("train_error", "train err", ("metric", "train_error")),
    ("dev_error", "dev err", ("metric", "dev_error")),
    ("test_error", "test err", ("metric", "test_error")),
    ("best", "best (epoch)", None),      # the lowest held-out error and after how many epochs
    ("avoidable_bias", "avoid. bias", ("metric", "avoidable_bias")),
    ("variance", "variance", ("metric", "variance")),
    ("diagnosis", "diagnosis", None),
    ("status", "status", None),
)
WIDTH = 120      # the default table's budget in characters
SETTINGS = {"data", "network", "optimizer", "schedule", "lr0", "decay", "status"}  # may move up
PERCENT = {"train_error", "dev_error", "test_error", "avoidable_bias", "variance"}


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
            if kind == "metric":
                row[key] = read_metric(metrics, name)
            else:
                row[key] = params.get(name) if kind == "text" else _number(params.get(name))
    row["best"] = best_held_out(metrics)
    if row["schedule"] in ("constant", "exponential", "sqrt"):
        row["decay"] = None         # decay_rate plays no part in these schedules
    tags = run.get("tags", {})
    split = tags.get("diagnosis.split") or ("test" if row["dev_error"] is None
                                            and row["test_error"] is not None else "dev")
    label = tags.get("diagnosis") or _fallback_label(row, params)
    row["diagnosis"] = f"{label} (test)" if label and split == "test" else label
    row["status"] = status_of(run)
    return row


def status_of(run: Mapping[str, Any]) -> str:
    """The run's status, a search's pruned trial (KILLED in MLflow, tag ddl.stopped=pruned) as PRUNED."""
    pruned = run.get("status") == "KILLED" and run.get("tags", {}).get("ddl.stopped") == "pruned"
    return "PRUNED" if pruned else run.get("status", "")


def best_held_out(metrics: Mapping[str, Any]) -> Optional[str]:
    """'12.50% (8)': the run's best held-out error and after how many epochs (None: not logged)."""
    for split in ("dev", "test"):
        error, epoch = read_metric(metrics, f"{split}_best_error"), read_metric(metrics, f"{split}_best_epoch")
        if error is not None and epoch is not None:
            return f"{100 * error:.2f}% ({int(epoch)})"
    return None


def _fallback_label(row: Mapping[str, Any], params: Mapping[str, str]) -> Optional[str]:
    """Diagnose from the final errors when the run carries no "diagnosis" tag."""
    train = row["train_error"]
    if train is None or not 0.0 <= train <= 1.0:
        return None
    dev, _ = held_out(*(row[k] if row[k] is not None and 0 <= row[k] <= 1 else None
                        for k in ("dev_error", "test_error")))
    return diagnose(train, dev, **knobs_from(params)).label


def _best_first(row: Mapping[str, Any]) -> tuple:
    # Runs with a held-out error first (dev, else test; lowest first), then train-only runs,
    # then the rest.
    held = row["dev_error"] if row["dev_error"] is not None else row["test_error"]
    train = row["train_error"]
    if held is not None:
        return (0, held, train if train is not None else math.inf)
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


def _grid(rows: Sequence[Mapping[str, Any]], columns=COLUMNS) -> tuple[list[str], list[list[str]]]:
    headers = [header for _, header, _ in columns]
    return headers, [[_cell(key, row.get(key)) for key, _, _ in columns] for row in rows]


def _shorten(text: str, width: int) -> str:
    """`text` in `width` characters, its middle replaced by '…' (both ends tell runs apart)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def format_table(rows: Sequence[Mapping[str, Any]], wide: bool = False, width: int = WIDTH) -> str:
    """A plain-text table, columns padded to their widest cell. Not wide: at most `width`
    characters a line. To get there: columns that hold nothing are left out, run names keep
    only the overrides that tell them apart, settings equal in every row move to a line above
    the table, the best-epoch column gives way (--wide and the CSV keep it), run names lose
    what the settings columns beside them show ('adam lr=0.01' with columns adam and 0.01: '-'),
    and last they are shortened in the middle."""
    if wide:
        return _render(*_grid(rows), None)
    columns = tuple(c for c in COLUMNS if c[0] == "run" or any(r.get(c[0]) is not None for r in rows))
    rows = [dict(r, run=n) for r, n in zip(rows, distinct_names([r["run"] for r in rows]))]
    headers, cells = _grid(rows, columns)
    keys, shared = [c[0] for c in columns], ""
    if _width(headers, cells) > width and len(rows) > 1:
        same = [i for i, k in enumerate(keys) if k in SETTINGS and len({line[i] for line in cells}) == 1]
        shared = "all runs: " + ", ".join(f"{headers[i]} {cells[0][i]}" for i in same) if same else ""
        keep = [i for i in range(len(keys)) if i not in same]
        keys, headers = [keys[i] for i in keep], [headers[i] for i in keep]
        cells = [[line[i] for i in keep] for line in cells]
    if _width(headers, cells) > width and "best" in keys:    # the first to give way
        i = keys.index("best")
        keys, headers = keys[:i] + keys[i + 1:], headers[:i] + headers[i + 1:]
        cells = [line[:i] + line[i + 1:] for line in cells]
    if _width(headers, cells) > width:     # names say no more than the settings columns beside them
        shown = [i for i, k in enumerate(keys) if k in SETTINGS and k != "status"]
        cells = [[_beyond(line[0], {line[i] for i in shown}), *line[1:]] for line in cells]
        if all(line[0] == "-" for line in cells):      # the columns say it all: no run column
            keys, headers, cells = keys[1:], headers[1:], [line[1:] for line in cells]
            return _render(headers, cells, shared)
    over = _width(headers, cells) - width
    if over > 0:
        run_width = max(len(headers[0]), max(len(line[0]) for line in cells) - over, 12)
        cells = [[_shorten(line[0], run_width), *line[1:]] for line in cells]
    return _render(headers, cells, shared)


def _beyond(name: str, shown: set) -> str:
    """The overrides of a run name whose values no settings cell of its row shows ('-': none)."""
    kept = [t for t in tokens(name) if (t.partition("=")[2] or t) not in shown]
    return " ".join(kept) or "-"


def _width(headers, cells) -> int:
    widths = [max(len(c) for c in column) for column in zip(headers, *cells)]
    return sum(widths) + 2 * (len(widths) - 1)


def _render(headers, cells, preamble) -> str:
    widths = [max(len(c) for c in column) for column in zip(headers, *cells)]
    lines = [headers, ["-" * w for w in widths], *cells]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    return f"{preamble}\n{text}" if preamble else text


def grouped(rows: Sequence[Mapping[str, Any]], key: str = "data") -> dict[str, list]:
    """Rows by `key` (e.g. the dataset), each group still best first."""
    out: dict[str, list] = {}
    for row in rows:
        out.setdefault(str(row.get(key) or "-"), []).append(row)
    return out


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
    parser.add_argument("--wide", action="store_true",
                        help=f"every column, run names in full (default: fit {WIDTH} columns)")
    parser.add_argument("--group-by", choices=["data"], help="one table per dataset")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ddl import tracking  # the MLflow edge; kept out of the pure helpers above

    args = _parse(argv)
    cfg = TrackingConfig(uri=args.uri, experiment=args.experiment)
    try:
        runs = tracking.fetch_runs(cfg, parent=args.parent)
        if any(r["status"] == "RUNNING" for r in runs):    # one whose job vanished is ended first
            from ddl.tracking.liveness import end_stale

            if end_stale(cfg):
                runs = tracking.fetch_runs(cfg, parent=args.parent)
    except (tracking.TrackingError, ValueError) as err:
        print(f"ddl-report: error: {err}", file=sys.stderr)
        return 2
    rows = rows_from_runs(runs)[: args.limit]
    if not rows:
        print(f"no runs in experiment {args.experiment!r} at {cfg.uri}")
    elif args.group_by:
        for name, group in grouped(rows, args.group_by).items():
            print(f"\n{args.group_by} {name}: {len(group)} run(s), best first")
            print(format_table(group, args.wide))
    else:
        print(format_table(rows, args.wide))
        configs = seeds.configurations(runs)
        if configs:
            print(f"\nby configuration, mean ± std over its seeds, best first:\n{seeds.table(configs)}\n"
                  f"{seeds.best_line(configs)}")
    for path, render in ((args.csv, to_csv), (args.markdown, to_markdown)):
        if path:
            write_text_atomic(path, render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
