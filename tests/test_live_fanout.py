"""Fan-out: a live change's payload is executed once per process and distinct selection, and every
subscriber still gets exactly its own selection, of exactly the changes its filter lets through."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from graphql import GraphQLEnumType, GraphQLScalarType, get_named_type, parse
from graphql.execution.executor import Executor
from prometheus_client import REGISTRY
from starlette.types import ASGIApp

from api.fanout import SharedEvent, selection_key
from api.runtime import Services
from api.schema import build_schema
from domain.live.messages import LiveChange
from tests.support.asgi_ws import InProcessSubscription, subscribed
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.outage import until

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
FULL = """
subscription($keys: [String!]) {
  segmentChanges(segmentKeys: $keys) { cursor segmentKey memberExternalId change at }
}"""
NARROW = "subscription { changes: segmentChanges { cursor who: memberExternalId } }"
SHAPED = """
subscription($keys: [String!], $withAt: Boolean!) {
  segmentChanges(segmentKeys: $keys) { cursor at @include(if: $withAt) }
}"""
CREATE = "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }"


def payloads() -> dict[str, float]:
    """loyalty_live_payloads_total by outcome, as this process counts it."""
    return {
        sample.labels["outcome"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "loyalty_live_payloads"
        for sample in metric.samples
        if sample.name == "loyalty_live_payloads_total"
    }


def counted(before: dict[str, float]) -> tuple[float, float]:
    """(executed, shared) since `before`."""
    after = payloads()
    return tuple(after.get(o, 0.0) - before.get(o, 0.0) for o in ("executed", "shared"))  # type: ignore[return-value]


class Executions:
    """Counts the selection sets graphql-core really executes (its Executor.execute_operation)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        execute = Executor.execute_operation

        def counting(executor: Executor[Any], serially: bool | None = None) -> Any:
            self.count += 1
            return execute(executor, serially)

        monkeypatch.setattr(Executor, "execute_operation", counting)


@pytest.fixture
def executions(monkeypatch: pytest.MonkeyPatch) -> Executions:
    return Executions(monkeypatch)


def changes(program: ProgramFixture, first: int, *keys: str) -> list[LiveChange]:
    return [
        LiveChange(first + i, program.id, key, f"m{first + i}", "ENTERED" if i % 2 == 0 else "LEFT", AT)
        for i, key in enumerate(keys)
    ]


def full(change: LiveChange) -> dict[str, Any]:
    return {
        "segmentChanges": {
            "cursor": str(change.id),
            "segmentKey": change.segment_key,
            "memberExternalId": change.member_external_id,
            "change": change.change,
            "at": change.at.isoformat(),
        }
    }


async def listening(services: Services, before: int, more: int) -> None:
    await until(lambda: services.bus.subscriber_count >= before + more, f"{more} subscribers on the bus")


async def received(subscriptions: list[InProcessSubscription], count: int) -> list[list[dict[str, Any]]]:
    return [[await s.next() for _ in range(count)] for s in subscriptions]


@pytest.fixture
async def segments(admin: GraphQLClient) -> None:
    for key in ("vip", "buyers"):
        await admin.data(
            CREATE, {"i": {"key": key, "name": key, "kind": "DYNAMIC", "rule": "count(visit) >= 99"}}
        )


async def test_subscribers_of_one_selection_share_one_execution_per_change(
    services: Services, app: ASGIApp, admin: GraphQLClient, program: ProgramFixture, executions: Executions
) -> None:
    present = services.bus.subscriber_count
    async with subscribed(app, admin.token or "", FULL, [None] * 12) as subscriptions:
        await listening(services, present, 12)
        sent = changes(program, 9_000_001, "vip", "buyers", "vip")
        before, executed = payloads(), executions.count
        services.bus.dispatch(sent)
        got = await received(subscriptions, 3)
        assert executions.count - executed == 3  # once per change, not once per subscriber
        assert counted(before) == (3, 3 * 11)  # the 11 others were handed the result
    assert got == [[full(c) for c in sent]] * 12  # each subscriber: every change, in log order


async def test_two_selections_execute_once_each_and_each_subscriber_gets_its_own_shape(
    services: Services, app: ASGIApp, admin: GraphQLClient, program: ProgramFixture
) -> None:
    present = services.bus.subscriber_count
    async with (
        subscribed(app, admin.token or "", FULL, [None] * 3) as wide,
        subscribed(app, admin.token or "", NARROW, [None] * 3) as narrow,
    ):
        await listening(services, present, 6)
        sent = changes(program, 9_000_101, "vip", "buyers")
        before = payloads()
        services.bus.dispatch(sent)
        got_wide, got_narrow = await received(wide, 2), await received(narrow, 2)
        assert counted(before) == (2 * 2, 2 * 4)
    assert got_wide == [[full(c) for c in sent]] * 3
    assert got_narrow == [[{"changes": {"cursor": str(c.id), "who": c.member_external_id}} for c in sent]] * 3


async def test_filters_still_decide_who_receives_a_change_while_the_payload_is_shared(
    services: Services, app: ASGIApp, admin: GraphQLClient, program: ProgramFixture, segments: None
) -> None:
    """segmentKeys is the filter, not the shape: subscribers to other keys share the payload of a
    change they all receive, and a change outside a subscriber's keys never reaches it."""
    present = services.bus.subscriber_count
    async with subscribed(
        app, admin.token or "", FULL, [{"keys": ["vip"]}, {"keys": ["buyers"]}, {"keys": None}]
    ) as (vip, buyers, every):
        await listening(services, present, 3)
        sent = changes(program, 9_000_201, "vip", "buyers", "vip")
        before = payloads()
        services.bus.dispatch(sent)
        got = [await vip.next(), await vip.next()], [await buyers.next()], await received([every], 3)
        assert counted(before) == (3, 3)  # each change executed once, for whichever of its two came first
        assert vip.pending() == buyers.pending() == 0
    assert got == ([full(sent[0]), full(sent[2])], [full(sent[1])], [[full(c) for c in sent]])


async def test_variables_that_shape_the_payload_make_selections_of_their_own(
    services: Services, app: ASGIApp, admin: GraphQLClient, program: ProgramFixture
) -> None:
    present = services.bus.subscriber_count
    async with subscribed(
        app, admin.token or "", SHAPED, [{"withAt": True}, {"withAt": False}, {"withAt": True}]
    ) as (timed, plain, timed_too):
        await listening(services, present, 3)
        (sent,) = changes(program, 9_000_301, "vip")
        before = payloads()
        services.bus.dispatch([sent])
        got = await timed.next(), await plain.next(), await timed_too.next()
        assert counted(before) == (2, 1)
    with_at = {"segmentChanges": {"cursor": str(sent.id), "at": sent.at.isoformat()}}
    assert got == (with_at, {"segmentChanges": {"cursor": str(sent.id)}}, with_at)


def key_of(query: str, variables: dict[str, Any]) -> object:
    built = Executor.build(build_schema()._schema, parse(query), raw_variable_values=variables)
    assert isinstance(built, Executor), built
    return selection_key(built)


def test_the_selection_key_leaves_out_only_the_root_fields_arguments() -> None:
    assert key_of(FULL, {"keys": ["vip"]}) == key_of(FULL, {"keys": ["buyers"]}) == key_of(FULL, {})
    assert key_of(SHAPED, {"keys": ["a"], "withAt": True}) == key_of(SHAPED, {"withAt": True})
    assert key_of(SHAPED, {"withAt": True}) != key_of(SHAPED, {"withAt": False})
    assert key_of(FULL, {}) != key_of(NARROW, {})
    fragment = "subscription($a: Boolean!) { ...F } fragment F on Subscription { segmentChanges { cursor @skip(if: $a) } }"
    assert key_of(fragment, {"a": True}) != key_of(fragment, {"a": False})


def test_shared_event_types_resolve_every_field_from_the_event_alone() -> None:
    """A shared payload is only right if no field reads the subscriber (context, loaders,
    authorisation): every field of a SharedEvent type is a plain scalar or enum attribute."""
    schema = build_schema()
    shared = SharedEvent.__subclasses__()
    assert shared
    for cls in shared:
        definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
        for field in definition.fields:
            assert field.base_resolver is None, f"{definition.name}.{field.name} has a resolver"
        graphql_type = schema._schema.get_type(definition.name)
        for name, graphql_field in graphql_type.fields.items():  # type: ignore[union-attr]
            leaf = get_named_type(graphql_field.type)
            assert isinstance(leaf, GraphQLScalarType | GraphQLEnumType), f"{definition.name}.{name}"
