"""PNG figures for a run: learning curves and the learning-rate schedule (matplotlib, Agg).

matplotlib is imported lazily so that importing ddl never pays for it (or needs a display).
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Optional, Sequence

CURVES = (("cost", "cost"), ("error", "error (fraction)"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window, even where $DISPLAY is set
    import matplotlib.pyplot as plt

    return plt


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 2.5" ticks
    ax.grid(alpha=0.3)


def _series(history: Sequence[Mapping[str, float]], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of `key` where it is a number; epoch defaults to the row index."""
    points = [(row.get("epoch", i), row[key]) for i, row in enumerate(history)
              if row.get(key) is not None and not math.isnan(row[key])]
    return [int(e) for e, _ in points], [float(v) for _, v in points]


def learning_curves_png(history: Sequence[Mapping[str, float]], path: str | os.PathLike,
                        title: Optional[str] = None) -> None:
    """Two panels: cost vs epoch and error vs epoch, each with train and the held-out split (dev,
    or test when the run has no dev split).

    history: one dict per logged epoch, e.g. {"epoch": 3, "train_cost": .., "dev_cost": ..,
    "train_error": .., "dev_error": ..}; missing keys and NaN values are not drawn.
    title: e.g. the diagnosis label, shown after "Learning curves".
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (metric, label) in zip(axes, CURVES):
        held_out = "dev" if _series(history, f"dev_{metric}")[0] else "test"
        for split in ("train", held_out):
            epochs, values = _series(history, f"{split}_{metric}")
            if epochs:
                ax.plot(epochs, values, marker=".", label=split)
        _epoch_axis(ax)
        ax.set_ylabel(label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(f"Learning curves: {title}" if title else "Learning curves")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)


def schedule_png(lrs: Sequence[float], path: str | os.PathLike, title: str = "Learning rate") -> None:
    """Learning rate α vs epoch (epoch i has lrs[i])."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(len(lrs)), [float(v) for v in lrs], marker=".")
    _epoch_axis(ax)
    ax.set_ylabel("learning rate α")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)
