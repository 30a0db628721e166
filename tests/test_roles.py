"""Roles and declarative authorization (docs/security.md, Roles): every role against every query
and mutation through GraphQL, the policy table against the served schema, and managing admins."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import strawberry
from sqlalchemy import select

from api.authorization import authorize_root_fields
from api.runtime import Services
from api.schema import build_schema
from domain.auth.policy import OPERATIONS
from domain.auth.principal import Principal, PrincipalKind
from domain.auth.roles import ROLE_SCOPES, roles_holding
from domain.enums import AdminRole
from domain.errors import Forbidden
from domain.models import AdminUser, AuditEntry
from gamification.leaderboards.boards import BoardDefinition, BoardMetric, BoardScope
from gamification.periods import PeriodKind
from tests.support import ShiftableClock
from tests.support.fraud import reviewer
from tests.support.graphql import GraphQLClient, ProgramFixture, log_in, new_program
from tests.support.roles import admin_with_role, minimal_document, root_fields

CREATE = "mutation($e: String!, $r: AdminRole!) { createAdmin(email: $e, role: $r) { email role password totpProvisioningUri } }"
SET_ROLE = "mutation($e: String!, $r: AdminRole!) { setAdminRole(email: $e, role: $r) { email role } }"
ADMINS = "{ admins { email role } }"
CURRENT = "{ currentAdmin { email role } }"


def _a(role: AdminRole) -> str:
    return f"an {role.value}" if role.value[0] in "AEIOU" else f"a {role.value}"


def expected_refusal(role: AdminRole, operation: str) -> str | None:
    """What the policy table says `role` gets for `operation`: None when allowed."""
    needed = OPERATIONS[operation]
    if needed.members_only:
        return f"{operation} needs a member token"
    if needed.scope is not None and needed.scope not in ROLE_SCOPES[role]:
        holders = ", ".join(roles_holding(needed.scope))
        return f"{operation} needs the {needed.scope.value} scope (roles {holders}); this admin is {_a(role)}"
    return None


@pytest.mark.parametrize("role", list(AdminRole))
async def test_every_role_against_every_operation(
    services: Services,
    client: httpx.AsyncClient,
    program: ProgramFixture,
    clock: ShiftableClock,
    role: AdminRole,
) -> None:
    # given an admin of the role, logged in
    caller = await admin_with_role(services, client, program, clock, role)
    operations = root_fields(build_schema()._schema)
    # logout ends the session: it goes last
    for name in sorted(operations, key=lambda n: (n == "logout", n)):
        operation, field = operations[name]
        # when it sends the smallest valid document calling the operation
        body = await caller.execute(minimal_document(operation, name, field))
        errors: list[dict[str, Any]] = body.get("errors") or []
        refused = [e for e in errors if e["extensions"]["code"] == "FORBIDDEN"]
        refusal = expected_refusal(role, name)
        # then it is refused, naming the scope and the roles holding it, or it is not FORBIDDEN at all
        if refusal is not None:
            assert [e["message"] for e in refused] == [refusal], (name, body)
        elif name == "verifyTotp":  # allowed: the dummy code is wrong
            assert [e["extensions"].get("reason") for e in refused] == ["TOTP_INVALID"], body
        else:
            assert refused == [], (role, name, body)


async def test_a_refusal_names_the_scope_and_the_roles_that_hold_it(
    services: Services, client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    viewer = await admin_with_role(services, client, program, clock, AdminRole.VIEWER)
    update = (
        'mutation { updateSegment(input: {key: "vip", name: "VIP", kind: DYNAMIC, rule: "true"}) { key } }'
    )
    error = await viewer.error(update)
    assert error["message"] == (
        "updateSegment needs the segments:write scope (roles OWNER, ADMIN, MARKETER); this admin is a VIEWER"
    )
    assert error["extensions"] == {
        "code": "FORBIDDEN",
        "scope": "segments:write",
        "roles": "OWNER,ADMIN,MARKETER",
    }


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        # a marketer runs segments, boards, challenges and rewards, but not earning rules or points
        (
            AdminRole.MARKETER,
            ["setReward", "setChallenge", "setLeaderboard", "setTierLadder", "createPromotion"],
            ["setEarningRule", "adjustPoints", "createWebhookEndpoint", "setProgramTimezone"],
        ),
        # a reviewer decides held accruals and reads
        (AdminRole.REVIEWER, ["approveAccrual", "reviewQueue", "segments"], ["createSegment", "setReward"]),
        # a viewer only reads
        (
            AdminRole.VIEWER,
            ["segments", "members", "leaderboards", "program"],
            ["approveAccrual", "setChallenge", "admins", "updatePromotion"],
        ),
        (AdminRole.ADMIN, ["setEarningRule", "admins", "setFraudRule", "adjustPoints"], []),
    ],
)
def test_the_roles_are_those_of_the_design(role: AdminRole, allowed: list[str], refused: list[str]) -> None:
    """Spot checks of DESIGN.md's sentences, written out by hand, against the generated matrix."""
    assert [op for op in allowed if expected_refusal(role, op) is not None] == []
    assert [op for op in refused if expected_refusal(role, op) is None] == []


def test_every_served_root_field_has_an_authorization_rule() -> None:
    schema = build_schema()._schema
    served = set(root_fields(schema))
    assert schema.subscription_type is not None
    served |= set(schema.subscription_type.fields)
    assert served - set(OPERATIONS) == set(), "add these to domain/auth/policy.py OPERATIONS"
    assert set(OPERATIONS) - served == set(), "entries for fields the schema no longer has"


class _Context:
    principal = Principal(
        PrincipalKind.ADMIN, 1, 1, "admin:o@example.com", ROLE_SCOPES[AdminRole.OWNER], role=AdminRole.OWNER
    )


async def test_a_root_field_without_a_rule_is_refused() -> None:
    """The mechanism fails closed: even an OWNER cannot call a field the table does not know."""

    @strawberry.type
    class Query:
        @strawberry.field
        async def unlisted(self) -> int:
            return 1

        @strawberry.field
        async def segments(self) -> int:
            return 2

    authorize_root_fields(Query)
    result = await strawberry.Schema(query=Query).execute("{ unlisted segments }", context_value=_Context())
    assert result.data is None or result.data.get("segments") == 2
    assert [e.message for e in result.errors or []] == [
        "unlisted has no authorization rule (domain/auth/policy.py)"
    ]


async def test_an_api_key_cannot_manage_admins_even_with_the_scope(
    services: Services, client: httpx.AsyncClient, program: ProgramFixture
) -> None:
    key = await services.auth.create_api_key(program.key, "root", frozenset(ROLE_SCOPES[AdminRole.OWNER]))
    error = await GraphQLClient(client, key.key).error(ADMINS)
    assert (error["extensions"]["code"], error["message"]) == (
        "FORBIDDEN",
        "admins needs an admin session; API keys cannot call it",
    )


async def _audit(services: Services, program: ProgramFixture, action: str) -> list[tuple[Any, ...]]:
    async with services.db.read() as session:
        rows = await session.execute(
            select(AuditEntry.actor, AuditEntry.target, AuditEntry.before, AuditEntry.after)
            .where(AuditEntry.program_id == program.id, AuditEntry.action == action)
            .order_by(AuditEntry.id)
        )
        return [tuple(row) for row in rows]


async def test_an_owner_creates_an_admin_whose_credentials_log_in(
    services: Services,
    client: httpx.AsyncClient,
    program: ProgramFixture,
    clock: ShiftableClock,
    admin: GraphQLClient,
) -> None:
    # when the program's OWNER creates a marketer
    created = (await admin.data(CREATE, {"e": " Mia@Example.com", "r": "MARKETER"}))["createAdmin"]

    # then its credentials are shown once, and they log in as a MARKETER
    assert (created["email"], created["role"]) == ("mia@example.com", "MARKETER")
    uri = urlparse(created["totpProvisioningUri"])
    assert uri.scheme == "otpauth"
    secret = parse_qs(uri.query)["secret"][0]
    mia = GraphQLClient(client, await log_in(client, "mia@example.com", created["password"], secret, clock))
    assert (await mia.data(CURRENT))["currentAdmin"] == {"email": "mia@example.com", "role": "MARKETER"}
    # and the program's admins list it
    assert (await admin.data(ADMINS))["admins"] == sorted(
        [{"email": program.admin_email, "role": "OWNER"}, {"email": "mia@example.com", "role": "MARKETER"}],
        key=lambda a: a["email"],
    )
    # and the creation is audited with who did it
    assert await _audit(services, program, "createAdmin") == [
        (program.admin_email, "mia@example.com", None, {"role": "MARKETER"})
    ]
    # and a second admin with that e-mail is a CONFLICT
    again = await admin.error(CREATE, {"e": "mia@example.com", "r": "VIEWER"})
    assert (again["extensions"]["code"], again["message"]) == (
        "CONFLICT",
        "email: an admin 'mia@example.com' already exists",
    )


async def test_only_an_owner_makes_or_changes_an_owner(
    services: Services,
    client: httpx.AsyncClient,
    program: ProgramFixture,
    clock: ShiftableClock,
    admin: GraphQLClient,
) -> None:
    boss = await admin_with_role(services, client, program, clock, AdminRole.ADMIN, "boss@example.com")
    await admin.data(CREATE, {"e": "vic@example.com", "r": "VIEWER"})
    refusals = [
        (
            await boss.error(CREATE, {"e": "new@example.com", "r": "OWNER"}),
            "creating an OWNER ('new@example.com')",
        ),
        (
            await boss.error(SET_ROLE, {"e": "vic@example.com", "r": "OWNER"}),
            "changing 'vic@example.com' from VIEWER to OWNER",
        ),
        (
            await boss.error(SET_ROLE, {"e": program.admin_email, "r": "VIEWER"}),
            f"changing '{program.admin_email}' from OWNER to VIEWER",
        ),
    ]
    for error, what in refusals:
        assert (error["extensions"]["code"], error["message"]) == (
            "FORBIDDEN",
            f"{what} needs an OWNER; this admin is an ADMIN",
        )
    # but an ADMIN manages the other roles, and an OWNER makes owners
    assert (await boss.data(SET_ROLE, {"e": "vic@example.com", "r": "REVIEWER"}))["setAdminRole"][
        "role"
    ] == "REVIEWER"
    assert (await admin.data(SET_ROLE, {"e": "vic@example.com", "r": "OWNER"}))["setAdminRole"][
        "role"
    ] == "OWNER"
    assert await _audit(services, program, "setAdminRole") == [
        ("boss@example.com", "vic@example.com", {"role": "VIEWER"}, {"role": "REVIEWER"}),
        (program.admin_email, "vic@example.com", {"role": "REVIEWER"}, {"role": "OWNER"}),
    ]


async def test_an_admin_manages_only_its_own_programs_admins(
    services: Services, client: httpx.AsyncClient, program: ProgramFixture, admin: GraphQLClient
) -> None:
    other = await new_program(services)
    error = await admin.error(SET_ROLE, {"e": other.admin_email, "r": "VIEWER"})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        f"email: no admin '{other.admin_email}' in this program",
    )
    assert {a["email"] for a in (await admin.data(ADMINS))["admins"]} == {program.admin_email}


async def test_the_last_owner_cannot_be_demoted(program: ProgramFixture, admin: GraphQLClient) -> None:
    error = await admin.error(SET_ROLE, {"e": program.admin_email, "r": "ADMIN"})
    assert (error["extensions"], error["message"]) == (
        {"code": "CONFLICT", "reason": "LAST_OWNER"},
        f"email: '{program.admin_email}' is the program's last OWNER; make another admin an OWNER first",
    )
    assert (await admin.data(CURRENT))["currentAdmin"]["role"] == "OWNER"


async def test_two_owners_demoting_themselves_at_once_leave_one_owner(
    services: Services,
    client: httpx.AsyncClient,
    program: ProgramFixture,
    clock: ShiftableClock,
    admin: GraphQLClient,
) -> None:
    """Each sees two OWNERs before it writes, unless role changes serialize on the program."""
    second = await admin_with_role(services, client, program, clock, AdminRole.OWNER, "second@example.com")
    owners = {program.admin_email: admin, "second@example.com": second}
    for round_ in range(4):
        # when both OWNERs demote themselves concurrently
        results = await asyncio.gather(
            *(caller.execute(SET_ROLE, {"e": email, "r": "ADMIN"}) for email, caller in owners.items())
        )
        # then exactly one succeeds and the other is refused as the last OWNER
        codes = sorted(
            r["errors"][0]["extensions"].get("reason", "") if "errors" in r else "ok" for r in results
        )
        assert codes == ["LAST_OWNER", "ok"], (round_, results)
        async with services.db.read() as session:
            roles = dict(
                (
                    await session.execute(
                        select(AdminUser.email, AdminUser.role).where(AdminUser.program_id == program.id)
                    )
                ).all()
            )
        assert sorted(roles.values()) == ["ADMIN", "OWNER"]
        # (the survivor makes the other an OWNER again for the next round)
        survivor = next(email for email, role in roles.items() if role == "OWNER")
        demoted = next(email for email in owners if email != survivor)
        await owners[survivor].data(SET_ROLE, {"e": demoted, "r": "OWNER"})


async def test_a_demoted_admin_loses_the_scopes_at_once(
    services: Services,
    client: httpx.AsyncClient,
    program: ProgramFixture,
    clock: ShiftableClock,
    admin: GraphQLClient,
) -> None:
    marketer = await admin_with_role(services, client, program, clock, AdminRole.MARKETER, "mark@example.com")
    reward = 'mutation { setReward(input: {key: "mug", name: "Mug", costPoints: 10, stock: 1}) { key } }'
    assert (await marketer.data(reward))["setReward"] == {"key": "mug"}
    await admin.data(SET_ROLE, {"e": "mark@example.com", "r": "VIEWER"})
    error = await marketer.error(reward)
    assert error["message"] == (
        "setReward needs the marketing:write scope (roles OWNER, ADMIN, MARKETER); this admin is a VIEWER"
    )


async def test_policy_beyond_scopes_holds_for_every_caller_of_the_services(
    services: Services, program: ProgramFixture
) -> None:
    """Not only the API: the services themselves refuse a member a private board and a reviewer
    without a recent TOTP check."""
    # given a private board
    staff = BoardDefinition(
        "staff",
        "Staff",
        BoardMetric.POINTS,
        None,
        BoardScope.PROGRAM,
        None,
        (PeriodKind.ALL_TIME,),
        public=False,
    )
    await services.leaderboards.set_board(program.id, staff, actor="test")
    # when a member reads it through the service, then it is FORBIDDEN
    with pytest.raises(Forbidden, match="leaderboard 'staff' is not public"):
        await services.leaderboards.view(program.id, "staff", PeriodKind.ALL_TIME, member_id=1)
    with pytest.raises(Forbidden, match="a member token reads its own organization's ranking"):
        await services.leaderboards.view(program.id, "points", PeriodKind.ALL_TIME, None, "acme", member_id=1)
    # and an admin reads it
    assert (await services.leaderboards.view(program.id, "staff", PeriodKind.ALL_TIME)).board.key == "staff"

    # when a reviewer decides without a step-up, or an API key decides, then it is FORBIDDEN
    stale = replace(reviewer(program.id, services.clock), totp_verified_at=None)
    with pytest.raises(Forbidden, match="TOTP check") as refused:
        await services.review.approve(stale, 1)
    assert refused.value.details == {"reason": "STEP_UP_REQUIRED"}
    key = Principal(PrincipalKind.API_KEY, program.id, 1, "apikey:pos", ROLE_SCOPES[AdminRole.OWNER])
    with pytest.raises(Forbidden, match="only an admin can decide on held accruals"):
        await services.review.reject(key, 1, "no")
