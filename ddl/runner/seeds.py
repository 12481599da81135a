"""Seeds as a dimension of a sweep: its finished points grouped by configuration (every parameter
but the seed), each configuration's errors, avoidable bias and variance as mean ± std over its
seeds, the best configuration the one with the lowest mean held-out error. One seed can move a
moons result by several points; a configuration's diagnosis is only as good as its spread.

    ddl-train -m optimizer.lr=0.01,0.1 train.seed=0,1,2      # 2 configurations x 3 seeds

Runs are plain dicts as `ddl.tracking.fetch_runs` returns them (a sweep in this process builds them
from its summaries). Nothing here needs a store.
"""
from __future__ import annotations

import statistics
from typing import Any, Mapping, Optional, Sequence

from ddl.diagnosis import diagnose, knobs_from
from ddl.runner.names import distinct_names, tokens
from ddl.tracking.keys import read_metric

SEED_KEYS = ("train.seed", "model.init_seed")
NOT_A_SETTING = ("tracking.", "out_dir", "checkpoint.", "hydra.", "search.")
FIGURES = ("train_error", "held_out", "avoidable_bias", "variance")
HEADERS = ("configuration", "seeds", "train err", "held-out err", "avoid. bias", "variance", "diagnosis")


def configurations(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sweep's configurations, best mean first, when its points differ in a seed and some
    configuration has more than one finished seed; [] otherwise (nothing to aggregate). Each:
    {"label", "seeds", "runs" (their run ids), "mean": {figure: value}, "std": {figure: value},
    "diagnosis", "split"} with figures train_error, held_out (dev, else test), avoidable_bias and
    variance; std is the sample standard deviation (0 for a single seed)."""
    finished = [r for r in runs if r.get("status") == "FINISHED"]
    if len({_seed(r) for r in finished}) < 2:
        return []
    groups: dict[tuple, list] = {}
    for run in finished:
        groups.setdefault(_setting(run), []).append(run)
    if max(len(g) for g in groups.values()) < 2:
        return []
    labels = distinct_names([_without_seed(g[0].get("name") or "") or "(all)" for g in groups.values()])
    out = [_summarize(label, group) for label, group in zip(labels, groups.values())]
    return sorted(out, key=lambda c: (c["mean"]["held_out"] is None, c["mean"]["held_out"] or 0.0))


def _seed(run) -> tuple:
    return tuple(run.get("params", {}).get(k) for k in SEED_KEYS)


def _setting(run) -> tuple:
    params = run.get("params", {})
    return tuple(sorted((k, v) for k, v in params.items()
                        if k not in SEED_KEYS and not k.startswith(NOT_A_SETTING)))


def _without_seed(name: str) -> str:
    short = {k.rsplit(".", 1)[-1] for k in SEED_KEYS}
    return " ".join(t for t in tokens(name) if t.split("=", 1)[0].rsplit(".", 1)[-1] not in short)


def _summarize(label: str, group: list) -> dict[str, Any]:
    metrics = [r.get("metrics", {}) for r in group]
    split = "dev" if all(read_metric(m, "dev_error") is not None for m in metrics) else "test"
    values = {f: [v for v in (_figure(m, f, split) for m in metrics) if v is not None] for f in FIGURES}
    mean = {f: statistics.fmean(v) if v else None for f, v in values.items()}
    std = {f: statistics.stdev(v) if len(v) > 1 else 0.0 if v else None for f, v in values.items()}
    knobs = knobs_from(group[0].get("params", {}))
    rises = [v for v in (read_metric(m, "cost_rise") for m in metrics) if v is not None]
    rise = statistics.fmean(rises) if rises else 0.0     # the held-out cost's climb, on average
    label_of = (diagnose(mean["train_error"], mean["held_out"], cost_rise=rise, **knobs).label
                if mean["train_error"] is not None else None)
    return {"label": label, "seeds": len(group), "runs": [r["run_id"] for r in group], "mean": mean,
            "std": std, "diagnosis": label_of, "split": split}


def _figure(metrics, figure: str, split: str) -> Optional[float]:
    return read_metric(metrics, f"{split}_error" if figure == "held_out" else figure)


def spread(mean: Optional[float], std: Optional[float]) -> str:
    """'12.30% ± 1.20%' ('-' when there is no value)."""
    return "-" if mean is None else f"{100 * mean:.2f}% ± {100 * (std or 0.0):.2f}%"


def _grid(configs: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(headers, a row of cells per configuration): what both renderings show."""
    split = configs[0]["split"] if configs else "dev"
    cells = [[c["label"], str(c["seeds"]), *(spread(c["mean"][f], c["std"][f]) for f in FIGURES),
              c["diagnosis"] or "-"] for c in configs]
    return [h.replace("held-out", split) for h in HEADERS], cells


def table(configs: Sequence[Mapping[str, Any]]) -> str:
    """The configurations as a plain-text table, best mean first."""
    headers, cells = _grid(configs)
    widths = [max(len(x) for x in column) for column in zip(headers, *cells)]
    lines = [headers, ["-" * w for w in widths], *cells]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def markdown(configs: Sequence[Mapping[str, Any]]) -> str:
    headers, cells = _grid(configs)
    lines = [headers, ["---"] * len(headers), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def best_line(configs: Sequence[Mapping[str, Any]]) -> str:
    """'best (on the mean): adam lr=0.01 (dev err 12.30% ± 1.20% over 3 seeds, high variance)'."""
    best = configs[0]
    return (f"best (on the mean): {best['label']} ({best['split']} err "
            f"{spread(best['mean']['held_out'], best['std']['held_out'])} over {best['seeds']} seeds, "
            f"{best['diagnosis']})")


def map_points(configs: Sequence[Mapping[str, Any]]) -> list[tuple[str, float, float, float, float]]:
    """The bias/variance map's points, one per configuration: (label, mean avoidable bias, mean
    variance, their standard deviations)."""
    return [(c["label"], c["mean"]["avoidable_bias"], c["mean"]["variance"], c["std"]["avoidable_bias"],
             c["std"]["variance"]) for c in configs
            if c["mean"]["avoidable_bias"] is not None and c["mean"]["variance"] is not None]
