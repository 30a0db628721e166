"""RFM, ABC and lifecycle (DESIGN.md, Segments → Built-in definitions) against the real database.

`score_population` below is the plain-Python reading of the definitions; the
property test holds `refresh_scores` to it on generated populations. Members and
daily purchase buckets are inserted directly, not through the API.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from api.runtime import Services
from domain.enums import LifecycleStage, MemberKind
from domain.errors import InvalidInput
from domain.models import EventAggregate, Member
from domain.segments.lifecycle import LifecycleThresholds, lifecycle_stage
from domain.segments.scores import RFM_LABELS, abc_class, refresh_scores

LIFECYCLE_DEFAULTS = LifecycleThresholds()

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)


# --- the oracle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseStats:
    """One member's accepted purchases: the last one, how many, and their amount in scaled units."""

    external_id: str
    last_at: datetime
    count: int
    amount_units: int


@dataclass(frozen=True)
class Scores:
    r: int
    f: int
    m: int
    label: str
    abc: str


def score_population(rows: Sequence[PurchaseStats], now: datetime) -> dict[str, Scores]:
    """RFM and ABC of every purchaser, read plainly off DESIGN.md."""

    def byte_order(row: PurchaseStats) -> bytes:
        return row.external_id.encode()

    r = _ntile_scores(sorted(rows, key=lambda row: ((now - row.last_at) // DAY, byte_order(row))))
    f = _ntile_scores(sorted(rows, key=lambda row: (-row.count, byte_order(row))))
    by_monetary = sorted(rows, key=lambda row: (-row.amount_units, byte_order(row)))
    m = _ntile_scores(by_monetary)
    total = sum(row.amount_units for row in rows)
    abc: dict[str, str] = {}
    before = 0
    for row in by_monetary:
        abc[row.external_id] = abc_class(before, total)
        before += row.amount_units
    return {
        row.external_id: Scores(
            r[row.external_id],
            f[row.external_id],
            m[row.external_id],
            RFM_LABELS[r[row.external_id], f[row.external_id]],
            abc[row.external_id],
        )
        for row in rows
    }


def _ntile_scores(ordered: Sequence[PurchaseStats]) -> dict[str, int]:
    """6 - ntile(5) over the given order: the first len % 5 tiles hold one row more."""
    base, extra = divmod(len(ordered), 5)
    scores: dict[str, int] = {}
    start = 0
    for tile in range(1, 6):
        size = base + (1 if tile <= extra else 0)
        for row in ordered[start : start + size]:
            scores[row.external_id] = 6 - tile
        start += size
    return scores


# --- seeding and reading back ----------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One day's accepted events of one type for one member."""

    last_at: datetime
    count: int
    amount_units: int
    event_type: str = "purchase"


async def fresh_program(services: Services) -> int:
    program = await services.programs.create_program(f"scores-{uuid.uuid4().hex[:12]}", "Scores", "B2C")
    return program.id


async def seed(
    services: Services,
    program_id: int,
    members: Mapping[str, Sequence[Bucket]],
    stale: Scores | None = None,
) -> None:
    """Insert members (with `stale` scores already on them, if given) and their daily buckets."""
    if not members:
        return
    at = NOW - 1000 * DAY
    stale_columns: dict[str, Any] = {}
    if stale:
        stale_columns = {"rfm_r": stale.r, "rfm_f": stale.f, "rfm_m": stale.m}
        stale_columns |= {"rfm_label": stale.label, "abc_class": stale.abc}
    rows = [
        {"program_id": program_id, "external_id": external_id, "kind": MemberKind.CUSTOMER.value}
        | {"joined_at": at, "created_at": at, "updated_at": at, "attributes": {}, "channels": []}
        | stale_columns
        for external_id in members
    ]
    async with services.db.unit_of_work() as uow:
        inserted = await uow.session.execute(insert(Member).returning(Member.id, Member.external_id), rows)
        ids = {external_id: member_id for member_id, external_id in inserted}
        buckets = [
            _bucket_row(program_id, ids[external_id], bucket)
            for external_id, member_buckets in members.items()
            for bucket in member_buckets
        ]
        if buckets:
            await uow.session.execute(insert(EventAggregate), buckets)


def _bucket_row(program_id: int, member_id: int, bucket: Bucket) -> dict[str, Any]:
    return {
        "program_id": program_id,
        "member_id": member_id,
        "event_type": bucket.event_type,
        "day": bucket.last_at.date(),
        "count": bucket.count,
        "amount_count": bucket.count,
        "amount_sum": bucket.amount_units,
        "amount_min": None,
        "amount_max": None,
        "first_at": bucket.last_at,
        "last_at": bucket.last_at,
    }


async def refresh(services: Services, program_id: int, now: datetime = NOW) -> int:
    async with services.db.unit_of_work() as uow:
        return await refresh_scores(uow.session, program_id, now)


async def stored_scores(services: Services, program_id: int) -> dict[str, Scores | None]:
    async with services.db.read() as session:
        rows = await session.execute(
            select(
                Member.external_id,
                Member.rfm_r,
                Member.rfm_f,
                Member.rfm_m,
                Member.rfm_label,
                Member.abc_class,
            ).where(Member.program_id == program_id)
        )
        return {
            external_id: _scores_or_none(r, f, m, label, abc) for external_id, r, f, m, label, abc in rows
        }


def _scores_or_none(
    r: int | None, f: int | None, m: int | None, label: str | None, abc: str | None
) -> Scores | None:
    """The stored scores: all five set, or all five NULL."""
    if r is None or f is None or m is None or label is None or abc is None:
        assert (r, f, m, label, abc) == (None,) * 5, "scores partly NULL"
        return None
    return Scores(r, f, m, label, abc)


def units(amount: int) -> int:
    return amount * 10_000


# --- a worked example ------------------------------------------------------------------------


async def test_worked_example(services: Services) -> None:
    # given ten purchasers, one member with only logins and one with stale scores, and another program
    program_id = await fresh_program(services)
    members: dict[str, list[Bucket]] = {
        "e": [Bucket(NOW - timedelta(hours=3), 1, units(20))],
        "B": [Bucket(NOW - DAY - timedelta(hours=5), 10, units(500))],
        "a": [Bucket(NOW - DAY - timedelta(hours=1), 10, units(500))],
        "a10": [Bucket(NOW - 3 * DAY - timedelta(hours=20), 5, units(100))],
        "a9": [Bucket(NOW - 3 * DAY - timedelta(hours=1), 5, units(100))],
        "c": [Bucket(NOW - 10 * DAY, 8, units(50))],
        "d": [Bucket(NOW - 40 * DAY, 1, 0)],
        "h": [Bucket(NOW - 60 * DAY, 6, units(30))],
        "f": [Bucket(NOW - 100 * DAY, 7, units(2000)), Bucket(NOW - 150 * DAY, 5, units(1000))],
        "g": [Bucket(NOW - 200 * DAY, 2, units(10))],
        "x": [Bucket(NOW - DAY, 50, 0, event_type="login")],
    }
    await seed(services, program_id, members)
    await seed(services, program_id, {"y": []}, stale=Scores(5, 5, 5, "Champions", "A"))
    other_program = await fresh_program(services)
    await seed(services, other_program, {"a": [Bucket(NOW, 99, units(9999))]})

    # when
    scored = await refresh(services, program_id)

    # then: recency e, B, a, a10, a9, c, d, h, f, g (B before a and a10 before a9 in byte order);
    # frequency f, B, a, c, h, a10, a9, g, d, e; monetary f, B, a, a10, a9, c, h, e, g, d
    # of a total of 4310: A while 100 * before < 80 * 4310, B while < 95 * 4310
    assert scored == 10
    assert await stored_scores(services, program_id) == {
        "e": Scores(5, 1, 2, "New Customers", "C"),
        "B": Scores(5, 5, 5, "Champions", "A"),
        "a": Scores(4, 4, 4, "Loyal Customers", "B"),
        "a10": Scores(4, 3, 4, "Potential Loyalists", "B"),
        "a9": Scores(3, 2, 3, "About To Sleep", "C"),
        "c": Scores(3, 4, 3, "Loyal Customers", "C"),
        "d": Scores(2, 1, 1, "Hibernating", "C"),
        "h": Scores(2, 3, 2, "At Risk", "C"),
        "f": Scores(1, 5, 5, "Can't Lose Them", "A"),
        "g": Scores(1, 2, 1, "Hibernating", "C"),
        "x": None,
        "y": None,
    }
    assert await stored_scores(services, other_program) == {"a": None}


async def test_refresh_is_repeatable_and_follows_new_purchases(services: Services) -> None:
    # given a scored program
    program_id = await fresh_program(services)
    await seed(services, program_id, {"a": [Bucket(NOW - DAY, 1, 5)], "b": [Bucket(NOW - 2 * DAY, 1, 5)]})
    await refresh(services, program_id)

    # when it is refreshed again, unchanged, and after a new purchaser appears
    again = await refresh(services, program_id)
    unchanged = await stored_scores(services, program_id)
    await seed(services, program_id, {"c": [Bucket(NOW, 3, 100)]})
    after = await refresh(services, program_id)

    # then
    assert (again, after) == (2, 3)
    assert unchanged == {"a": Scores(5, 5, 5, "Champions", "A"), "b": Scores(4, 4, 4, "Loyal Customers", "A")}
    assert await stored_scores(services, program_id) == {
        "c": Scores(5, 5, 5, "Champions", "A"),
        "a": Scores(4, 4, 4, "Loyal Customers", "B"),
        "b": Scores(3, 3, 3, "Need Attention", "C"),
    }


async def test_no_purchasers(services: Services) -> None:
    program_id = await fresh_program(services)
    await seed(services, program_id, {"a": []}, stale=Scores(1, 1, 1, "Hibernating", "C"))

    assert await refresh(services, program_id) == 0
    assert await stored_scores(services, program_id) == {"a": None}


# --- day boundaries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a_before_now", "b_before_now", "first"),
    [
        # b is 1 µs short of a whole day count that a reaches: different days, b more recent
        *[(n * DAY, n * DAY - US, "b") for n in (1, 2, 365)],
        # a is 1 µs past the day count b reaches exactly: the same days, so externalId decides
        *[(n * DAY + US, n * DAY, "a") for n in (1, 2, 365)],
        # in the future: b is 1 µs after now, day -1, before a at day 0
        (timedelta(0), -US, "b"),
        # both in day -1 (1 µs and 24 h after now): a tie
        (-US, -DAY, "a"),
    ],
)
async def test_days_since_last_purchase_is_exact_at_day_boundaries(
    services: Services, a_before_now: timedelta, b_before_now: timedelta, first: str
) -> None:
    # given two purchasers whose last purchases straddle (or share) a day boundary, seen from an odd `now`
    now = datetime(2024, 3, 1, 7, 8, 9, 123456, tzinfo=UTC)
    program_id = await fresh_program(services)
    await seed(
        services,
        program_id,
        {"a": [Bucket(now - a_before_now, 1, 1)], "b": [Bucket(now - b_before_now, 1, 1)]},
    )

    # when
    await refresh(services, program_id, now)

    # then the more recent day count, or on a tie "a", takes recency tile 1
    recency = {
        external_id: scores.r if scores else None
        for external_id, scores in (await stored_scores(services, program_id)).items()
    }
    assert recency[first] == 5
    assert sorted(recency.values(), key=str) == [4, 5]


# --- against the oracle ----------------------------------------------------------------------

ODD_TIMES = [time(0), time(0, 0, 0, 1), time(12), time(23, 59, 59, 999999)]
buckets_of_a_member = st.lists(
    st.tuples(
        st.integers(-400, 1),  # day relative to NOW's date
        st.sampled_from(ODD_TIMES) | st.times(),
        st.integers(1, 4),
        st.sampled_from([0, 1, 10_000]) | st.integers(0, 10**9),
    ),
    max_size=3,
    unique_by=lambda bucket: bucket[0],
)
populations = st.dictionaries(
    st.text(alphabet="aAbB09_é", min_size=1, max_size=4), buckets_of_a_member, max_size=40
)


@hypothesis_settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(population=populations)
async def test_refresh_matches_the_oracle(
    services: Services, population: dict[str, list[tuple[int, time, int, int]]]
) -> None:
    # given a generated population in a program of its own
    members = {
        external_id: [
            Bucket(datetime.combine(NOW.date() + timedelta(days=day), at, UTC), count, amount)
            for day, at, count, amount in buckets
        ]
        for external_id, buckets in population.items()
    }
    program_id = await fresh_program(services)
    await seed(services, program_id, members)

    # when
    scored = await refresh(services, program_id)

    # then
    stats = [
        PurchaseStats(
            external_id,
            max(bucket.last_at for bucket in buckets),
            sum(bucket.count for bucket in buckets),
            sum(bucket.amount_units for bucket in buckets),
        )
        for external_id, buckets in members.items()
        if buckets
    ]
    expected = score_population(stats, NOW)
    assert scored == len(expected)
    assert await stored_scores(services, program_id) == {
        external_id: expected.get(external_id) for external_id in members
    }


# --- the pure rules --------------------------------------------------------------------------


def test_every_rfm_pair_has_a_label() -> None:
    assert set(RFM_LABELS) == {(r, f) for r in range(1, 6) for f in range(1, 6)}


@pytest.mark.parametrize(
    ("before", "total", "expected"),
    [(0, 0, "C"), (0, 10, "A"), (7, 10, "A"), (8, 10, "B"), (94, 100, "B"), (95, 100, "C"), (0, -5, "C")],
)
def test_abc_class_thresholds(before: int, total: int, expected: str) -> None:
    assert abc_class(before, total) == expected


JOINED_LONG_AGO = NOW - 1000 * DAY


@pytest.mark.parametrize(
    ("joined_at", "purchases", "last_purchase_at", "expected"),
    [
        (NOW - 30 * DAY + US, 1, NOW - DAY, LifecycleStage.NEW),
        (NOW - 30 * DAY + US, 0, None, LifecycleStage.NEW),
        (NOW - 30 * DAY, 1, NOW - DAY, LifecycleStage.ACTIVE),
        (NOW - 30 * DAY, 0, None, LifecycleStage.LOST),
        (NOW - DAY, 2, NOW - DAY, LifecycleStage.ACTIVE),
        (JOINED_LONG_AGO, 5, NOW - 30 * DAY + US, LifecycleStage.ACTIVE),
        (JOINED_LONG_AGO, 5, NOW - 30 * DAY, LifecycleStage.AT_RISK),
        (JOINED_LONG_AGO, 5, NOW - 90 * DAY + US, LifecycleStage.AT_RISK),
        (JOINED_LONG_AGO, 5, NOW - 90 * DAY, LifecycleStage.LOST),
        (JOINED_LONG_AGO, 0, None, LifecycleStage.LOST),
        (JOINED_LONG_AGO, 1, NOW + DAY, LifecycleStage.ACTIVE),
    ],
)
def test_lifecycle_stage_at_each_threshold(
    joined_at: datetime, purchases: int, last_purchase_at: datetime | None, expected: LifecycleStage
) -> None:
    assert lifecycle_stage(joined_at, purchases, last_purchase_at, NOW, LIFECYCLE_DEFAULTS) == expected


def test_lifecycle_stage_with_program_thresholds() -> None:
    thresholds = LifecycleThresholds.from_settings(
        {"lifecycleNewDays": 7, "lifecycleAtRiskDays": 10, "lifecycleLostDays": 10}
    )

    assert thresholds == LifecycleThresholds(7, 10, 10)
    assert lifecycle_stage(NOW - 7 * DAY, 0, None, NOW, thresholds) == "LOST"
    assert lifecycle_stage(NOW - 7 * DAY + US, 0, None, NOW, thresholds) == "NEW"
    assert lifecycle_stage(JOINED_LONG_AGO, 3, NOW - 10 * DAY + US, NOW, thresholds) == "ACTIVE"
    assert lifecycle_stage(JOINED_LONG_AGO, 3, NOW - 10 * DAY, NOW, thresholds) == "LOST"


def test_lifecycle_thresholds_default_when_unset() -> None:
    assert LifecycleThresholds.from_settings({"other": 1}) == LifecycleThresholds(30, 30, 90)
    assert LifecycleThresholds.from_settings({"lifecycleLostDays": 120}) == LifecycleThresholds(30, 30, 120)


@pytest.mark.parametrize(
    "settings",
    [
        {"lifecycleNewDays": 0},
        {"lifecycleAtRiskDays": -1},
        {"lifecycleLostDays": 1.5},
        {"lifecycleLostDays": "90"},
        {"lifecycleNewDays": True},
        {"lifecycleAtRiskDays": 91},
        {"lifecycleAtRiskDays": 20, "lifecycleLostDays": 10},
    ],
)
def test_lifecycle_thresholds_refuse_invalid_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        LifecycleThresholds.from_settings(settings)
