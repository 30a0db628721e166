"""What the console needs from the API beyond the contract: the preview's sample and overlaps,
and a member's events and segment changes for its timeline."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from api.runtime import Services
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.models import SegmentMembership
from domain.segments.service import PREVIEW_SAMPLE, SegmentDraft
from domain.settings import Settings
from tests.support import Harness, ShiftableClock, private_services
from tests.support.events import event, join, record_accepted
from tests.support.graphql import GraphQLClient
from tests.support.segments import create

PREVIEW = """query($r: String!) { previewSegment(rule: $r) {
  size sample { externalId } overlaps { segmentKey both } } }"""
TIMELINE = """query($m: String!, $n: Int) { member(externalId: $m) {
  events(first: $n) { externalId type occurredAt amount status pointsAwarded }
  segmentChanges(first: $n) { segmentKey memberExternalId change cursor } } }"""


async def test_a_preview_shows_ten_members_and_its_overlap_with_each_segment(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given 12 buyers (m00..m11, joined in that order), 3 of them big spenders, and a VIP segment of m11
    members = [f"m{i:02}" for i in range(12)]
    await join(integration, *members)
    await record_accepted(
        integration,
        [event(m, "purchase", clock.now(), "150" if i < 3 else "5") for i, m in enumerate(members)],
    )
    await create(admin, "big", "sum(purchase.amount) >= 100")
    await create(admin, "small", "sum(purchase.amount) < 100")
    await create(admin, "nobody", "count(visit) >= 1")

    # when a rule selecting every buyer is previewed
    preview = (await admin.data(PREVIEW, {"r": "count(purchase) >= 1"}))["previewSegment"]

    # then it counts all 12, shows the first 10 by id, and the overlap with each segment sharing members
    assert preview["size"] == 12
    assert [m["externalId"] for m in preview["sample"]] == members[:10]
    assert preview["overlaps"] == [{"segmentKey": "small", "both": 9}, {"segmentKey": "big", "both": 3}]

    # and a rule selecting nobody has no sample and no overlap
    empty = (await admin.data(PREVIEW, {"r": "count(visit) >= 1"}))["previewSegment"]
    assert empty == {"size": 0, "sample": [], "overlaps": []}


async def test_a_members_timeline_lists_its_events_and_segment_changes_newest_first(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given a member with three purchases over three days, entering then leaving "small"
    await create(admin, "small", "sum(purchase.amount) < 100")
    await create(admin, "big", "sum(purchase.amount) >= 100")
    await join(integration, "ana", "bo")
    start = clock.now() - timedelta(days=3)
    purchases = [
        event("ana", "purchase", start + timedelta(days=d), amount) for d, amount in ((0, "10"), (1, "20"))
    ]
    await record_accepted(integration, purchases)
    late = event("ana", "purchase", start + timedelta(days=2), "90")
    await record_accepted(integration, [late, event("bo", "purchase", start, "1")])

    # when the timeline is read
    member = (await admin.data(TIMELINE, {"m": "ana", "n": 50}))["member"]

    # then the events come newest first, with their amount and status, and no one else's
    assert [(e["externalId"], e["amount"], e["status"]) for e in member["events"]] == [
        (late["externalId"], "90", "ACCEPTED"),
        (purchases[1]["externalId"], "20", "ACCEPTED"),
        (purchases[0]["externalId"], "10", "ACCEPTED"),
    ]
    # and the segment changes newest first: big and out of small at the last purchase, small first
    changes = [(c["segmentKey"], c["change"]) for c in member["segmentChanges"]]
    assert sorted(changes[:2]) == [("big", "ENTERED"), ("small", "LEFT")]
    assert changes[2:] == [("small", "ENTERED")]
    assert {c["memberExternalId"] for c in member["segmentChanges"]} == {"ana"}
    cursors = [int(c["cursor"]) for c in member["segmentChanges"]]
    assert cursors == sorted(cursors, reverse=True)

    # and `first` bounds both lists
    one = (await admin.data(TIMELINE, {"m": "ana", "n": 1}))["member"]
    assert [e["externalId"] for e in one["events"]] == [late["externalId"]]
    assert len(one["segmentChanges"]) == 1
    error = await admin.error(TIMELINE, {"m": "ana", "n": 501})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"].startswith("first:")


async def test_a_member_token_reads_only_its_own_timeline(integration: GraphQLClient) -> None:
    await join(integration, "mia", "max")
    token = (await integration.data('mutation { issueMemberToken(memberExternalId: "mia") { token } }'))[
        "issueMemberToken"
    ]["token"]
    member = GraphQLClient(integration.http, token)
    assert (await member.data(TIMELINE, {"m": "mia", "n": 5}))["member"] == {
        "events": [],
        "segmentChanges": [],
    }
    error = await member.error(TIMELINE, {"m": "max", "n": 5})
    assert error["extensions"]["code"] == "FORBIDDEN"


# ---------- what the preview shows is what saving gives ----------

#: 15 members; member i has i % 4 purchases of i units each.
PROPERTY_MEMBERS = 15
EXISTING = (
    SegmentDraft("few", "few", "DYNAMIC", rule="count(purchase) <= 1"),
    SegmentDraft("rich", "rich", "DYNAMIC", rule="sum(purchase.amount) >= 30"),
)
CLAUSES = st.builds(
    "{} {} {}".format,
    st.sampled_from(["count(purchase)", "sum(purchase.amount)", "max(purchase.amount)"]),
    st.sampled_from([">=", "<", "="]),
    st.integers(0, 45),
)
RULES = st.one_of(CLAUSES, st.builds("{} {} {}".format, CLAUSES, st.sampled_from(["and", "or"]), CLAUSES))


@pytest.fixture(scope="module")
def shop(settings: Settings) -> Iterator[tuple[Harness, int]]:
    """A program with the members above and the EXISTING segments, on services of their own."""
    with private_services(settings) as harness:
        services = harness.services

        async def seed() -> int:
            program = await services.programs.create_program(f"pv-{uuid.uuid4().hex[:12]}", "Preview", "B2C")
            ids = [f"m{i:02}" for i in range(PROPERTY_MEMBERS)]
            await services.members.upsert_members(program.id, [MemberUpsert(m) for m in ids])
            now = services.clock.now() - timedelta(hours=1)
            drafts = [
                EventDraft(f"e-{i}-{n}", m, "purchase", now, Decimal(i))
                for i, m in enumerate(ids)
                for n in range(i % 4)
            ]
            await services.events.record_events(program.id, drafts)
            for draft in EXISTING:
                await services.segments.create(program.id, draft, actor="test")
            return program.id

        yield harness, harness.run(seed())


async def members_in(services: Services, segment_id: int) -> set[int]:
    async with services.db.read() as session:
        rows = await session.scalars(
            select(SegmentMembership.member_id).where(SegmentMembership.segment_id == segment_id)
        )
        return set(rows)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rule=RULES)
def test_a_saved_segment_has_the_preview_s_size_sample_and_overlaps(
    shop: tuple[Harness, int], rule: str
) -> None:
    harness, program_id = shop
    services = harness.services

    async def check() -> None:
        preview = await services.segments.preview(program_id, None, rule)
        saved = await services.segments.create(
            program_id, SegmentDraft("previewed", "previewed", "DYNAMIC", rule=rule), actor="test"
        )
        try:
            members = await members_in(services, saved.id)
            existing = {
                s.key: await members_in(services, s.id)
                for s in await services.segments.list_segments(program_id)
                if s.key != "previewed"
            }
        finally:
            await services.segments.delete(program_id, "previewed", actor="test")
        assert preview.size == len(members)
        assert [m.id for m in preview.sample] == sorted(members)[:PREVIEW_SAMPLE]
        assert dict(preview.overlaps) == {k: len(v & members) for k, v in existing.items() if v & members}
        assert [both for _, both in preview.overlaps] == sorted(
            (both for _, both in preview.overlaps), reverse=True
        )

    harness.run(check())
