"""Pipeline step 4 with the rules: the `Auditor` that `fraud.default_auditor()` wires in."""

from __future__ import annotations

from collections.abc import Sequence

from domain.audit import ALLOW, AuditOutcome, ProposedAccrual
from domain.clock import Clock
from domain.db.engine import UnitOfWork
from domain.events.refunds import REFUND_TYPE
from fraud.config import load_config
from fraud.history import Candidate
from fraud.loading import load_history, record_device_uses
from fraud.rules import Judge


def candidate_of(accrual: ProposedAccrual) -> Candidate:
    event = accrual.event
    return Candidate(
        accrual.member_id,
        event.external_id,
        event.type,
        event.occurred_at,
        event.amount,
        accrual.points,
        event.properties,
    )


class RuleAuditor:
    """Judges each proposed accrual with the program's rules, in occurredAt order.

    Every event of the batch (refunds aside) claims its receipt and records its
    device, so the rules also see events that earn nothing; only accruals
    (points > 0) are judged, since only they have something to hold or block.
    The judgement itself is pure (`Judge` over a `History`); the non-compliant tag
    is settled later in the pass, from the stored findings (fraud/compliance.py).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def audit(self, uow: UnitOfWork, accruals: Sequence[ProposedAccrual]) -> list[AuditOutcome]:
        # In occurredAt order, ties by externalId (an order the backtest can replay): a history
        # imported in one batch is judged as it happened.
        audited = sorted(
            (candidate_of(a) for a in accruals if a.event.type != REFUND_TYPE),
            key=lambda c: (c.occurred_at, c.external_id),
        )
        if not audited:
            return [ALLOW for _ in accruals]
        session = uow.session
        program_id = accruals[0].program_id
        config = await load_config(session, program_id)
        judge = Judge(config)
        history = await load_history(session, program_id, audited, config)
        outcomes: dict[str, AuditOutcome] = {}
        for candidate in audited:
            outcome = judge.judge(candidate, history)
            outcomes[candidate.external_id] = outcome
            history.record(candidate, outcome.verdict)
        await record_device_uses(session, program_id, audited)
        return [outcomes.get(a.event.external_id, ALLOW) for a in accruals]
