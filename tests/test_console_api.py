"""What the console needs from the API beyond the contract: the preview's sample and overlaps,
and a member's events and segment changes for its timeline."""

from __future__ import annotations

from datetime import timedelta

from tests.support import ShiftableClock
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
