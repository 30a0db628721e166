"""Members and events sent as the POS integration sends them: GraphQL documents and their helpers.

Two ways to build and record events, by what a test checks:
- `event` numbers its own externalIds; `record_accepted` records a batch and asserts every event
  was ACCEPTED; `record_for` records one member's events and returns their statuses.
- `event_with_id` takes the externalId (and defaults the rest); `record_results` returns each
  event's full outcome, points included.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.graphql import GraphQLClient

UPSERT = "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }"
RECORD = "mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { externalId status message } } }"
RECORD_WITH_POINTS = """
mutation($events: [EventInput!]!) {
  recordEvents(events: $events) { results { externalId status pointsAwarded message } }
}"""
#: The second this module was imported: `event_with_id`'s events occur an hour before it.
NOW = datetime.now(UTC).replace(microsecond=0)

_ids = iter(range(1_000_000))


async def join(integration: GraphQLClient, *external_ids: str) -> None:
    """Upsert members with these externalIds and nothing else."""
    await integration.data(UPSERT, {"m": [{"externalId": e} for e in external_ids]})


def event(
    member: str, kind: str, at: datetime, amount: str | None = None, **properties: Any
) -> dict[str, Any]:
    """An EventInput with a fresh externalId (ev-N)."""
    return {
        "externalId": f"ev-{next(_ids)}",
        "memberExternalId": member,
        "type": kind,
        "occurredAt": at.isoformat(),
        "amount": amount,
        "properties": properties or None,
    }


async def record_accepted(integration: GraphQLClient, events: list[dict[str, Any]]) -> None:
    """Record `events` in one batch; every one must be ACCEPTED."""
    results = (await integration.data(RECORD, {"e": events}))["recordEvents"]["results"]
    assert {r["status"] for r in results} == {"ACCEPTED"}, results


async def record_for(
    client: GraphQLClient, member: str, events: list[tuple[str, datetime]], **extra: Any
) -> list[str]:
    """Record `member`'s events, given as (externalId, occurredAt), in one batch; returns their statuses.

    They are training_completed events unless `type=` says otherwise; `properties=` goes on each.
    """
    data = await client.data(
        RECORD,
        {
            "e": [
                {
                    "externalId": external_id,
                    "memberExternalId": member,
                    "type": extra.get("type", "training_completed"),
                    "occurredAt": at.isoformat(),
                    **({"properties": extra["properties"]} if "properties" in extra else {}),
                }
                for external_id, at in events
            ]
        },
    )
    return [r["status"] for r in data["recordEvents"]["results"]]


def event_with_id(
    external_id: str, member: str = "m1", type_: str = "purchase", **extra: Any
) -> dict[str, Any]:
    """An EventInput: m1's purchase an hour before NOW unless told otherwise (`extra` adds fields)."""
    return {
        "externalId": external_id,
        "memberExternalId": member,
        "type": type_,
        "occurredAt": extra.pop("occurredAt", (NOW - timedelta(hours=1)).isoformat()),
        **extra,
    }


async def record_results(client: GraphQLClient, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """Record `events` in one batch; each one's externalId, status, pointsAwarded and message."""
    data = await client.data(RECORD_WITH_POINTS, {"events": list(events)})
    results: list[dict[str, Any]] = data["recordEvents"]["results"]
    return results
