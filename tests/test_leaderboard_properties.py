"""Properties of leaderboards, against real Redis and the real database.

1. Packed scores order members as the rule says (more points first, then who
   reached them first) when Redis sorts them.
2. Whatever interleaving of purchases (backdated up to 45 days), redemptions,
   reversals and feeder passes happens, once the feed is drained every board key
   holds exactly what the ledger says (`expected`, the rebuild's computation),
   and no other key exists.

Like tests/test_ledger_properties.py these are sync tests with a private event
loop and services: hypothesis cannot re-enter pytest-asyncio's session loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.runtime import Services
from domain.errors import DomainError
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.settings import Settings
from gamification.leaderboards.feeder import StandingsFeeder
from gamification.leaderboards.rebuild import expected, kept_periods
from gamification.leaderboards.scores import encode
from gamification.leaderboards.store import board_pattern
from tests.support import Harness, private_services
from tests.support.examples import examples

T = TypeVar("T")
MEMBERS = ["ana", "bob", "cem", "dil"]


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    with private_services(settings) as opened:
        yield opened


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(st.integers(-50, 50), st.integers(0, 5000)), min_size=1, max_size=30))
def test_packed_scores_sort_by_points_then_first_reach(
    harness: Harness, entries: list[tuple[int, int]]
) -> None:
    start = datetime(2027, 3, 1, tzinfo=UTC)
    key = harness.services.redis.key("prop", uuid.uuid4().hex)
    scores = {str(i): encode(p, start + timedelta(seconds=s), start) for i, (p, s) in enumerate(entries)}
    client = harness.services.redis.client
    harness.run(client.zadd(key, scores))
    try:
        shown = cast(list[str], harness.run(client.zrevrange(key, 0, -1)))
    finally:
        harness.run(client.delete(key))
    # the rule: more points first; equal points: reached earlier first; then member id as text, descending
    rule = sorted(scores, key=lambda i: (-entries[int(i)][0], entries[int(i)][1], _descending(i)))
    assert shown == rule


def _descending(text: str) -> tuple[int, ...]:
    return (*(-ord(c) for c in text), 1)  # a prefix sorts after its extensions


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("buy"), st.sampled_from(MEMBERS), st.integers(0, 45), st.integers(1, 300)),
        st.tuples(st.just("redeem"), st.sampled_from(MEMBERS), st.integers(1, 100), st.just(0)),
        st.tuples(st.just("reverse"), st.sampled_from(MEMBERS), st.just(0), st.just(0)),
        st.tuples(st.just("feed"), st.just(""), st.just(0), st.just(0)),
    ),
    max_size=25,
)


@settings(
    max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS)
def test_fed_boards_equal_the_ledger_after_any_interleaving(
    harness: Harness, operations: list[tuple[str, str, int, int]]
) -> None:
    harness.run(_interleave(harness.services, operations))


async def _interleave(services: Services, operations: list[tuple[str, str, int, int]]) -> None:
    program = await services.programs.create_program(f"lbp-{uuid.uuid4().hex[:12]}", "Boards", "B2C")
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in MEMBERS])
    feeder = next(loop for loop in services.loops if isinstance(loop, StandingsFeeder))
    await feeder.lease.take_over()  # a server process another test ran may still hold it
    now = services.clock.now()
    for n, (operation, member, number, amount) in enumerate(operations):
        try:
            if operation == "buy":
                at = now - timedelta(days=number, minutes=n)
                await services.events.record_events(
                    program.id, [EventDraft(f"e{n}", member, "purchase", at, Decimal(amount))]
                )
            elif operation == "redeem":
                await services.ledger.redeem(program.id, member, number, "gift", f"r{n}")
            elif operation == "reverse":
                entry_id = await _newest_accrual(services, program.id, member)
                if entry_id is not None:
                    await services.ledger.reverse(program.id, entry_id, "refund", f"x{n}", actor="test")
            else:
                await feeder.run_once()
        except DomainError:
            pass  # beyond the balance, already reversed: the ledger refused, the boards must agree
    while await feeder.run_once():
        pass
    client = services.redis.client
    live = {k async for k in client.scan_iter(match=board_pattern(services.redis, program.id, "*"))}
    wanted: dict[str, dict[int, int]] = {}
    async with services.db.read() as session:
        for period in await kept_periods(session, program.id, services.clock.now()):
            wanted.update(await expected(session, services.redis, program.id, period))
    assert live == set(wanted)
    for key, scores in wanted.items():
        stored = cast(list[tuple[str, float]], await client.zrange(key, 0, -1, withscores=True))
        assert {int(m): int(s) for m, s in stored} == scores, key


async def _newest_accrual(services: Services, program_id: int, member: str) -> int | None:
    found = await services.members.get(program_id, member)
    if found is None:
        return None
    page = await services.ledger.page(found.id, 50, None)
    accruals = [e for e in page.entries if e.kind == "ACCRUAL"]
    return accruals[0].id if accruals else None
