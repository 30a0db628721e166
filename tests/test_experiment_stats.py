"""The experiment statistics and the assignment: exact values, edge cases, weights respected (no I/O)."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from domain.experiments.assignment import HOLDOUT, arm_of, assign, draw
from domain.experiments.stats import Z_95, compare, normal_cdf, rate


def test_a_hand_checked_example_45_of_100_against_30_of_100() -> None:
    # pooled p = 75/200 = 0.375; SE² = 0.375·0.625·(2/100) = 0.0046875; z² = 0.15²/0.0046875 = 4.8 exactly
    # p = 2·(1 - Φ(√4.8)) = 0.028460; Wald SE² = (0.45·0.55 + 0.30·0.70)/100 = 0.004575
    c = compare((45, 100), (30, 100))
    assert c.uplift == pytest.approx(0.15)
    assert c.z == pytest.approx(math.sqrt(4.8)) == pytest.approx(2.190890, abs=1e-6)
    assert c.p_value == pytest.approx(0.028460, abs=1e-6)
    assert c.ci_low == pytest.approx(0.15 - Z_95 * math.sqrt(0.004575)) == pytest.approx(0.017430, abs=1e-6)
    assert c.ci_high == pytest.approx(0.282570, abs=1e-6)


def test_the_normal_distribution_function_at_known_quantiles() -> None:
    assert normal_cdf(0) == 0.5
    assert normal_cdf(Z_95) == pytest.approx(0.975, abs=1e-12)
    assert normal_cdf(1.0) == pytest.approx(0.8413447460685429, abs=1e-12)
    assert normal_cdf(-2.0) == pytest.approx(0.022750131948179195, abs=1e-12)


@pytest.mark.parametrize(
    ("variant", "control"),
    [((45, 100), (30, 100)), ((120, 1000), (100, 1000)), ((3, 17), (9, 20)), ((510, 5000), (480, 5100))],
)
def test_matches_scipy_on_fixed_data(variant: tuple[int, int], control: tuple[int, int]) -> None:
    stats = pytest.importorskip("scipy.stats")
    (x1, n1), (x2, n2) = variant, control
    p1, p2, pooled = x1 / n1, x2 / n2, (x1 + x2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    half = stats.norm.ppf(0.975) * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    c = compare(variant, control)
    assert c.z == pytest.approx(z, rel=1e-12)
    assert c.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert c.ci_low == pytest.approx(p1 - p2 - half, rel=1e-9)
    assert c.ci_high == pytest.approx(p1 - p2 + half, rel=1e-9)


def test_undefined_figures_are_none_never_an_error() -> None:
    assert rate(0, 0) is None
    empty = compare((0, 0), (5, 10))
    assert (empty.uplift, empty.ci_low, empty.ci_high, empty.z, empty.p_value) == (None,) * 5
    assert compare((5, 10), (0, 0)).uplift is None
    nothing = compare((0, 10), (0, 12))  # both rates 0: no spread at all
    assert (nothing.uplift, nothing.ci_low, nothing.ci_high, nothing.p_value) == (0.0, None, None, None)
    everything = compare((8, 8), (5, 5))
    assert (everything.uplift, everything.ci_low, everything.p_value) == (0.0, None, None)
    # 1 against 0: each arm has no spread (Wald undefined) but the pooled test is defined
    split = compare((10, 10), (0, 10))
    assert (split.uplift, split.ci_low, split.ci_high) == (1.0, None, None)
    assert split.z == pytest.approx(math.sqrt(20))
    assert split.p_value == pytest.approx(7.744216e-06, rel=1e-6)


def test_assignment_is_deterministic_and_in_range() -> None:
    assert draw("exp", "cust-1") == draw("exp", "cust-1")
    assert draw("exp", "cust-1") != draw("exp2", "cust-1")
    assert all(0 <= draw("exp", f"m{i}") < 1 for i in range(200))
    weights = [("a", 1), ("b", 1)]
    assert assign("exp", "cust-1", 10, weights) == assign("exp", "cust-1", 10, weights)


def test_the_cut_points_follow_the_holdout_and_the_weights() -> None:
    weights = [("a", 1), ("b", 3)]
    assert arm_of(0.0, 20, weights) == HOLDOUT
    assert arm_of(0.199, 20, weights) == HOLDOUT
    assert arm_of(0.2, 20, weights) == "a"
    assert arm_of(0.399, 20, weights) == "a"  # a holds [0.2, 0.4): a quarter of the other 80 %
    assert arm_of(0.4, 20, weights) == "b"
    assert arm_of(0.999999, 20, weights) == "b"
    assert arm_of(0.5, 0, [("only", 5)]) == "only"


def test_weights_and_holdout_are_respected_over_many_members() -> None:
    # given 20 % holdout and variants weighted 50/30/20, over 1,000 members
    weights = [("a", 50), ("b", 30), ("c", 20)]
    counts = Counter(assign("spring-offer", f"member-{i:04d}", 20, weights) for i in range(1000))
    # then each share is within 5 points of its target: 20 %, 40 %, 24 %, 16 %
    expected = {HOLDOUT: 200, "a": 400, "b": 240, "c": 160}
    assert set(counts) == set(expected)
    for arm, n in expected.items():
        assert abs(counts[arm] - n) <= 50, (arm, counts)
