"""Segments, membership and tags through the real GraphQL endpoint, with exact member lists."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.support import ShiftableClock
from tests.support.events import UPSERT, event, record_accepted
from tests.support.graphql import GraphQLClient
from tests.support.segments import CREATE, create, members_of

UPDATE = "mutation($i: SegmentInput!) { updateSegment(input: $i) { key rule size } }"
MEMBER = """
query($id: String!) {
  member(externalId: $id) {
    tags { key source } segments { key } lifecycle rfm { r f m label } abcClass
  }
}"""


async def test_cafe_tiers_hold_exactly_the_members_the_rules_describe(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()

    def ago(days: int) -> datetime:
        return now - timedelta(days=days)

    await integration.data(
        UPSERT, {"m": [{"externalId": e} for e in ("vip", "loyal", "new1", "risk", "gone", "idle")]}
    )
    await record_accepted(
        integration,
        [event("vip", "visit", ago(1 + i % 29)) for i in range(26)]
        + [event("vip", "purchase", ago(2), "450"), event("vip", "purchase", ago(3), "400")]
        + [event("loyal", "visit", ago(2 + i)) for i in range(11)]
        + [event("loyal", "purchase", ago(5), "250")]
        + [event("new1", "purchase", ago(8), "12.5")]
        + [event("risk", "purchase", ago(25), "30"), event("risk", "purchase", ago(60), "30")]
        + [event("gone", "purchase", ago(41), "30")],
    )
    tiers = {
        "vip": "count(visit, 30d) >= 25 and avg(purchase.amount, 30d) >= 400",
        "loyal": "count(visit, 30d) > 10 and avg(purchase.amount, 30d) >= 200",
        "potential_loyal": "count(purchase) = 1 and days_since_first(purchase) >= 7",
        "at_risk": "days_since_last(purchase) >= 20 and days_since_last(purchase) < 40",
        "lost": "days_since_last(purchase) >= 40",
    }
    for key, rule in tiers.items():
        created = await create(admin, key, rule)
        assert created["kind"] == "DYNAMIC"
        assert created["rule"] == rule
    assert await members_of(admin, "vip") == ["vip"]
    assert await members_of(admin, "loyal") == ["loyal", "vip"]
    assert await members_of(admin, "potential_loyal") == ["gone", "new1"]
    assert await members_of(admin, "at_risk") == ["risk"]
    assert await members_of(admin, "lost") == ["gone"]
    member = (await admin.data(MEMBER, {"id": "vip"}))["member"]
    assert [s["key"] for s in member["segments"]] == ["loyal", "vip"]


async def test_b2b_dealers_and_b2e_employees(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    for rule in ("single_accrual_cap", "daily_points_cap"):  # dealers' sales are large
        await admin.data(
            "mutation($r: String!) { setFraudRule(rule: $r, enabled: false) { name } }", {"r": rule}
        )
    await integration.data(
        UPSERT,
        {
            "m": [
                {"externalId": "d-ist", "kind": "DEALER", "attributes": {"city": "Istanbul"}},
                {"externalId": "d-trained", "kind": "DEALER", "attributes": {"city": "Istanbul"}},
                {"externalId": "d-ank", "kind": "DEALER", "attributes": {"city": "Ankara"}},
                {"externalId": "e-ideas", "kind": "EMPLOYEE"},
                {"externalId": "e-quiet", "kind": "EMPLOYEE"},
            ]
        },
    )
    events = [event(d, "sale", now - timedelta(days=10), "60000") for d in ("d-ist", "d-trained", "d-ank")]
    events += [event(d, "sale", now - timedelta(days=20), "50000") for d in ("d-ist", "d-trained", "d-ank")]
    events += [event("d-trained", "training_completed", now - timedelta(days=d)) for d in (3, 4)]
    events += [event("e-ideas", "suggestion_submitted", now - timedelta(days=d)) for d in (1, 5, 9)]
    events += [event("e-quiet", "suggestion_submitted", now - timedelta(days=d)) for d in (1, 40, 50)]
    await record_accepted(integration, events)
    await create(
        admin,
        "dealers_low_training",
        'kind = DEALER and city = "Istanbul" and sum(sale.amount, 90d) > 100000 '
        "and count(training_completed, 90d) < 2",
    )
    await create(admin, "idea_champions", "kind = EMPLOYEE and count(suggestion_submitted, 30d) >= 3")
    assert await members_of(admin, "dealers_low_training") == ["d-ist"]
    assert await members_of(admin, "idea_champions") == ["e-ideas"]

    # an attribute change on upsert moves the dealer out at once
    await integration.data(
        UPSERT, {"m": [{"externalId": "d-ist", "kind": "DEALER", "attributes": {"city": "Izmir"}}]}
    )
    assert await members_of(admin, "dealers_low_training") == []


async def test_events_move_members_in_and_tags_follow(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    await integration.data(UPSERT, {"m": [{"externalId": "m1"}, {"externalId": "m2"}]})
    created = await create(admin, "regulars", "count(visit, 7d) >= 3", appliesTag="regular")
    assert created["size"] == 0
    assert created["appliesTag"] == "regular"
    await create(admin, "tagged_regulars", 'has_tag("regular") and in_segment("regulars")')

    await record_accepted(integration, [event("m1", "visit", now - timedelta(hours=h)) for h in (1, 2)])
    assert await members_of(admin, "regulars") == []
    await record_accepted(integration, [event("m1", "visit", now - timedelta(minutes=5))])
    assert await members_of(admin, "regulars") == ["m1"]
    assert await members_of(admin, "tagged_regulars") == ["m1"]
    member = (await admin.data(MEMBER, {"id": "m1"}))["member"]
    assert member["tags"] == [{"key": "regular", "source": "regulars"}]
    tagged = await admin.data('{ members(tag: "regular") { edges { node { externalId } } } }')
    assert [e["node"]["externalId"] for e in tagged["members"]["edges"]] == ["m1"]
    in_segment = await admin.data('{ members(segmentKey: "regulars") { totalCount } }')
    assert in_segment["members"]["totalCount"] == 1

    history = await admin.data(
        '{ segment(key: "regulars") { history { size entered left } changes { memberExternalId change } } }'
    )
    assert history["segment"]["history"][-1] == {"size": 1, "entered": 1, "left": 0}
    assert history["segment"]["changes"] == [{"memberExternalId": "m1", "change": "ENTERED"}]

    # a stricter definition recomputes membership and drops the tag with it
    updated = (
        await admin.data(
            UPDATE,
            {
                "i": {
                    "key": "regulars",
                    "name": "r",
                    "kind": "DYNAMIC",
                    "rule": "count(visit, 7d) >= 4",
                    "appliesTag": "regular",
                }
            },
        )
    )["updateSegment"]
    assert updated["size"] == 0
    assert (await admin.data(MEMBER, {"id": "m1"}))["member"]["tags"] == []
    assert await members_of(admin, "tagged_regulars") == []


async def test_manual_tags_drive_segments_and_segment_tags_cannot_be_removed_by_hand(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": "t1"}]})
    await create(admin, "flagged", 'has_tag("watch")', appliesTag="flagged")
    add = 'mutation { addTag(memberExternalId: "t1", tag: "watch") { tags { key source } } }'
    tags = (await admin.data(add))["addTag"]["tags"]
    assert tags == [{"key": "flagged", "source": "flagged"}, {"key": "watch", "source": "manual"}]
    refused = await admin.error(
        'mutation { removeTag(memberExternalId: "t1", tag: "flagged") { externalId } }'
    )
    assert refused["extensions"]["code"] == "BAD_USER_INPUT"
    assert "applied by segment flagged" in refused["message"]
    removed = await admin.data(
        'mutation { removeTag(memberExternalId: "t1", tag: "watch") { tags { key } } }'
    )
    assert removed["removeTag"]["tags"] == []
    assert await members_of(admin, "flagged") == []


async def test_refusals_name_the_fault_and_store_nothing(admin: GraphQLClient) -> None:
    syntax = await admin.error(
        CREATE, {"i": {"key": "s", "name": "s", "kind": "DYNAMIC", "rule": "count(visit, 30d >= 2"}}
    )
    assert syntax["extensions"]["code"] == "BAD_USER_INPUT"
    assert "column" in syntax["message"]
    tree = {"all": [{"attr": "city", "op": "like", "value": "x"}]}
    bad_op = await admin.error(CREATE, {"i": {"key": "s", "name": "s", "kind": "DYNAMIC", "condition": tree}})
    assert "$.all[0].op" in bad_op["message"]
    assert "unknown operator 'like'" in bad_op["message"]
    missing = await admin.error(
        CREATE, {"i": {"key": "s", "name": "s", "kind": "DYNAMIC", "rule": 'in_segment("nope")'}}
    )
    assert "names no segment" in missing["message"]
    await create(admin, "a", "pointsBalance >= 0")
    await create(admin, "b", 'in_segment("a")')
    cycle = await admin.error(
        UPDATE, {"i": {"key": "a", "name": "a", "kind": "DYNAMIC", "rule": 'in_segment("b")'}}
    )
    assert "cycle" in cycle["message"]
    referenced = await admin.error('mutation { deleteSegment(key: "a") }')
    assert referenced["extensions"]["code"] == "CONFLICT"
    segments = await admin.data("{ segments { key rule } }")
    assert segments["segments"] == [
        {"key": "a", "rule": "pointsBalance >= 0"},
        {"key": "b", "rule": 'in_segment("a")'},
    ]
    assert (await admin.data('mutation { deleteSegment(key: "b") }'))["deleteSegment"] is True


async def test_static_import_reports_bad_rows_by_line_and_is_idempotent(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": f"s{i}"} for i in range(10)]})
    rows = [f"s{i}" for i in range(10)] + ["ghost", "", "a,b"]
    csv = "externalId\n" + "\n".join(rows) + "\n"
    query = 'mutation($c: String!) { importStaticSegment(key: "vips", csv: $c) { imported rejectedRows } }'
    first = (await admin.data(query, {"c": csv}))["importStaticSegment"]
    assert first == {
        "imported": 10,
        "rejectedRows": ["line 12: no member 'ghost' in this program", "line 14: expected one column, got 2"],
    }
    again = (await admin.data(query, {"c": csv}))["importStaticSegment"]
    assert again == first
    assert await members_of(admin, "vips") == sorted(f"s{i}" for i in range(10))
    changes = await admin.data('{ segment(key: "vips") { kind changes(first: 100) { change } } }')
    assert changes["segment"]["kind"] == "STATIC"
    assert len(changes["segment"]["changes"]) == 10


async def test_recompute_scores_rfm_and_abc(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    await integration.data(
        UPSERT, {"m": [{"externalId": "big"}, {"externalId": "small"}, {"externalId": "none"}]}
    )
    await record_accepted(
        integration,
        [
            event("big", "purchase", now - timedelta(days=1), "900"),
            event("small", "purchase", now - timedelta(days=50), "10"),
        ],
    )
    await create(admin, "champions", 'rfm.label = "Champions"', kind="COMPUTED")
    assert await members_of(admin, "champions") == []
    evaluated = (await admin.data("mutation { recomputeSegments }"))["recomputeSegments"]
    assert evaluated == 3
    big = (await admin.data(MEMBER, {"id": "big"}))["member"]
    assert big["abcClass"] == "A"
    assert big["rfm"]["r"] == 5
    assert big["lifecycle"] == "NEW"
    assert (await admin.data(MEMBER, {"id": "none"}))["member"]["rfm"] is None
    assert await members_of(admin, "champions") == ["big"]


async def test_lifecycle_thresholds_are_per_program_and_move_segments_that_read_them(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    joined = (now - timedelta(days=200)).isoformat()
    await integration.data(UPSERT, {"m": [{"externalId": "l1", "joinedAt": joined}]})
    await record_accepted(integration, [event("l1", "purchase", now - timedelta(days=25), "10")])
    await create(admin, "at_risk_stage", 'lifecycle = "AT_RISK"')
    assert (await admin.data(MEMBER, {"id": "l1"}))["member"]["lifecycle"] == "ACTIVE"
    assert await members_of(admin, "at_risk_stage") == []

    query = "mutation($i: LifecycleThresholdsInput!) { setLifecycleThresholds(input: $i) { lifecycleThresholds } }"
    changed = await admin.data(query, {"i": {"newDays": 30, "atRiskDays": 20, "lostDays": 90}})
    assert changed["setLifecycleThresholds"]["lifecycleThresholds"] == [30, 20, 90]
    assert (await admin.data(MEMBER, {"id": "l1"}))["member"]["lifecycle"] == "AT_RISK"
    assert await members_of(admin, "at_risk_stage") == ["l1"]
    refused = await admin.error(query, {"i": {"newDays": 30, "atRiskDays": 100, "lostDays": 90}})
    assert refused["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_preview_counts_members_and_stores_nothing(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    await integration.data(UPSERT, {"m": [{"externalId": "p1"}, {"externalId": "p2"}]})
    await record_accepted(integration, [event("p1", "visit", now - timedelta(hours=1))])
    query = "query($r: String) { previewSegment(rule: $r) { rule condition size } }"
    rule = 'COUNT(visit, 7D) >= 1 AND not has_tag("x")'
    preview = (await admin.data(query, {"r": rule}))["previewSegment"]
    assert preview["rule"] == 'count(visit, 7d) >= 1 and not has_tag("x")'
    assert preview["size"] == 1
    assert preview["condition"]["all"][0]["metric"] == {"event": "visit", "agg": "count", "window": "7d"}
    assert (await admin.data("{ segments { key } }"))["segments"] == []
    missing = await admin.error(query, {"r": 'in_segment("nope")'})
    assert missing["extensions"]["code"] == "BAD_USER_INPUT"
