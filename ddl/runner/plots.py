"""PNG figures: a run's learning curves and learning-rate schedule, a sweep's bias/variance map and
error-vs-hyperparameter plots (matplotlib, Agg).

matplotlib is imported lazily so that importing ddl never pays for it (or needs a display).
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Optional, Sequence

from ddl.atomic import write_atomic

CURVES = (("cost", "cost"), ("error", "error (fraction)"))


def _figure(figsize: tuple[float, float]):
    """A figure outside pyplot: no window, no global backend switch (a notebook that runs ddl keeps
    its inline plots), closed by the garbage collector like any object."""
    import logging  # noqa: PLC0415

    from matplotlib.figure import Figure

    # a log axis's tick labels ask for mathtext's fonts; where matplotlib's font cache lacks them
    # it falls back to DejaVu Sans (what it draws anyway) with ~20 warnings a figure, foreign to
    # anyone reading ddl's console
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    return Figure(figsize=figsize)


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
    """learning_curves_figure, saved as a PNG."""
    _save(learning_curves_figure(history, title), path)


def learning_curves_figure(history: Sequence[Mapping[str, float]], title: Optional[str] = None):
    """Two panels: cost vs epoch and error vs epoch, each with train and the held-out split (dev,
    or test when the run has no dev split).

    history: one dict per logged epoch, e.g. {"epoch": 3, "train_cost": .., "dev_cost": ..,
    "train_error": .., "dev_error": ..}; missing keys and NaN values are not drawn.
    title: e.g. the diagnosis label, shown after "Learning curves".
    """
    fig = _figure((10, 4))
    axes = fig.subplots(1, 2)
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
    return fig


def schedule_png(lrs: Sequence[float], path: str | os.PathLike, title: str = "Learning rate") -> None:
    """Learning rate α vs epoch (epoch i has lrs[i])."""
    fig = _figure((6, 4))
    ax = fig.subplots()
    ax.plot(range(len(lrs)), [float(v) for v in lrs], marker=".")
    _epoch_axis(ax)
    ax.set_ylabel("learning rate α")
    ax.set_title(title)
    _save(fig, path)


def _save(fig, path) -> None:
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))


def bias_variance_map_png(points: Sequence[tuple], path: str | os.PathLike,
                          bias_threshold: float, variance_threshold: float,
                          title: str = "Bias/variance map") -> None:
    """One labelled point per run: avoidable bias (x) against variance (y), both in %, with the
    thresholds drawn, so the quadrant says the diagnosis (points: (label, bias, variance), or
    (label, mean bias, mean variance, their standard deviations) for a configuration over seeds,
    drawn with its spread as error bars)."""
    fig = _figure((7, 5.5))
    ax = fig.subplots()
    xs, ys = [100 * p[1] for p in points], [100 * p[2] for p in points]
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    reach_x, reach_y = xs, ys                      # what the axes must show
    if points and len(points[0]) == 5:
        xerr, yerr = [100 * p[3] for p in points], [100 * p[4] for p in points]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor="tab:blue", alpha=0.6, capsize=3,
                    zorder=2)
        reach_x = [x + s * e for x, e in zip(xs, xerr) for s in (-1, 1)]
        reach_y = [y + s * e for y, e in zip(ys, yerr) for s in (-1, 1)]
    points = [p[:3] for p in points]
    bx, vy = 100 * bias_threshold, 100 * variance_threshold
    span = (max(xs + [2 * bx]) - min(xs + [0.0]), max(ys + [2 * vy]) - min(ys + [0.0]))
    notes = [ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4 - 11 * rows_down),
                         fontsize=8, in_layout=False)      # the layout is the axes'; labels fit in them
             for label, x, y, rows_down in label_places(points, span)]
    ax.axvline(bx, color="tab:red", ls="--", lw=1)
    ax.axhline(vy, color="tab:red", ls="--", lw=1)
    hi_x, hi_y = max(reach_x + [2 * bx]) * 1.15, max(reach_y + [2 * vy]) * 1.15
    lo_x, lo_y = min(reach_x + [0.0]) - 0.05 * hi_x, min(reach_y + [0.0]) - 0.05 * hi_y
    ax.set_xlim(lo_x, hi_x)
    ax.set_ylim(lo_y, hi_y)
    for x, y, text in ((lo_x, lo_y, "ok"), (hi_x, lo_y, "high bias"), (lo_x, hi_y, "high variance"),
                       (hi_x, hi_y, "high bias + high variance")):
        ax.text(x, y, text, ha="left" if x == lo_x else "right", va="bottom" if y == lo_y else "top",
                color="tab:red", alpha=0.6, fontsize=9)
    ax.set_xlabel("avoidable bias = train error − Bayes error (%)")
    ax.set_ylabel("variance = held-out error − train error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()             # first: the labels are placed inside the axes it leaves
    keep_inside(fig, ax, notes)
    _save(fig, path)


def keep_inside(fig, ax, notes) -> None:
    """Labels that would cross the axes' edge go to their point's other side, and where that does
    not fit either, slide inward until they end at the edge (once the layout is done)."""
    box = ax.get_window_extent()
    points_per_px = 72 / fig.dpi
    for note in notes:
        if _overflow(note, box) > 0:
            _flip(note)
            if _overflow(note, box) > 0:
                _flip(note)        # no better: slide from where it reads best, right of the point
        ext = note.get_window_extent()
        dx = max(0.0, box.x0 - ext.x0) - max(0.0, ext.x1 - box.x1)
        dy = max(0.0, box.y0 - ext.y0) - max(0.0, ext.y1 - box.y1)
        x, y = note.xyann
        note.xyann = (x + dx * points_per_px, y + dy * points_per_px)


def _overflow(note, box) -> float:
    """How far (px) a label crosses the left or right edge of `box`."""
    ext = note.get_window_extent()
    return max(0.0, box.x0 - ext.x0) + max(0.0, ext.x1 - box.x1)


def _flip(note) -> None:
    """A label to the other side of its point: left of it, right-aligned, or back."""
    x, y = note.xyann
    note.xyann = (-x, y)
    note.set_horizontalalignment("left" if note.get_horizontalalignment() == "right" else "right")


def label_places(points: Sequence[tuple[str, float, float]], span: tuple[float, float]
                 ) -> list[tuple[str, float, float, int]]:
    """Where the map's labels go: points at the same place (to 0.01 %) share one label
    ("hidden=[1], hidden=[2]"); a label near one already placed (within a tenth of the x span
    and a twentieth of the y span) moves down a row. (label, x %, y %, rows down)."""
    merged: dict[tuple[float, float], list[str]] = {}
    for label, bias, variance in points:
        merged.setdefault((round(100 * bias, 2), round(100 * variance, 2)), []).append(label)
    placed: list[tuple[float, float, int]] = []
    out = []
    for (x, y), labels in sorted(merged.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        near = [row for px, py, row in placed
                if abs(px - x) < 0.1 * (span[0] or 1) and abs(py - y) < 0.05 * (span[1] or 1)]
        row = max(near) + 1 if near else 0
        placed.append((x, y, row))
        out.append((", ".join(labels), x, y, row))
    return out


def error_vs_param_png(key: str, series: Mapping[str, Sequence[tuple[float, float]]],
                       path: str | os.PathLike, log_x: bool, ylabel: str = "dev error (%)") -> None:
    """Held-out error against one swept hyperparameter, one line per value of the others
    (series: label -> [(value, error fraction)])."""
    fig = _figure((7, 4.5))
    ax = fig.subplots()
    for label, pts in series.items():
        pts = sorted(pts)
        ax.plot([x for x, _ in pts], [100 * e for _, e in pts], marker="o", label=label or None)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel.split(' (')[0]} vs {key}")
    ax.grid(alpha=0.3, which="both")
    if any(series) and len(series) > 1:
        ax.legend(fontsize=8)
    _save(fig, path)


def lr_range_png(lrs: Sequence[float], smoothed: Sequence[float], low: float, high: float,
                 path: str | os.PathLike) -> None:
    """The range test's smoothed loss against the rate (log axis), the suggested range shaded."""
    fig = _figure((7, 4.5))
    ax = fig.subplots()
    ax.plot(lrs, smoothed, color="tab:blue")
    ax.axvspan(low, high, color="tab:green", alpha=0.15, label=f"suggested α: {low:.3g} to {high:.3g}")
    ax.set_xscale("log")
    finite = [v for v in smoothed if v == v and v != float("inf")]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
    ax.set_xlabel("learning rate α (log scale)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("Learning-rate range test")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)

