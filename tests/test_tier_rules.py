"""The pure tier rules: ladder validation (every refusal names its argument) and `decide` (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.tiers.ladder import Ladder, LadderDraft, TierDraft, TierState, decide, validate_ladder

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def draft(
    *tiers: tuple[str, str], qualifier: str = "sum(purchase.amount, 365d)", **kw: object
) -> LadderDraft:
    return LadderDraft(
        qualifier,
        [TierDraft(key, key.title(), Decimal(threshold)) for key, threshold in tiers],
        **kw,  # type: ignore[arg-type]
    )


THREE = (("bronze", "0"), ("silver", "100"), ("gold", "500"))


@pytest.mark.parametrize(
    ("given_draft", "message"),
    [
        (draft(("bronze", "0"), ("silver", "100"), ("gold", "100")), r"^tiers\[2\]\.threshold: .*ascend"),
        (draft(("bronze", "0"), ("silver", "100"), ("gold", "50")), r"^tiers\[2\]\.threshold: .*ascend"),
        (
            draft(("bronze", "10"), ("silver", "100")),
            r"^tiers\[0\]\.threshold: the first tier's threshold must be 0",
        ),
        (
            draft(("bronze", "0"), ("bronze", "100")),
            r"^tiers\[1\]\.key: 'bronze' is also the key of tiers\[0\]",
        ),
        (draft(("Gold", "0")), r"^tiers\[0\]\.key: .*\[a-z0-9_\]\{1,32\}"),
        (draft(("a" * 33, "0")), r"^tiers\[0\]\.key: "),
        (draft(), r"^tiers: a ladder needs at least one tier"),
        (draft(*THREE, qualifier="sum(purchase.amount, 365x)"), r"^qualifier: column 22: "),
        (
            draft(*THREE, qualifier="total(purchase.amount)"),
            r"^qualifier: column 1: unknown aggregate 'total'",
        ),
        (draft(*THREE, qualifier="pointsBalance"), r"^qualifier: must be one aggregate operand"),
        (draft(*THREE, qualifier="count(visit) >= 3"), r"^qualifier: must be one aggregate operand"),
        (draft(*THREE, qualifier=""), r"^qualifier: must be one aggregate operand"),
        (draft(*THREE, grace_days=-1), r"^graceDays: must be between 0 and"),
        (draft(*THREE, downgrade="SOMETIMES"), r"^downgrade: 'SOMETIMES' is not one of"),
        (draft(("bronze", "0"), ("silver", "0.00001")), r"^tiers\[1\]\.threshold: at most 4 decimal places"),
    ],
)
def test_a_bad_ladder_is_refused_naming_the_argument(given_draft: LadderDraft, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_ladder(given_draft)


@pytest.mark.parametrize(
    ("multiplier", "ok"), [("0", False), ("-1", False), ("0.5", True), ("100", True), ("100.01", False)]
)
def test_the_earn_multiplier_is_above_zero_and_at_most_100(multiplier: str, ok: bool) -> None:
    given_draft = LadderDraft("count(visit)", [TierDraft("a", "A", Decimal(0), Decimal(multiplier))])
    if ok:
        assert validate_ladder(given_draft).tiers[0].earn_multiplier == Decimal(multiplier)
    else:
        with pytest.raises(InvalidInput, match=r"^tiers\[0\]\.earnMultiplier: "):
            validate_ladder(given_draft)


def test_the_qualifier_is_stored_in_its_normal_form() -> None:
    assert validate_ladder(draft(*THREE, qualifier="SUM( purchase.amount ,365d )")).qualifier == (
        "sum(purchase.amount, 365d)"
    )


def ladder(downgrade: str, grace_days: int) -> Ladder:
    return validate_ladder(draft(*THREE, downgrade=downgrade, grace_days=grace_days))


values = st.fractions(min_value=0, max_value=1000)
policies = st.sampled_from(["NEVER", "ONE_DOWN", "RECALCULATE"])


@given(policies, st.integers(0, 30), st.lists(st.tuples(values, st.integers(0, 40 * 86_400)), max_size=12))
def test_decide_never_stays_below_the_reached_tier_and_never_leaves_grace_running_above_it(
    policy: str, grace_days: int, steps: list[tuple[Fraction, int]]
) -> None:
    """Whatever the measures: the held tier is at least the reached one; a grace runs only while
    below; NEVER never goes down; an upgrade is to the reached tier at once."""
    rules = ladder(policy, grace_days)
    state = None
    now = T0
    for value, seconds in steps:
        now += timedelta(seconds=seconds)
        before = state
        state = decide(rules, before, value, now)
        reach = rules.reach(value)
        assert state.tier >= reach
        assert (state.kept_until is not None) == (state.tier > reach and policy != "NEVER")
        if state.kept_until is not None:
            assert state.kept_until > now
        if before is not None and reach > before.tier:
            assert state.tier == reach
            assert state.since == now
        if policy == "NEVER" and before is not None:
            assert state.tier >= before.tier
        assert state.highest >= state.tier


def test_one_down_catches_up_grace_by_grace() -> None:
    # given a gold member in a 10-day grace that ended 15 days ago
    rules = ladder("ONE_DOWN", 10)
    state = TierState(2, T0, T0 + 10 * DAY, 2)
    # when measured at 0 at T0 + 25 d
    after = decide(rules, state, Fraction(0), T0 + 25 * DAY)
    # then one step at T0 + 10 d, a second grace ended at T0 + 20 d: bronze
    assert (after.tier, after.kept_until) == (0, None)
    # and at T0 + 15 d only the first step was taken, the second grace running to T0 + 20 d
    mid = decide(rules, state, Fraction(0), T0 + 15 * DAY)
    assert (mid.tier, mid.kept_until) == (1, T0 + 20 * DAY)
