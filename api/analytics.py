"""Segment analytics over a date range, and overlap between segments (beyond the contract)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON

from api.context import Info
from domain.analytics.segments import Overlap, SegmentReport


@strawberry.type(description="One UTC day of a segment: its size at the end of the day, entries and exits")
class SegmentDay:
    day: date
    size: int
    entered: int
    left: int


@strawberry.type(description="Members who entered in the range; converted: a goal event within `days` after")
class SegmentConversion:
    goal_event_type: str
    days: int
    entered: int
    converted: int
    rate: float | None


@strawberry.type(
    description="Messages the segment's triggers created in the range: SENT by the provider, SUPPRESSED "
    "(never sent: the member accepted no channel; channel null), opened "
    "and clicked (events message_opened / message_clicked with properties.messageId), converted "
    "(a goal event within conversionDays of the message)"
)
class SegmentMessages:
    template: str
    channel: str | None
    created: int
    sent: int
    suppressed: int
    opened: int
    clicked: int
    converted: int


@strawberry.type
class SegmentAnalytics:
    key: str
    start: date = strawberry.field(name="from")
    end: date = strawberry.field(name="to")
    size: int = strawberry.field(description="members now")
    days: list[SegmentDay]
    entered: int
    left: int
    average_points_balance: float | None = strawberry.field(description="of today's members")
    purchases_per_member: float | None = strawberry.field(
        description="today's members' purchases in the range"
    )
    purchase_amount_per_member: str | None = strawberry.field(description="a decimal, like amounts")
    conversion: SegmentConversion
    messages: list[SegmentMessages]
    average_transaction_value: str | None = strawberry.field(
        default=None,
        description="today's members' purchase amount in the range over their purchases with an amount "
        "(a decimal, like amounts)",
    )


@strawberry.type(description="Beyond the contract: members of a segment holding one value of an attribute")
class SegmentBreakdownRow:
    value: JSON | None = strawberry.field(description="the attribute's value; null: missing or null")
    count: int
    share: float = strawberry.field(description="count over the segment's size")


@strawberry.type
class SegmentOverlap:
    a: str
    b: str
    size_a: int
    size_b: int
    both: int
    jaccard: float | None


def _analytics(report: SegmentReport) -> SegmentAnalytics:
    conversion = report.conversion
    amount = report.purchase_amount_per_member
    return SegmentAnalytics(
        key=report.key,
        start=report.start,
        end=report.end,
        size=report.size,
        days=[SegmentDay(day=d.day, size=d.size, entered=d.entered, left=d.left) for d in report.days],
        entered=report.entered,
        left=report.left,
        average_points_balance=report.average_points_balance,
        purchases_per_member=report.purchases_per_member,
        purchase_amount_per_member=None if amount is None else str(amount),
        average_transaction_value=(
            None if report.average_transaction_value is None else str(report.average_transaction_value)
        ),
        conversion=SegmentConversion(
            goal_event_type=conversion.goal_event_type,
            days=conversion.days,
            entered=conversion.entered,
            converted=conversion.converted,
            rate=conversion.rate,
        ),
        messages=[
            SegmentMessages(
                template=m.template,
                channel=None if m.channel is None else m.channel.value,
                created=m.created,
                sent=m.sent,
                suppressed=m.suppressed,
                opened=m.opened,
                clicked=m.clicked,
                converted=m.converted,
            )
            for m in report.messages
        ],
    )


def _overlap(found: Overlap) -> SegmentOverlap:
    return SegmentOverlap(
        a=found.a, b=found.b, size_a=found.size_a, size_b=found.size_b, both=found.both, jaccard=found.jaccard
    )


@strawberry.type
class AnalyticsQueries:
    @strawberry.field(
        description="Beyond the contract. A segment's daily size, entries and exits, its members' "
        "balance and purchases, and conversion to goalEventType within conversionDays of entering"
    )
    async def segment_analytics(
        self,
        info: Info,
        key: str,
        from_: Annotated[date, strawberry.argument(name="from")],
        to: date,
        goal_event_type: str = "purchase",
        conversion_days: int = 7,
    ) -> SegmentAnalytics:
        program_id = info.context.principal.program_id
        report = await info.context.services.analytics.report(
            program_id, key, from_, to, goal_event_type, conversion_days
        )
        return _analytics(report)

    @strawberry.field(
        description="Beyond the contract. A segment's composition by an attribute (dotted path): each "
        "value with its members and their share, most frequent first, at most 100 values"
    )
    async def segment_breakdown(self, info: Info, key: str, path: str) -> list[SegmentBreakdownRow]:
        program_id = info.context.principal.program_id
        rows = await info.context.services.analytics.breakdown(program_id, key, path)
        return [SegmentBreakdownRow(value=cast(JSON, r.value), count=r.count, share=r.share) for r in rows]

    @strawberry.field(description="Beyond the contract. Members in both segments, and the Jaccard index")
    async def segment_overlap(self, info: Info, a: str, b: str) -> SegmentOverlap:
        program_id = info.context.principal.program_id
        return _overlap(await info.context.services.analytics.overlap(program_id, a, b))
