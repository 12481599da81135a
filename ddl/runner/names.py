"""Run names made of Hydra overrides, short enough to tell runs apart in a table or the dashboard.
Pure text: used by the runner (naming a run when it starts) and by the report."""
from __future__ import annotations

from typing import Sequence


def distinct_names(names: Sequence[str]) -> list[str]:
    """Names made of overrides (separated by spaces or commas), without the overrides they all share, keys
    shortened to their last part and group choices to their value: ["optimizer=adam,
    optimizer.lr=0.01", "optimizer=gd,optimizer.lr=0.1"] -> ["adam lr=0.01", "gd lr=0.1"]. Names left
    equal or empty stay as they were."""
    if len(names) < 2:
        return list(names)
    split = [tokens(n) for n in names]
    common = set.intersection(*(set(t) for t in split))
    short = [" ".join(compact(t) for t in ts if t not in common) for ts in split]
    return short if all(short) and len(set(short)) == len(set(names)) else list(names)


def tokens(name: str) -> list[str]:
    """Overrides of a run name, split at spaces and at commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in name:
        depth += 1 if ch in "[(" else -1 if ch in "])" else 0
        if (ch == "," and depth == 0) or ch.isspace():
            out, cur = out + [cur] if cur else out, ""
        else:
            cur += ch
    return out + [cur] if cur else out


# conf/'s config groups: `optimizer=adam` names the choice, and `adam` says it
GROUPS = ("checkpoint", "data", "experiment", "model", "optimizer", "schedule", "tracking", "train")


def compact(token: str) -> str:
    """'optimizer=adam' (a config group's choice) -> 'adam'; 'optimizer.lr=0.01' -> 'lr=0.01';
    a compact token stays as it is ('lr=0.01')."""
    key, eq, value = token.partition("=")
    if not eq:
        return token
    key = key.lstrip("+~")
    return value if key in GROUPS else f"{key.rsplit('.', 1)[-1]}={short_number(value)}"


def short_number(value: str) -> str:
    """A search sweeper's float to 4 significant digits ('0.07257005721594278' -> '0.07257');
    anything else as it is (the full value stays in the run's ddl.overrides tag)."""
    try:
        number = float(value)
    except ValueError:
        return value
    digits = value.lstrip("-").replace(".", "").lstrip("0")
    return f"{number:.4g}" if "." in value and "e" not in value.lower() and len(digits) > 6 else value
