"""Coupon pools, codes and the till's operations through GraphQL: documents and helpers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from api.runtime import Services
from domain.audit import AuditOutcome, Finding, ProposedAccrual
from domain.db.engine import UnitOfWork
from domain.enums import Verdict
from tests.support.graphql import GraphQLClient

POOL_FIELDS = "key name description discountKind discountValue expiresAt validDays available issued redeemed"
SET_POOL = f"mutation($i: CouponPoolInput!) {{ setCouponPool(input: $i) {{ {POOL_FIELDS} }} }}"
POOL = f"query($k: String!) {{ couponPool(key: $k) {{ {POOL_FIELDS} }} }}"
POOLS = "{ couponPools { key available issued redeemed } }"
GENERATE = """
mutation($p: String!, $pattern: String!, $n: Int!) {
  generateCoupons(poolKey: $p, pattern: $pattern, count: $n) { key available }
}"""
IMPORT = """
mutation($p: String!, $csv: String!) {
  importCoupons(poolKey: $p, csv: $csv) { imported rejected { line message } pool { available } }
}"""
COUPON_FIELDS = "code poolKey poolName status issuedAt expiresAt redeemedAt"
MEMBER_COUPONS = f"""
query($id: String!, $first: Int) {{ member(externalId: $id) {{ coupons(first: $first) {{ {COUPON_FIELDS} }} }} }}"""
VALIDATE = f"""
query($c: String!, $m: String!) {{
  validateCoupon(code: $c, memberExternalId: $m) {{ valid reason message coupon {{ {COUPON_FIELDS} }} }}
}}"""
REDEEM = f"""
mutation($i: RedeemCouponInput!) {{
  redeemCoupon(input: $i) {{ status eventExternalId replayed coupon {{ {COUPON_FIELDS} }} }}
}}"""


def pool_input(key: str = "welcome", **overrides: Any) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Welcome",
        "description": "10 % off your next purchase",
        "discountKind": "PERCENT",
        "discountValue": "10",
        "validDays": 30,
    } | overrides


async def pool_with_codes(
    admin: GraphQLClient, codes: list[str], key: str = "welcome", **overrides: Any
) -> None:
    """A pool holding exactly these codes (imported), issued in this order."""
    await admin.data(SET_POOL, {"i": pool_input(key, **overrides)})
    imported = (await admin.data(IMPORT, {"p": key, "csv": "\n".join(codes)}))["importCoupons"]
    assert (imported["imported"], imported["rejected"]) == (len(codes), [])


async def coupons_of(client: GraphQLClient, member: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await client.data(MEMBER_COUPONS, {"id": member}))["member"]["coupons"]
    return found


def redemption(code: str, member: str, external_id: str, **extra: Any) -> dict[str, Any]:
    return {"i": {"code": code, "memberExternalId": member, "externalId": external_id, **extra}}


async def refusal(client: GraphQLClient, code: str, member: str, external_id: str) -> str:
    """The extensions code redeemCoupon refuses with."""
    error = await client.error(REDEEM, redemption(code, member, external_id))
    return str(error["extensions"]["code"])


SEGMENT = "mutation($i: SegmentInput!) { createSegment(input: $i) { key size } }"
TRIGGERS = """
mutation($k: String!, $t: [SegmentTriggerInput!]!) {
  setSegmentTriggers(segmentKey: $k, triggers: $t) { action couponPoolKey }
}"""
UPSERT = "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }"


async def issue_on_joining(admin: GraphQLClient, pool: str = "welcome") -> None:
    """Every member entering the segment `everyone` (every member) gets a code of the pool."""
    segment = {"key": "everyone", "name": "Everyone", "kind": "DYNAMIC", "rule": "pointsBalance >= 0"}
    await admin.data(SEGMENT, {"i": segment})
    triggers = [{"on": "ENTER", "action": "ISSUE_COUPON", "couponPoolKey": pool}]
    assert (await admin.data(TRIGGERS, {"k": "everyone", "t": triggers}))["setSegmentTriggers"] == [
        {"action": "ISSUE_COUPON", "couponPoolKey": pool}
    ]


async def join(integration: GraphQLClient, *members: str) -> None:
    """Members join one at a time (each entry issues the next code, in join order)."""
    for member in members:
        await integration.data(UPSERT, {"m": [{"externalId": member}]})


class FixedVerdict:
    """An auditor that judges every event alike."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    async def audit(self, uow: UnitOfWork, accruals: Sequence[ProposedAccrual]) -> list[AuditOutcome]:
        findings = (
            () if self.verdict == Verdict.ALLOW else (Finding("test_rule", self.verdict, "on request"),)
        )
        return [AuditOutcome(self.verdict, findings) for _ in accruals]


@contextmanager
def judging(services: Services, verdict: Verdict) -> Iterator[None]:
    """The pipeline's audit answers `verdict` for the duration."""
    auditor = services.events.auditor
    services.events.auditor = FixedVerdict(verdict)
    try:
        yield
    finally:
        services.events.auditor = auditor
