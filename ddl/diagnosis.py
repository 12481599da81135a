"""The course's bias/variance diagnosis (Course 2, week 1: "Basic recipe for machine learning").

    avoidable bias = train error - Bayes error      (human-level error as a proxy for Bayes)
    variance       = dev error   - train error

A gap strictly greater than its threshold is "high". Errors are fractions in [0, 1].
Variance is judged on the dev split; a run without one is judged on its test split instead (the
course's cat classifier, 98.6 % train and 80 % test, is its own example of high variance), and
every place that shows the diagnosis says which split it was (`held_out`).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

LABELS = ("ok", "high bias", "high variance", "high bias + high variance")
# A gap equal to its threshold up to float rounding (0.15 - 0.10 = 0.04999...) is not "high".
_EPS = 1e-12


class Diagnosis(NamedTuple):
    avoidable_bias: float
    variance: float
    label: str


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")


def _missing(value: Optional[float]) -> bool:
    return value is None or math.isnan(value)


def diagnose(
    train_error: float,
    dev_error: Optional[float],
    bayes_error: float = 0.0,
    bias_threshold: float = 0.05,
    variance_threshold: float = 0.05,
) -> Diagnosis:
    """Diagnose from train/dev error; dev_error None or NaN (no dev split) judges bias only.

    >>> diagnose(0.01, 0.11).label
    'high variance'
    """
    _check_fraction("train_error", train_error)
    _check_fraction("bayes_error", bayes_error)
    bias = train_error - bayes_error
    if _missing(dev_error):
        variance = math.nan
    else:
        _check_fraction("dev_error", dev_error)
        variance = dev_error - train_error
    high_bias = bias > bias_threshold + _EPS
    high_variance = not math.isnan(variance) and variance > variance_threshold + _EPS
    return Diagnosis(bias, variance, _label(high_bias, high_variance))


KNOBS = ("bayes_error", "bias_threshold", "variance_threshold")


def knobs_from(params) -> dict:
    """The diagnosis settings a run was recorded with ({'bayes_error': 0.02, ...}, from its
    `tracking.*` params; those missing or not numbers left out, so diagnose's defaults hold)."""
    out = {}
    for k in KNOBS:
        try:
            value = float(params.get(f"tracking.{k}"))
        except (TypeError, ValueError):
            continue
        if not math.isnan(value):
            out[k] = value
    return out


def held_out(dev_error: Optional[float], test_error: Optional[float]) -> tuple[Optional[float], str]:
    """(the error variance is judged on, its split): dev when there is one, else test, else
    (None, "none")."""
    if not _missing(dev_error):
        return dev_error, "dev"
    if not _missing(test_error):
        return test_error, "test"
    return None, "none"


def describe(label: str, split: str) -> str:
    """The label with the split it was judged on, e.g. 'high variance, judged on test: no dev
    split'."""
    if split == "test":
        return f"{label}, judged on test: no dev split"
    if split == "none":
        return f"{label}, train only: no dev or test split"
    return label


# The course's "basic recipe" (Course 2, week 1), what to try next for each diagnosis.
NEXT_STEPS = {
    "ok": "nothing the recipe asks for: the gaps are within their thresholds",
    "high bias": "a bigger network, training longer, or a better optimizer (Adam, momentum)",
    "high variance": "more data, L2 regularization or dropout, or early stopping",
    "high bias + high variance": "first the bias (a bigger network, training longer, a better "
                                 "optimizer), then the variance (more data, L2 or dropout)",
}


def explain(label: str, split: str, train_error: float, held_error: Optional[float],
            bayes_error: float = 0.0) -> str:
    """The diagnosis in a sentence or two, with the course's next step and the split it was
    judged on, e.g. for a run's description in the dashboard."""
    if label not in NEXT_STEPS:           # regression, or no diagnosis at all
        return f"No bias/variance diagnosis: {label}."
    held = {"dev": "dev", "test": "test (no dev split)"}.get(split)
    bias = f"avoidable bias {100 * (train_error - bayes_error):.2f} %"
    if held is None or held_error is None:
        figures = f"train error {100 * train_error:.2f} %, {bias}; variance not judged (no dev or test split)"
    else:
        figures = (f"train error {100 * train_error:.2f} %, {split} error {100 * held_error:.2f} % "
                   f"({bias}, variance {100 * (held_error - train_error):.2f} %), judged on {held}")
    return f"{label[0].upper()}{label[1:]}: {figures}. Next step: {NEXT_STEPS[label]}."


def _label(high_bias: bool, high_variance: bool) -> str:
    if high_bias and high_variance:
        return "high bias + high variance"
    if high_bias:
        return "high bias"
    if high_variance:
        return "high variance"
    return "ok"
