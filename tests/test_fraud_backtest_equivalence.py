"""The rules have two implementations of their history: the live audit's (read from the database
per batch, amounts partly summed in SQL; fraud/loading.py) and the backtest's (replayed from
recorded events; fraud/backtest.py). Property: for any events sent in any batches, backtesting a
rule with the configuration it ran with flags exactly the accruals the live audit held or blocked.

Sync tests with a private event loop, like tests/test_leaderboard_properties.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from api.runtime import Services
from domain.enums import EventStatus, Verdict
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.settings import Settings
from fraud.backtest import Backtest
from fraud.config import SPECS
from fraud.referral_rules import REFERRAL_RULE_NAMES
from tests.support import Harness, private_services
from tests.support.graphql import new_program

MEMBERS = ["m1", "m2", "m3"]
#: Thresholds low enough that a few random events trip each rule.
TIGHT: dict[str, dict[str, float]] = {
    "velocity": {"reviewAbove": 2, "blockAbove": 4, "windowMinutes": 90},
    "single_accrual_cap": {"maxPoints": 60},
    "daily_points_cap": {"maxPoints": 150},
    "amount_outlier": {"zScore": 1, "minSamples": 3, "days": 2, "minStd": 1},
    "shared_device": {"maxMembers": 1, "hours": 12},
    "cashier_collusion": {"maxPerDay": 2},
}
RULES = [name for name in SPECS if name != "non_compliant" and name not in REFERRAL_RULE_NAMES]
VERDICT = {
    EventStatus.ACCEPTED: Verdict.ALLOW,
    EventStatus.HELD_FOR_REVIEW: Verdict.REVIEW,
    EventStatus.BLOCKED: Verdict.BLOCK,
}


@dataclass(frozen=True)
class Sent:
    member: str
    minutes: int
    amount: int | None  # None: a referral (one event in four)
    receipt: str | None
    device: str | None
    cashier: str | None
    referee: str


events = st.builds(
    Sent,
    member=st.sampled_from(MEMBERS),
    minutes=st.integers(0, 18 * 60),
    amount=st.one_of(st.integers(1, 100), st.integers(1, 100), st.integers(1, 100), st.none()),
    receipt=st.one_of(st.none(), st.sampled_from(["r1", "r2", "r3"])),
    device=st.one_of(st.none(), st.sampled_from(["d1", "d2"])),
    cashier=st.one_of(st.none(), st.sampled_from(["c1", "c2"])),
    referee=st.sampled_from(MEMBERS),
)
identities = st.fixed_dictionaries(
    {"phone": st.sampled_from(["+90 555 000 0001", "+905550000001", "+90 555 000 0002"])}
)


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    with private_services(settings) as opened:
        yield opened


@pytest.mark.parametrize("rule", RULES)
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    sent=st.lists(events, min_size=8, max_size=25),
    cuts=st.lists(st.integers(1, 24), max_size=3),
    attributes=st.lists(identities, min_size=3, max_size=3),
)
def test_backtest_flags_exactly_what_the_live_audit_did(
    harness: Harness, rule: str, sent: list[Sent], cuts: list[int], attributes: list[dict[str, Any]]
) -> None:
    services = harness.services
    program = harness.run(new_program(services))
    harness.run(_only(services, program.id, rule))
    harness.run(
        services.members.upsert_members(
            program.id, [MemberUpsert(m, attributes=a) for m, a in zip(MEMBERS, attributes, strict=True)]
        )
    )
    base = services.clock.now() - timedelta(days=4)
    drafts = [_draft(i, s, base) for i, s in enumerate(sent)]

    # when the events are recorded in batches, one after the other
    actual: dict[str, Verdict] = {}
    bounds = sorted({0, len(drafts), *(c for c in cuts if c < len(drafts))})
    for lo, hi in pairwise(bounds):
        for outcome in harness.run(services.events.record_events(program.id, drafts[lo:hi])):
            actual[outcome.external_id] = VERDICT[outcome.status]

    # then backtesting the rule, as configured, flags exactly the accruals it held or blocked live
    report = harness.run(Backtest(services.db, services.clock).run(program.id, rule, examples=1000))
    replayed = {flag.event_external_id: flag.verdict for flag in report.examples}
    live = {key: verdict for key, verdict in actual.items() if verdict != Verdict.ALLOW}
    event(f"{rule}: {'flagged' if live else 'nothing flagged'}")
    assert replayed == live, (rule, sent, cuts)
    assert report.newly_flagged == 0


async def _only(services: Services, program_id: int, rule: str) -> None:
    for name in RULES:
        await services.fraud_settings.set_rule(
            program_id,
            name,
            enabled=name == rule,
            params=TIGHT.get(name) if name == rule else None,
            actor="test",
        )


def _draft(i: int, sent: Sent, base: datetime) -> EventDraft:
    properties = {
        key: value
        for key, value in (
            ("receiptId", sent.receipt),
            ("deviceId", sent.device),
            ("cashierId", sent.cashier),
        )
        if value is not None
    }
    at = base + timedelta(minutes=sent.minutes)
    if sent.amount is None:
        return EventDraft(
            f"e{i}", sent.member, "referral", at, None, properties | {"refereeExternalId": sent.referee}
        )
    return EventDraft(f"e{i}", sent.member, "purchase", at, Decimal(sent.amount), properties)
