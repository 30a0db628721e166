"""setTierLadder's set-based placement equals the per-member rule of the accrual pass (hypothesis).

Program A has the ladder first and records the generated purchases (each member's tier decided
in memory by the engine, batch by batch); program B records the same purchases and then gets the
ladder (one compiled SQL pass). With no time passing and no refunds a member's value only grows,
so both must place every member in the same tier. Sync tests with a private event loop, like
tests/test_batch_equivalence.py: hypothesis cannot re-enter pytest-asyncio's session loop.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.runtime import Services
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.programs.service import ProgramSettings
from domain.settings import Settings
from domain.tiers.ladder import LadderDraft, TierDraft
from tests.support import FrozenClock, Harness, private_services
from tests.support.tiers import held

MEMBERS = ("a", "b", "c", "d")
EXAMPLES = int(os.environ.get("TIER_PLACEMENT_EXAMPLES", "12"))
LADDER = LadderDraft(
    "sum(purchase.amount, 30d)",
    [
        TierDraft("bronze", "Bronze", Decimal(0)),
        TierDraft("silver", "Silver", Decimal("100")),
        TierDraft("gold", "Gold", Decimal("250.5")),
    ],
)

purchases = st.lists(
    st.tuples(
        st.sampled_from(MEMBERS),
        st.integers(0, 40 * 24),  # hours ago: some leave the 30-day window
        st.sampled_from([Decimal("0.5"), Decimal(50), Decimal("99.5"), Decimal(100), Decimal("150.5")]),
    ),
    max_size=14,
)


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    with private_services(settings, FrozenClock()) as opened:
        yield opened


async def open_program(services: Services) -> int:
    program = await services.programs.create_program(
        f"tp-{uuid.uuid4().hex[:12]}", "Tier placement", "B2C", ProgramSettings()
    )
    await services.fraud_settings.set_rule(
        program.id, "single_accrual_cap", params={"maxPoints": 10_000}, actor="t"
    )
    await services.members.upsert_members(program.id, [MemberUpsert(m) for m in MEMBERS])
    return program.id


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(purchases, st.integers(1, 4))
def test_the_set_based_placement_is_the_per_member_rule(
    harness: Harness, bought: list[tuple[str, int, Decimal]], batches: int
) -> None:
    services = harness.services
    now = services.clock.now()
    drafts = [
        EventDraft(f"e{i}", member, "purchase", now - timedelta(hours=hours, seconds=1), amount, {})
        for i, (member, hours, amount) in enumerate(bought)
    ]

    async def run() -> tuple[list[object], list[object]]:
        per_member, set_based = await open_program(services), await open_program(services)
        await services.tiers.set_ladder(per_member, LADDER, actor="test")
        size = max(1, -(-len(drafts) // batches))
        for start in range(0, len(drafts), size):
            for program_id in (per_member, set_based):
                await services.events.record_events(program_id, drafts[start : start + size])
        await services.tiers.set_ladder(set_based, LADDER, actor="test")
        return (
            [await held(services, per_member, m) for m in MEMBERS],
            [await held(services, set_based, m) for m in MEMBERS],
        )

    incremental, placed = harness.run(run())
    assert incremental == placed
