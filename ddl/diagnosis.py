"""The course's bias/variance diagnosis (Course 2, week 1: "Basic recipe for machine learning").

    avoidable bias = train error - Bayes error      (human-level error as a proxy for Bayes)
    variance       = dev error   - train error

A gap strictly greater than its threshold is "high". Errors are fractions in [0, 1].

The error gap is not the only sign of variance the course teaches: a held-out cost that climbs
while the train cost keeps falling is the network fitting the training set's noise (the
curves of "Early stopping", and of the regularization assignment's football data, where the
unregularized network's test cost doubles while its error gap stays at 3 points: 200 test
examples resolve an error only to about 2 points). So variance is also "high" when the held-out
cost has risen more than `overfit_threshold` (a fraction, 0.2: 20 %) above its lowest while the
train cost fell (`cost_rise`, measured by `CostRise` over the run's evaluations).
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
    cost_rise: float = 0.0,
    overfit_threshold: float = 0.2,
) -> Diagnosis:
    """Diagnose from train/dev error; dev_error None or NaN (no dev split) judges bias only.
    cost_rise: how far the held-out cost now stands above its lowest, while the train cost fell
    (a fraction; `CostRise`); above overfit_threshold it is high variance whatever the gap.

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
    overfit = not math.isnan(variance) and cost_rise > overfit_threshold + _EPS
    high_variance = overfit or (not math.isnan(variance) and variance > variance_threshold + _EPS)
    return Diagnosis(bias, variance, _label(high_bias, high_variance))


class CostRise:
    """How far the held-out cost stands above its lowest so far while the train cost fell since
    that lowest point, as a fraction (0.85: 85 % above); 0 when the held-out cost is at its lowest,
    or when the train cost rose too (a rate too high, not the network fitting noise).

    >>> r = CostRise(); [round(r.see(t, h), 2) for t, h in [(0.3, 0.4), (0.2, 0.3), (0.1, 0.45)]]
    [0.0, 0.0, 0.5]
    """

    def __init__(self):
        self.lowest = math.inf          # the held-out cost's lowest so far
        self.train_then = math.inf      # the train cost at that evaluation

    def see(self, train_cost: Optional[float], held_cost: Optional[float]) -> float:
        if _missing(train_cost) or _missing(held_cost) or not math.isfinite(held_cost):
            return 0.0
        if held_cost <= self.lowest:
            self.lowest, self.train_then = held_cost, train_cost
            return 0.0
        if train_cost >= self.train_then or self.lowest <= 0:
            return 0.0
        return held_cost / self.lowest - 1.0

    @classmethod
    def over(cls, history) -> float:
        """The rise at the end of a run's history (epoch records: train_cost and dev_cost, else
        test_cost)."""
        rise, watch = 0.0, cls()
        for r in history:
            held = r.get("dev_cost") if not _missing(r.get("dev_cost")) else r.get("test_cost")
            rise = watch.see(r.get("train_cost"), held)
        return rise


KNOBS = ("bayes_error", "bias_threshold", "variance_threshold", "overfit_threshold")


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
            bayes_error: float = 0.0, cost_rise: float = 0.0, overfit_threshold: float = 0.2) -> str:
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
        if "variance" in label and cost_rise > overfit_threshold:
            figures += (f"; the {split} cost is {100 * cost_rise:.0f} % above its lowest while the "
                        "train cost kept falling: the network fits the training set's noise")
    return f"{label[0].upper()}{label[1:]}: {figures}. Next step: {NEXT_STEPS[label]}."


def _label(high_bias: bool, high_variance: bool) -> str:
    if high_bias and high_variance:
        return "high bias + high variance"
    if high_bias:
        return "high bias"
    if high_variance:
        return "high variance"
    return "ok"
