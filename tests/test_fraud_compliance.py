"""The `non-compliant` tag from blocks, and `loyalty fraud backtest`, with the real rules."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from api.runtime import Services
from domain.enums import EventStatus
from domain.errors import InvalidInput
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import Event, FraudFinding, LedgerEntry, MemberTag
from fraud.backtest import Backtest
from fraud.compliance import NON_COMPLIANT, ComplianceSweeper
from tests.support import ShiftableClock
from tests.support.cli import cli_environment, loyalty, ok
from tests.support.fraud import reviewer
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.segments import create, members_of

TAGS = "query($id: String!) { member(externalId: $id) { pointsBalance tags { key source } } }"


async def record(
    services: Services, program: ProgramFixture, drafts: Sequence[EventDraft]
) -> list[EventStatus]:
    return [o.status for o in await services.events.record_events(program.id, drafts)]


def purchase(key: str, at: datetime, amount: int = 10, receipt: str | None = None) -> EventDraft:
    properties = {} if receipt is None else {"receiptId": receipt}
    return EventDraft(key, "m1", "purchase", at, Decimal(amount), properties)


async def test_blocks_over_the_threshold_tag_the_member_until_they_age_out(
    services: Services, program: ProgramFixture, admin: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a program that tolerates one block in 30 days, and a segment of tagged members
    await services.fraud_settings.set_rule(program.id, "non_compliant", params={"maxBlocks": 1}, actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    await create(admin, "flagged", 'has_tag("non-compliant")')
    at = clock.now() - timedelta(hours=1)
    assert await record(services, program, [purchase("p0", at, receipt="R1")]) == [EventStatus.ACCEPTED]

    # when the member reuses the receipt once, then twice
    first = await record(services, program, [purchase("dup1", at, receipt="R1")])
    member = await admin.data(TAGS, {"id": "m1"})
    second = await record(services, program, [purchase("dup2", at, receipt="R1")])

    # then the first block is tolerated; the second tags them (source fraud) and the segment follows
    assert first == second == [EventStatus.BLOCKED]
    assert member["member"]["tags"] == []
    member = await admin.data(TAGS, {"id": "m1"})
    assert member["member"] == {"pointsBalance": 10, "tags": [{"key": NON_COMPLIANT, "source": "fraud"}]}
    assert await members_of(admin, "flagged") == ["m1"]
    refused = await admin.error(
        'mutation { removeTag(memberExternalId: "m1", tag: "non-compliant") { externalId } }'
    )
    assert refused["extensions"]["code"] == "BAD_USER_INPUT"
    assert "applied by the fraud audit" in refused["message"]

    # when 30 days pass and the sweeper runs (its pass over this program: run_once would sweep every
    # program of the run, one transaction each)
    clock.shift(timedelta(days=30, minutes=1))
    await ComplianceSweeper(services.db, services.clock, services.compliance).sweep(program.id, clock.now())

    # then the tag and the segment membership are gone (the admin's session has expired by now)
    assert await _tags(services, program) == []
    assert await services.tags.segments_of([await _member_id(services, program)]) == {}


async def test_shadow_blocks_do_not_count_and_a_raised_threshold_untags(
    services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given duplicate receipts in shadow mode, and a program that tags at the first block
    await services.fraud_settings.set_rule(program.id, "non_compliant", params={"maxBlocks": 0}, actor="test")
    await services.fraud_settings.set_rule(program.id, "duplicate_receipt", shadow=True, actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    at = clock.now() - timedelta(hours=1)

    # when a receipt is reused under shadow mode
    statuses = await record(
        services, program, [purchase("a", at, receipt="R"), purchase("b", at, receipt="R")]
    )

    # then both are accepted, the finding is kept as shadow and nobody is tagged
    assert statuses == [EventStatus.ACCEPTED, EventStatus.ACCEPTED]
    assert await _tags(services, program) == []
    async with services.db.read() as session:
        shadow = (
            await session.execute(
                select(FraudFinding.rule, FraudFinding.shadow).where(FraudFinding.program_id == program.id)
            )
        ).all()
    assert ("duplicate_receipt", True) in shadow

    # when the rule acts again and blocks, the member is tagged; raising the threshold untags them
    await services.fraud_settings.set_rule(program.id, "duplicate_receipt", shadow=False, actor="test")
    assert await record(services, program, [purchase("c", at, receipt="R")]) == [EventStatus.BLOCKED]
    assert await _tags(services, program) == [NON_COMPLIANT]
    await services.fraud_settings.set_rule(program.id, "non_compliant", params={"maxBlocks": 1}, actor="test")
    sweeper = ComplianceSweeper(services.db, services.clock, services.compliance)
    assert await sweeper.sweep(program.id, clock.now()) == ([], [await _member_id(services, program)])
    assert await _tags(services, program) == []


async def test_a_reviewer_rejection_counts_as_a_block(
    services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given accruals over 50 points held for review, and a program that tags at the first block
    await services.fraud_settings.set_rule(
        program.id, "single_accrual_cap", params={"maxPoints": 50}, actor="test"
    )
    await services.fraud_settings.set_rule(program.id, "non_compliant", params={"maxBlocks": 0}, actor="test")
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    assert await record(services, program, [purchase("big", clock.now(), amount=80)]) == [
        EventStatus.HELD_FOR_REVIEW
    ]
    (item,) = await services.review.review_queue(program.id)

    # when an admin rejects it
    await services.review.reject(
        reviewer(program.id, services.clock, "admin:ops@example.com"), item.entry_id, "split purchase"
    )

    # then the rejection is a finding of its own and the member is tagged
    assert await _tags(services, program) == [NON_COMPLIANT]
    async with services.db.read() as session:
        rules = list(
            (
                await session.execute(
                    select(FraudFinding.rule)
                    .where(FraudFinding.program_id == program.id)
                    .order_by(FraudFinding.id)
                )
            ).scalars()
        )
    assert rules == ["single_accrual_cap", "reviewer"]


async def test_backtest_reports_what_a_stricter_rule_would_have_held_and_changes_nothing(
    services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    # given 12 purchases within one hour and 3 the day before, all accepted under the defaults
    await services.members.upsert_members(program.id, [MemberUpsert("m1")])
    start = clock.now() - timedelta(days=2)
    drafts = [purchase(f"e{i}", start + timedelta(minutes=4 * i)) for i in range(12)]
    drafts += [purchase(f"old{i}", start - timedelta(days=1, hours=i)) for i in range(3)]
    assert set(await record(services, program, drafts)) == {EventStatus.ACCEPTED}
    before = await _state(services, program)

    # when velocity is backtested at review above 10, over the last 30 days
    report = await Backtest(services.db, services.clock).run(program.id, "velocity", {"reviewAbove": 10})

    # then the 11th and 12th would have been held, nothing would have been blocked, nothing changed
    assert (report.accruals, report.would_review, report.would_block, report.newly_flagged) == (15, 2, 0, 2)
    assert [f.event_external_id for f in report.examples] == ["e10", "e11"]
    assert report.examples[0].detail == "11 point-earning events in 60 minutes (review above 10)"
    assert report.as_json()["actual"] == {"ACCEPTED": 15}
    assert await _state(services, program) == before

    # and the defaults find nothing
    assert (await Backtest(services.db, services.clock).run(program.id, "velocity")).would_review == 0


async def test_backtest_refuses_bad_input(services: Services, program: ProgramFixture) -> None:
    backtest = Backtest(services.db, services.clock)
    for rule, params, days, message in [
        ("speed", None, 30, "rule: 'speed' is not one of"),
        ("non_compliant", None, 30, "cannot be backtested"),
        ("referral_velocity", None, 30, "judges referrals at signup, not events; it cannot be backtested"),
        (
            "velocity",
            {"reviewAbove": -1},
            30,
            "params.reviewAbove: must be between 1 and 1000000000000, got -1",
        ),
        ("velocity", {"often": 3}, 30, "velocity has no parameter 'often'"),
        ("velocity", None, 0, "days: between 1 and 366, got 0"),
    ]:
        with pytest.raises(InvalidInput, match=re.escape(message)):
            await backtest.run(program.id, rule, params, days)


def test_backtest_command_prints_json_and_names_bad_input(tmp_path: Path) -> None:
    env = cli_environment(tmp_path)
    ok(env, "db", "upgrade")
    ok(env, "program", "create", "--key", "acme", "--name", "Acme", "--kind", "B2C")
    report = ok(env, "fraud", "backtest", "--program", "acme", "--rule", "daily_points_cap", "--days", "7")
    assert report["rule"] == "daily_points_cap"
    assert (report["accruals"], report["wouldReview"], report["params"]) == (0, 0, {"maxPoints": 10000})
    failed = loyalty(env, "fraud", "backtest", "--program", "acme", "--rule", "velocity", "--params", "{")
    assert failed.returncode == 1
    assert failed.stderr.startswith("loyalty: BAD_USER_INPUT: --params: not JSON")
    failed = loyalty(env, "fraud", "backtest", "--program", "acme", "--rule", "speed")
    assert failed.returncode == 1
    assert "BAD_USER_INPUT: rule: 'speed' is not one of" in failed.stderr


async def _tags(services: Services, program: ProgramFixture) -> list[str]:
    async with services.db.read() as session:
        rows = await session.execute(
            select(MemberTag.key).where(MemberTag.program_id == program.id, MemberTag.source == "fraud")
        )
        return list(rows.scalars())


async def _member_id(services: Services, program: ProgramFixture) -> int:
    member = await services.members.get(program.id, "m1")
    assert member is not None
    return member.id


async def _state(services: Services, program: ProgramFixture) -> tuple[object, ...]:
    async with services.db.read() as session:
        events = (
            await session.execute(
                select(Event.external_id, Event.status)
                .where(Event.program_id == program.id)
                .order_by(Event.id)
            )
        ).all()
        ledger = await session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.program_id == program.id)
        )
        findings = await session.scalar(
            select(func.count()).select_from(FraudFinding).where(FraudFinding.program_id == program.id)
        )
    return tuple(events), ledger, findings
