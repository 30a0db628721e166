"""`loyalty fraud backtest`: replay recorded events through one rule's configuration. Read only.

The replay uses the live rules and `History` (fraud/rules.py, fraud/history.py).
Events are read in the order the live audit judged them: batches in the order they
were received, a batch's events by occurredAt, then externalId.
Those before the window only build history, with the outcome they actually had;
each point-earning event in the window is judged by the rule under test as if it
ran then. What it finds is recorded (the more severe of its verdict and the actual
one) so later events see it, as they would have. Nothing is written.

Approximations, stated in docs/fraud.md: self_referral compares members' current
attributes, and receipts and devices first used before the replay come from their
registers, not from replay.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.engine import Database
from domain.enums import EntryKind, EventStatus, Verdict
from domain.errors import InvalidInput
from domain.events.refunds import REFUND_TYPE
from domain.models import Event, FraudDevice, FraudReceipt, LedgerEntry, Member
from fraud.config import RuleSettings, load_config, parse_params, spec_of
from fraud.history import Candidate, History, identity_of
from fraud.referral_rules import REFERRAL_RULE_NAMES
from fraud.rules import SEVERITY, Judge

ACTUAL = {
    EventStatus.ACCEPTED.value: Verdict.ALLOW,
    EventStatus.HELD_FOR_REVIEW.value: Verdict.REVIEW,
    EventStatus.BLOCKED.value: Verdict.BLOCK,
}
MAX_DAYS = 366
MAX_EXAMPLES = 1000


@dataclass(frozen=True)
class Flagged:
    event_external_id: str
    member_external_id: str
    occurred_at: datetime
    verdict: Verdict
    actual: Verdict
    detail: str


@dataclass
class BacktestReport:
    rule: str
    params: dict[str, float]
    days: int
    since: datetime
    accruals: int = 0
    would_review: int = 0
    would_block: int = 0
    #: Flagged by the rule under test but actually ACCEPTED: what turning it on would have changed.
    newly_flagged: int = 0
    actual: Counter[str] = field(default_factory=Counter)
    members: set[str] = field(default_factory=set)
    examples: list[Flagged] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "params": self.params,
            "days": self.days,
            "since": self.since.isoformat(),
            "accruals": self.accruals,
            "wouldReview": self.would_review,
            "wouldBlock": self.would_block,
            "newlyFlagged": self.newly_flagged,
            "members": len(self.members),
            "actual": dict(sorted(self.actual.items())),
            "examples": [
                {
                    "event": f.event_external_id,
                    "member": f.member_external_id,
                    "occurredAt": f.occurred_at.isoformat(),
                    "verdict": f.verdict.value,
                    "actual": f.actual.value,
                    "detail": f.detail,
                }
                for f in self.examples
            ],
        }


def _lookback(rule: str, params: dict[str, float]) -> timedelta:
    """How far before the window the rule's history reaches."""
    if rule == "amount_outlier":
        return timedelta(days=params["days"])
    if rule == "velocity":
        return max(timedelta(minutes=params["windowMinutes"]), timedelta(days=1))
    if rule == "shared_device":
        return max(timedelta(hours=params["hours"]), timedelta(days=1))
    return timedelta(days=1)


class Backtest:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def run(
        self, program_id: int, rule: str, params: object = None, days: int = 30, examples: int = 20
    ) -> BacktestReport:
        spec_of(rule)
        if rule == "non_compliant":
            raise InvalidInput(
                "rule: non_compliant tags members; it judges no event and cannot be backtested"
            )
        if rule in REFERRAL_RULE_NAMES:
            raise InvalidInput(
                f"rule: {rule} judges referrals at signup, not events; it cannot be backtested "
                "(shadow mode shows what it would do)"
            )
        if not 1 <= days <= MAX_DAYS:
            raise InvalidInput(f"days: between 1 and {MAX_DAYS}, got {days}")
        if not 0 <= examples <= MAX_EXAMPLES:
            raise InvalidInput(f"examples: between 0 and {MAX_EXAMPLES}, got {examples}")
        now = self.clock.now()
        since = now - timedelta(days=days)
        async with self.db.read() as session:
            config = await load_config(session, program_id)
            current = config[rule]
            settings = RuleSettings(
                rule, True, False, parse_params(rule, params, current.params), defaults=current.defaults
            )
            judge = Judge(config.with_rule(settings), only=[rule])
            report = BacktestReport(rule, dict(settings.params), days, since)
            history = History(config.zone)
            start = since - _lookback(rule, dict(settings.params))
            await _preload(session, program_id, rule, start, history)
            await self._replay(session, program_id, start, since, now, judge, history, report, examples)
        return report

    async def _replay(
        self,
        session: AsyncSession,
        program_id: int,
        start: datetime,
        since: datetime,
        now: datetime,
        judge: Judge,
        history: History,
        report: BacktestReport,
        examples: int,
    ) -> None:
        query = (
            select(
                Event.external_id,
                Event.member_id,
                Member.external_id,
                Event.type,
                Event.occurred_at,
                Event.amount,
                Event.properties,
                Event.status,
                LedgerEntry.points,
            )
            .join(Member, Member.id == Event.member_id)
            .outerjoin(
                LedgerEntry,
                and_(LedgerEntry.event_id == Event.id, LedgerEntry.kind == EntryKind.ACCRUAL.value),
            )
            .where(
                Event.program_id == program_id,
                Event.occurred_at >= start,
                Event.occurred_at <= now,
                Event.type != REFUND_TYPE,
                Event.status.in_(list(ACTUAL)),
            )
            .order_by(Event.received_at, Event.occurred_at, Event.external_id)  # as the live audit judged
            .execution_options(yield_per=5000)
        )
        async for row in await session.stream(query):
            external_id, member_id, member_external_id, event_type, at, amount, properties, status, points = (
                row
            )
            candidate = Candidate(
                member_id, external_id, event_type, at, amount, points or 0, properties or {}
            )
            actual = ACTUAL[status]
            if at < since or candidate.points <= 0:
                history.record(candidate, actual)
                continue
            report.accruals += 1
            report.actual[status] += 1
            outcome = judge.judge(candidate, history)
            verdict = outcome.verdict
            if verdict != Verdict.ALLOW:
                report.members.add(member_external_id)
                if verdict == Verdict.BLOCK:
                    report.would_block += 1
                else:
                    report.would_review += 1
                if actual == Verdict.ALLOW:
                    report.newly_flagged += 1
                if len(report.examples) < examples:
                    detail = "; ".join(f.detail for f in outcome.findings)
                    report.examples.append(
                        Flagged(external_id, member_external_id, at, verdict, actual, detail)
                    )
            history.record(candidate, verdict if SEVERITY[verdict] > SEVERITY[actual] else actual)


async def _preload(
    session: AsyncSession, program_id: int, rule: str, start: datetime, history: History
) -> None:
    """What the replay (from `start`) does not contain: older receipts, identities for self_referral.

    Devices used from `start` on join the identities as the replay meets them, as they did live.
    """
    if rule == "duplicate_receipt":
        rows = await session.execute(
            select(FraudReceipt.receipt_id, FraudReceipt.event_external_id).where(
                FraudReceipt.program_id == program_id, FraudReceipt.occurred_at < start
            )
        )
        for receipt, holder in rows:
            history.claim_receipt(receipt, holder)
    if rule == "self_referral":
        members = await session.execute(
            select(Member.id, Member.external_id, Member.attributes).where(Member.program_id == program_id)
        )
        devices: dict[int, set[str]] = {}
        for member_id, device in await session.execute(
            select(FraudDevice.member_id, FraudDevice.device_id)
            .where(FraudDevice.program_id == program_id, FraudDevice.occurred_at < start)
            .group_by(FraudDevice.member_id, FraudDevice.device_id)
        ):
            devices.setdefault(member_id, set()).add(device)
        for member_id, external_id, attributes in members:
            history.member_ids[external_id] = member_id
            history.identities[member_id] = identity_of(
                external_id, attributes or {}, devices.get(member_id, ())
            )
