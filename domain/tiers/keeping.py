"""Keeping members' tiers inside the segment engine's pass (in memory, with the engine's facts).

The engine evaluates a member's tier before its DYNAMIC segments, in the same
`Context`, so the qualifier is measured by the same measurer a rule reading it
would use, and `in_segment("tier-gold")` sees the new tier in the same pass. A
tier change is a pair of flips of TIER segments, written with the engine's flips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction

from domain.segments.closures import Context, measurer
from domain.segments.conditions import Node
from domain.segments.evaluate import MemberFacts
from domain.segments.horizon import is_time_dependent
from domain.segments.membership import Flip
from domain.tiers.ladder import Ladder, TierState, decide


def measure_qualifier(ladder: Ladder, context: Context) -> Fraction | None:
    """The qualifier's value for the context's member, shared with any rule reading the same metric."""
    measure, scale = measurer(ladder.metric)
    measures = context.measures
    if measure not in measures:
        measures[measure] = measure(context)
    raw = measures[measure]
    return None if raw is None else Fraction(raw) / scale


@dataclass
class TierPass:
    """One pass over some members of a program with a ladder: their states before, and what changed."""

    ladder: Ladder
    #: segment id by tier index
    segment_ids: tuple[int, ...]
    states: dict[int, TierState]
    changed: dict[int, TierState] = field(default_factory=dict)

    @property
    def timed(self) -> bool:
        return is_time_dependent(self.ladder.reaches(0))

    def evaluate(self, member: MemberFacts, context: Context, now: datetime) -> list[Flip]:
        """Decide the member's tier at `now`; flips of its TIER segments (member.segments follows)."""
        value = measure_qualifier(self.ladder, context)
        before = self.states.get(member.member_id)
        after = decide(self.ladder, before, value, now)
        if after != before:
            self.changed[member.member_id] = after
            self.states[member.member_id] = after
        flips: list[Flip] = []
        for i, tier in enumerate(self.ladder.tiers):
            holds = i == after.tier
            if holds == (tier.segment_key in member.segments):
                continue
            flips.append(Flip(self.segment_ids[i], tier.segment_key, member.member_id, holds, None))
            (member.segments.add if holds else member.segments.discard)(tier.segment_key)
        return sorted(flips, key=lambda flip: flip.entered)  # the tier left, then the one entered

    def due_conditions(self, member_id: int) -> list[Node]:
        """The conditions whose flip by time alone can move the member's tier: reaching the held
        tier's threshold (a fall below it) and the next one's (a rise)."""
        state = self.states.get(member_id)
        if state is None or not self.timed:
            return []
        found: list[Node] = []
        if state.tier > 0:
            found.append(self.ladder.reaches(state.tier))
        if state.tier + 1 < len(self.ladder.tiers):
            found.append(self.ladder.reaches(state.tier + 1))
        return found

    def kept_until(self, member_id: int) -> datetime | None:
        state = self.states.get(member_id)
        return None if state is None else state.kept_until
