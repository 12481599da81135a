"""Parameter initialization (course 2, week 1) as host float64 arrays keyed by layout(spec) names.

Weights are drawn layer by layer (W1, W2, ...) from np.random.default_rng(seed), so one seed always
gives the same network; biases and beta start at 0, gamma at 1. `stream="course"` draws them from
NumPy's legacy global-state generator instead, as the assignments do (np.random.seed(s), then
np.random.randn per layer), so the course's own seeds give the course's own starting weights. The trainer moves the result to
the backend in its dtype (`Flat.from_numpy`).
"""
from __future__ import annotations

import math

import numpy as np

from .model import Spec, bn_state_layout, layout

METHODS = ("zeros", "random", "he", "xavier")
STREAMS = ("default", "course")


def _weight_std(method: str, n_prev: int, scale: float) -> float:
    """Standard deviation of W[l] entries: scale for "random", sqrt(2/n_{l-1}) for He,
    sqrt(1/n_{l-1}) for Xavier (the course's variant), 0 for "zeros"."""
    return {
        "zeros": 0.0,
        "random": scale,
        "he": math.sqrt(2.0 / n_prev),
        "xavier": math.sqrt(1.0 / n_prev),
    }[method]


def init_params(spec: Spec, method: str = "he", seed: int = 0, scale: float = 0.01,
                stream: str = "default") -> dict:
    """name -> np.ndarray (float64) for every name of layout(spec)."""
    if method not in METHODS:
        raise ValueError(f"unknown init method {method!r}; choose one of {list(METHODS)}")
    if stream not in STREAMS:
        raise ValueError(f"unknown init stream {stream!r}; choose one of {list(STREAMS)}")
    rng = np.random.default_rng(seed) if stream == "default" else np.random.RandomState(seed)
    params = {}
    for name, shape in layout(spec).entries:
        if name.startswith("W"):
            std = _weight_std(method, shape[1], scale)
            params[name] = rng.standard_normal(shape) * std if std else np.zeros(shape)
        elif name.startswith("gamma"):
            params[name] = np.ones(shape)
        else:                                               # b{l}, beta{l}
            params[name] = np.zeros(shape)
    return params


def init_bn_state(spec: Spec) -> dict:
    """Initial running statistics for bn_state_layout(spec): mean 0, var 1 (float64, host)."""
    return {
        name: (np.zeros if name.startswith("mean") else np.ones)(shape)
        for name, shape in bn_state_layout(spec).entries
    }
