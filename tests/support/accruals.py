"""Hypothesis strategies for scripts of events sent to the accrual pipeline, and the drafts they make.

A `Script` is what a POS would send over a few days, in the order it sends it:
purchases (some above a review cap, some reusing a receipt), visits, logins,
refunds of earlier events and earlier events sent again, each with a review
decision for when it is held.
New events come in occurredAt order, ties in externalId order (`e01`, `e02`, ...),
the order the fraud audit judges a batch in, so that the audit sees one history
however the script is split into batches. Which events end up held or blocked is
the program's business (its fraud rules); the script only makes both likely.

Limits: amounts and receipts come from small fixed sets, members from
`MEMBERS` (the last one is never upserted: only a program that creates members
on their first event knows it), and nothing is redeemed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import strategies as st

from domain.events.refunds import REFUND_OF, REFUND_TYPE
from domain.events.validation import EventDraft

#: Member externalIds; the last one is created by its first event (autoCreateMembers).
MEMBERS = ("ana", "bob", "cem", "dil", "new")
#: Purchase amounts: worth nothing (below one unit), a little, a lot (above a cap of 50 points).
AMOUNTS = tuple(Decimal(a) for a in ("0.5", "5", "12", "25", "40", "55", "80"))
RECEIPTS = (None, None, None, "r1", "r2")
#: How far back a script reaches: today, yesterday and the day before, in minutes.
SPAN_MINUTES = 3 * 24 * 60
#: `resend` sends an earlier event again, as it was (a client retrying): DUPLICATE.
KINDS = ("purchase",) * 5 + ("visit",) * 3 + ("login", "refund", "resend")
DECISIONS = (None, None, "approve", "approve", "reject")


@dataclass(frozen=True)
class Step:
    """One event of a script. `pick` chooses the refunded event among the earlier ones;
    `decision` is what a reviewer does if the event is held (None: it stays held)."""

    kind: str
    member: int
    amount: Decimal
    receipt: str | None
    minutes_ago: int
    pick: int
    decision: str | None


@dataclass(frozen=True)
class Script:
    steps: tuple[Step, ...]
    #: How many of MEMBERS are upserted before the script runs (the rest are unknown).
    members: int

    def external_id(self, i: int) -> str:
        return f"e{i + 1:02d}"

    def drafts(self, now: datetime) -> list[EventDraft]:
        """The events, in the order they are sent."""
        return [self.draft(i, now) for i in range(len(self.steps))]

    def draft(self, i: int, now: datetime) -> EventDraft:
        step = self.steps[i]
        member = MEMBERS[step.member]
        at = now - timedelta(minutes=step.minutes_ago)
        external_id = self.external_id(i)
        if step.kind == "resend" and i:
            return self.draft(step.pick % i, now)
        if step.kind == "refund":
            # an earlier purchase, else any earlier event (the first event refunds an unknown one)
            earlier = [j for j in range(i) if self.steps[j].kind == "purchase"] or list(range(i))
            refunded = self.external_id(earlier[step.pick % len(earlier)]) if earlier else "e00"
            return EventDraft(external_id, member, REFUND_TYPE, at, None, {REFUND_OF: refunded})
        if step.kind == "purchase":
            properties = {"receiptId": step.receipt} if step.receipt else {}
            return EventDraft(external_id, member, "purchase", at, step.amount, properties)
        return EventDraft(external_id, member, "visit" if step.kind == "resend" else step.kind, at)

    def decisions(self) -> list[tuple[str, str]]:
        """(externalId, approve | reject) of the events a reviewer decides if they are held, in order."""
        return [(self.external_id(i), s.decision) for i, s in enumerate(self.steps) if s.decision]


def steps(members: int) -> st.SearchStrategy[Step]:
    return st.builds(
        Step,
        kind=st.sampled_from(KINDS),
        # mostly the upserted members, sometimes the one that does not exist yet
        member=st.sampled_from([*range(members)] * 3 + [len(MEMBERS) - 1]),
        amount=st.sampled_from(AMOUNTS),
        receipt=st.sampled_from(RECEIPTS),
        minutes_ago=st.integers(0, SPAN_MINUTES),
        pick=st.integers(0, 100),
        decision=st.sampled_from(DECISIONS),
    )


@st.composite
def scripts(draw: st.DrawFn, max_members: int = 4, max_events: int = 12) -> Script:
    """Up to `max_members` known members and 3 to `max_events` events, in occurredAt order."""
    members = draw(st.integers(1, max_members))
    drawn = draw(st.lists(steps(members), min_size=3, max_size=max_events))
    # occurredAt never goes back: the latest-drawn offsets go last
    offsets = sorted((s.minutes_ago for s in drawn), reverse=True)
    ordered = tuple(
        Step(s.kind, s.member, s.amount, s.receipt, minutes, s.pick, s.decision)
        for s, minutes in zip(drawn, offsets, strict=True)
    )
    return Script(ordered, members)


@st.composite
def splits(draw: st.DrawFn, script: Script) -> list[list[int]]:
    """The script's event indices cut into batches (in order); a refund is a batch of its own.

    A refund can take a member out of a segment it entered earlier in the same batch:
    one pass per batch never sees that membership (see the module docstring of
    tests/test_batch_equivalence.py), so refunds get batches of their own here.
    """
    # mostly one or two batches: a batch of one is the other side of the comparison
    cut = st.sampled_from([False] * 7 + [True])
    cuts = draw(st.lists(cut, min_size=len(script.steps), max_size=len(script.steps)))
    batches: list[list[int]] = []
    for i, step in enumerate(script.steps):
        after_refund = bool(batches) and script.steps[batches[-1][-1]].kind == "refund"
        if not batches or cuts[i] or step.kind == "refund" or after_refund:
            batches.append([])
        batches[-1].append(i)
    return batches
