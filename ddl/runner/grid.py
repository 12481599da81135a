"""Sweep helpers for job arrays and log-scale grids (no Hydra: SLURM array tasks call this).

    python -m ddl.sweep logspace optimizer.lr 1e-4 1e-1 4   # optimizer.lr=0.0001,0.001,0.01,0.1
    python -m ddl.sweep count optimizer=gd,adam schedule.decay_rate=0,1        # 4
    python -m ddl.sweep point 3 optimizer=gd,adam schedule.decay_rate=0,1
        # -> optimizer=adam schedule.decay_rate=1
    python -m ddl.sweep parent --name my-sweep      # create the MLflow parent run, print its id
    python -m ddl.sweep end RUN_ID                  # close it with its rollups (FAILED if a child failed)

The grid syntax is Hydra's basic sweep: `key=v1,v2,...`; commas inside [...] stay in one value,
and points are ordered as Hydra orders them (the last key varies fastest).
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

from ddl.config import TrackingConfig


def split_values(text: str) -> list[str]:
    """'a,[1,2],b' -> ['a', '[1,2]', 'b']."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[(" and 1 or (-1 if ch in "])" else 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def expand(grid: list[str]) -> list[list[str]]:
    """Every point of a grid, as override lists: ['a=1,2', 'b=x'] -> [['a=1','b=x'], ['a=2','b=x']]."""
    axes = []
    for item in grid:
        if "=" not in item:
            raise ValueError(f"sweep item {item!r} is not of the form key=v1,v2,...")
        key, values = item.split("=", 1)
        axes.append([f"{key}={v}" for v in split_values(values)])
    return [list(p) for p in itertools.product(*axes)]


def logspace(lo: float, hi: float, n: int) -> list[float]:
    """n values from lo to hi evenly spaced in log10 (the course samples alpha on a log scale),
    rounded to 3 significant digits."""
    if not (0 < lo < hi) or n < 2:
        raise ValueError(f"logspace needs 0 < lo < hi and n >= 2, got {lo}, {hi}, {n}")
    a, b = math.log10(lo), math.log10(hi)
    return [float(f"{10 ** (a + (b - a) * i / (n - 1)):.3g}") for i in range(n)]


def _tracking_cfg(args):
    return TrackingConfig(uri=args.uri, experiment=args.experiment)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ddl.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("count")
    c.add_argument("grid", nargs="+")
    pt = sub.add_parser("point")
    pt.add_argument("index", type=int)
    pt.add_argument("grid", nargs="+")
    ls = sub.add_parser("logspace")
    ls.add_argument("key")
    ls.add_argument("lo", type=float)
    ls.add_argument("hi", type=float)
    ls.add_argument("n", type=int)
    for name in ("parent", "end"):
        s = sub.add_parser(name)
        if name == "end":
            s.add_argument("run_id")
        else:
            s.add_argument("--name", required=True)
        s.add_argument("--uri", default=None)
        s.add_argument("--experiment", default="ddl")
    args = p.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        print(f"ddl.sweep: error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    if args.cmd == "count":
        print(len(expand(args.grid)))
    elif args.cmd == "point":
        points = expand(args.grid)
        if not 0 <= args.index < len(points):
            raise ValueError(f"point {args.index} is outside the grid's {len(points)} points")
        print(" ".join(points[args.index]))
    elif args.cmd == "logspace":
        print(f"{args.key}=" + ",".join(f"{v:g}" for v in logspace(args.lo, args.hi, args.n)))
    elif args.cmd == "parent":
        from ddl import tracking  # noqa: PLC0415

        print(tracking.start_parent(_tracking_cfg(args), args.name, {"sweep": args.name},
                                    {"ddl.sweep_name": args.name}))
    else:
        import tempfile  # noqa: PLC0415

        from ddl.runner.session import dashboard_hint  # noqa: PLC0415
        from ddl.runner.sweep_summary import close_stored_sweep  # noqa: PLC0415

        cfg = _tracking_cfg(args)

        with tempfile.TemporaryDirectory(prefix="ddl-sweep-") as out:   # artifacts are uploaded
            status, experiment_id = close_stored_sweep(cfg, args.run_id, Path(out))
        print(f"{args.run_id}: {status}\n{dashboard_hint(cfg, experiment_id)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
