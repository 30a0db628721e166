"""Referral programs as a client drives them: GraphQL documents and small helpers (tests/test_referrals.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.support.graphql import GraphQLClient

SET_PROGRAM = """
mutation($i: ReferralProgramInput!) {
  setReferralProgram(input: $i) { enabled joinPoints referrerPoints waitDays eventType }
}"""
SIGN_UP = """
mutation($m: [MemberInput!]!) {
  upsertMembers(members: $m) { upserted referrals { index externalId status error message } }
}"""
REFERRAL_FIELDS = (
    "id referrerExternalId referredExternalId code status verdict findings joinPoints "
    "qualifyingEventExternalId dueAt referrerPoints settledAt note"
)
MEMBER = f"""
query($id: String!) {{
  member(externalId: $id) {{
    externalId referralCode pointsBalance
    referredBy {{ {REFERRAL_FIELDS} }}
    referrals {{ {REFERRAL_FIELDS} }}
    segments {{ key }}
    events(first: 20) {{ externalId type status }}
  }}
}}"""
RECORD = """
mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { externalId status pointsAwarded message } } }"""
SET_RULE = """
mutation($r: String!, $s: Boolean, $p: JSON) { setFraudRule(rule: $r, shadow: $s, params: $p) { name } }"""
HELD = f"{{ referrals(status: HELD) {{ items {{ {REFERRAL_FIELDS} }} hasNextPage }} }}"
DECIDE = f"""
mutation($id: ID!, $a: Boolean!, $n: String!) {{
  decideReferral(id: $id, approve: $a, note: $n) {{ {REFERRAL_FIELDS} }}
}}"""

#: 50 points for joining, 200 for the referrer after a 14-day wait on the first purchase.
PROGRAM = {"enabled": True, "joinPoints": 50, "referrerPoints": 200, "waitDays": 14, "eventType": "purchase"}


async def find_member(client: GraphQLClient, external_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (await client.data(MEMBER, {"id": external_id}))["member"]
    return found


async def member(client: GraphQLClient, external_id: str) -> dict[str, Any]:
    """The member, which must exist."""
    found = await find_member(client, external_id)
    assert found is not None, external_id
    return found


async def code_of(client: GraphQLClient, external_id: str) -> str:
    code = (await member(client, external_id))["referralCode"]
    assert isinstance(code, str)
    return code


async def sign_up(client: GraphQLClient, *items: dict[str, Any]) -> dict[str, Any]:
    """upsertMembers with these items; the payload (upserted, referrals)."""
    payload: dict[str, Any] = (await client.data(SIGN_UP, {"m": list(items)}))["upsertMembers"]
    return payload


async def record(client: GraphQLClient, *events: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = (await client.data(RECORD, {"e": list(events)}))["recordEvents"][
        "results"
    ]
    return results


def purchase(external_id: str, member_id: str, at: datetime, amount: str = "30") -> dict[str, Any]:
    return {
        "externalId": external_id,
        "memberExternalId": member_id,
        "type": "purchase",
        "occurredAt": at.isoformat(),
        "amount": amount,
    }


def refund(external_id: str, member_id: str, of: str, at: datetime) -> dict[str, Any]:
    return {
        "externalId": external_id,
        "memberExternalId": member_id,
        "type": "refund",
        "occurredAt": at.isoformat(),
        "properties": {"refundOf": of},
    }
