"""The bias/variance diagnosis on the course's own examples (Course 2, week 1)."""
import math

import pytest

from ddl.diagnosis import LABELS, diagnose

TOL = 1e-12


@pytest.mark.parametrize("train, dev, label", [
    (0.01, 0.11, "high variance"),
    (0.15, 0.16, "high bias"),
    (0.15, 0.30, "high bias + high variance"),
    (0.005, 0.01, "ok"),
])
def test_course_examples(train, dev, label):
    d = diagnose(train, dev)
    assert d.label == label
    assert abs(d.avoidable_bias - train) <= TOL  # Bayes error 0 (humans ~0% on cat pictures)
    assert abs(d.variance - (dev - train)) <= TOL


def test_bayes_error_shifts_the_bias():
    # 15% train error is high bias against 0% Bayes error but fine against 14% (blurry images).
    assert diagnose(0.15, 0.16).label == "high bias"
    d = diagnose(0.15, 0.16, bayes_error=0.14)
    assert abs(d.avoidable_bias - 0.01) <= TOL
    assert d.label == "ok"


def test_threshold_is_strict_and_float_rounding_does_not_cross_it():
    assert diagnose(0.05, 0.10).label == "ok"  # bias 0.05 and variance 0.05: equal is not high
    assert diagnose(0.10, 0.15, bayes_error=0.05).label == "ok"  # 0.15 - 0.10 = 0.04999...
    assert diagnose(0.0501, 0.1003).label == "high bias + high variance"
    assert diagnose(0.02, 0.10, variance_threshold=0.1).label == "ok"
    assert diagnose(0.12, 0.13, bias_threshold=0.2).label == "ok"


@pytest.mark.parametrize("dev", [None, math.nan])
def test_no_dev_split_judges_bias_only(dev):
    d = diagnose(0.2, dev)
    assert math.isnan(d.variance)
    assert d.label == "high bias"
    assert diagnose(0.01, dev).label == "ok"


def test_labels_are_the_documented_four():
    seen = {diagnose(t, v).label for t, v in [(0.01, 0.11), (0.15, 0.16), (0.15, 0.3), (0, 0)]}
    assert seen == set(LABELS)


@pytest.mark.parametrize("kwargs, name", [
    ({"train_error": 1.5, "dev_error": 0.1}, "train_error"),
    ({"train_error": 0.1, "dev_error": -0.1}, "dev_error"),
    ({"train_error": math.nan, "dev_error": 0.1}, "train_error"),
    ({"train_error": 0.1, "dev_error": 0.1, "bayes_error": 2.0}, "bayes_error"),
])
def test_errors_must_be_fractions(kwargs, name):
    with pytest.raises(ValueError, match=name):
        diagnose(**kwargs)


def test_variance_is_judged_on_dev_else_test_and_says_which():
    from ddl.diagnosis import describe, held_out

    assert held_out(0.1, 0.3) == (0.1, "dev")
    assert held_out(float("nan"), 0.3) == (0.3, "test") and held_out(None, 0.3) == (0.3, "test")
    assert held_out(None, float("nan")) == (None, "none")
    assert describe("high variance", "test") == "high variance, judged on test: no dev split"
    assert describe("ok", "dev") == "ok"


def test_explain_names_the_split_the_figures_and_the_course_next_step():
    from ddl.diagnosis import explain

    text = explain("high variance", "test", 0.0144, 0.20)
    assert text.startswith("High variance: train error 1.44 %, test error 20.00 %")
    assert "variance 18.56 %" in text and "judged on test (no dev split)" in text
    assert "L2 regularization or dropout" in text
    assert "a bigger network" in explain("high bias", "dev", 0.3, 0.31)
    assert "variance not judged" in explain("ok", "none", 0.01, None)
    assert explain("n/a (regression)", "none", math.nan, None).startswith("No bias/variance")


def test_a_held_out_cost_that_climbs_while_train_cost_falls_is_variance():
    from ddl.diagnosis import CostRise

    # the football data without regularization (the course's "fits the noisy points"): an error
    # gap of 3.3 points, under the 5-point threshold, but the test cost 85 % above its lowest
    assert diagnose(0.0521, 0.085, bayes_error=0.05).label == "ok"
    assert diagnose(0.0521, 0.085, bayes_error=0.05, cost_rise=0.85).label == "high variance"
    assert diagnose(0.0521, 0.085, bayes_error=0.05, cost_rise=0.2).label == "ok"   # strict, like the gaps
    assert diagnose(0.0521, 0.085, cost_rise=0.85, overfit_threshold=1.0).label == "high bias"
    assert diagnose(0.0521, None, cost_rise=0.85).label == "high bias"   # no held-out split: no variance
    rise = CostRise()
    seen = [rise.see(t, h) for t, h in [(0.30, 0.40), (0.20, 0.27), (0.15, 0.30), (0.12, 0.50)]]
    assert seen[:2] == [0.0, 0.0] and abs(seen[2] - (0.30 / 0.27 - 1)) <= TOL
    assert abs(seen[3] - (0.50 / 0.27 - 1)) <= TOL
    assert rise.see(0.25, 0.60) == 0.0       # the train cost rose too: a rate too high, not noise
    assert rise.see(None, 0.1) == 0.0 and rise.see(0.1, math.nan) == 0.0
    history = [{"train_cost": t, "test_cost": h} for t, h in [(0.3, 0.4), (0.2, 0.27), (0.1, 0.5)]]
    assert abs(CostRise.over(history) - (0.5 / 0.27 - 1)) <= TOL
    history = [{**r, "dev_cost": d} for r, d in zip(history, (0.5, 0.4, 0.3))]   # dev, when there is one
    assert CostRise.over(history) == 0.0


def test_explain_says_the_cost_climbed_only_when_it_counted():
    from ddl.diagnosis import explain

    text = explain("high variance", "test", 0.0521, 0.085, 0.05, cost_rise=0.85)
    assert "the test cost is 85 % above its lowest while the train cost kept falling" in text
    assert "above its lowest" not in explain("ok", "test", 0.0616, 0.07, 0.05, cost_rise=0.007)
    assert "above its lowest" not in explain("high variance", "dev", 0.01, 0.2, cost_rise=0.1)
