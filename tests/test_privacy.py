"""Erasure and export (DESIGN.md, "Privacy and governance"; docs/privacy.md) through GraphQL."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api.runtime import Services
from domain.enums import AccrualStatus
from domain.models import AuditEntry, Event, EventAggregate, LedgerEntry, Member
from tests.support import ShiftableClock
from tests.support.cli import cli_environment, loyalty
from tests.support.events import RECORD, UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture, admin_token, new_program
from tests.support.leaderboards import board, feed
from tests.support.locks import waiting_on_a_lock
from tests.support.privacy import ERASE, erase, export, redis_mentioning, rows_mentioning
from tests.support.segments import create, members_of, set_triggers

TOKEN = "mutation($m: String!) { issueMemberToken(memberExternalId: $m) { token } }"
ME = "{ me { externalId } }"
RECOMPUTE = "mutation { recomputeSegments }"
CHANGES = "query($k: String!) { segment(key: $k) { changes(first: 100) { memberExternalId change } } }"
ADJUST = """
mutation($m: String!, $k: String!) {
  adjustPoints(memberExternalId: $m, points: 15, reason: "goodwill", idempotencyKey: $k) { points }
}"""


def _unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:12]}"


def _purchase(member: str, external_id: str, amount: str, at: datetime, **properties: Any) -> dict[str, Any]:
    return {
        "externalId": external_id,
        "memberExternalId": member,
        "type": "purchase",
        "occurredAt": at.isoformat(),
        "amount": amount,
        "properties": properties or None,
    }


async def _record(client: GraphQLClient, *events: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = (await client.data(RECORD, {"e": list(events)}))["recordEvents"][
        "results"
    ]
    return results


async def _program_totals(services: Services, program_id: int) -> tuple[int, list[tuple[Any, ...]]]:
    """The program's posted ledger sum and its day buckets (member ids left out: erasure keeps them too)."""
    async with services.db.read() as session:
        posted = (
            await session.execute(
                select(func.coalesce(func.sum(LedgerEntry.points), 0)).where(
                    LedgerEntry.program_id == program_id, LedgerEntry.status == AccrualStatus.POSTED.value
                )
            )
        ).scalar_one()
        buckets = (
            await session.execute(
                select(
                    EventAggregate.event_type,
                    EventAggregate.day,
                    EventAggregate.count,
                    EventAggregate.amount_sum,
                    EventAggregate.member_id,
                )
                .where(EventAggregate.program_id == program_id)
                .order_by(EventAggregate.member_id, EventAggregate.event_type, EventAggregate.day)
            )
        ).all()
    return int(posted), [tuple(row) for row in buckets]


async def _member_id(services: Services, program_id: int, pseudonym_or_id: str) -> int:
    async with services.db.read() as session:
        found = (
            await session.execute(
                select(Member.id).where(
                    Member.program_id == program_id, Member.external_id == pseudonym_or_id
                )
            )
        ).scalar_one()
    return int(found)


async def _pseudonym(services: Services, program_id: int) -> str:
    """The target of the program's eraseMember audit entry: the pseudonym."""
    async with services.db.read() as session:
        target = (
            await session.execute(
                select(AuditEntry.target).where(
                    AuditEntry.program_id == program_id, AuditEntry.action == "eraseMember"
                )
            )
        ).scalar_one()
    assert target is not None
    return target


@pytest.fixture
def now(clock: ShiftableClock) -> datetime:
    return clock.now()


async def test_erasure_forgets_the_member_and_keeps_every_sum(
    services: Services,
    client: httpx.AsyncClient,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    now: datetime,
) -> None:
    # given three buyers, one of them (the one erased) with personal data everywhere it can go
    ana, bob, cem = _unique("ana"), _unique("bob"), _unique("cem")
    email, city, note = f"{ana}@mail.example", _unique("Kadikoy"), _unique("gift wrap for mum")
    await create(admin, "buyers", "count(purchase) >= 1", appliesTag="buyer")
    await create(admin, "big", "sum(purchase.amount) >= 100")
    await set_triggers(
        admin,
        "buyers",
        [
            {"on": "ENTER", "action": "SEND_MESSAGE", "template": "welcome"},
            {"on": "LEAVE", "action": "AWARD_POINTS", "points": 500, "reason": "come back"},
        ],
    )
    await integration.data(
        UPSERT,
        {
            "m": [
                {"externalId": ana, "attributes": {"email": email, "city": city}, "channels": ["EMAIL"]},
                {"externalId": bob, "attributes": {"city": "Izmir"}, "channels": ["SMS"]},
                {"externalId": cem},
            ]
        },
    )
    day = now - timedelta(days=2)
    results = await _record(
        integration,
        _purchase(ana, f"{ana}-receipt-1", "120.50", day, note=note, receiptId=f"r-{ana}"),
        _purchase(ana, f"{ana}-receipt-2", "30", day + timedelta(hours=1)),
        _purchase(bob, f"{bob}-receipt-1", "200", day),
        _purchase(cem, f"{cem}-receipt-1", "10", day),
    )
    assert {r["status"] for r in results} == {"ACCEPTED"}
    await admin.data(ADJUST, {"m": ana, "k": f"adjust-{ana}"})
    token = (await integration.data(TOKEN, {"m": ana}))["issueMemberToken"]["token"]
    await feed(services)
    assert await members_of(admin, "buyers") == sorted([ana, bob, cem])
    assert await members_of(admin, "big") == sorted([ana, bob])
    before_board = await board(admin)
    before_month = await board(admin, period="MONTHLY", start=None)
    assert before_board["size"] == 3
    posted, buckets = await _program_totals(services, program.id)
    ana_id = await _member_id(services, program.id, ana)

    # when the admin erases her
    await erase(admin, ana)
    await feed(services)

    # then every sum stays, and she is in no segment and on no board
    assert await _program_totals(services, program.id) == (posted, buckets)
    assert await members_of(admin, "buyers") == sorted([bob, cem])
    assert await members_of(admin, "big") == [bob]
    after_board = await board(admin)
    assert after_board["size"] == before_board["size"] - 1
    others = [
        (e["member"]["externalId"], e["score"])
        for e in before_board["top"]
        if e["member"]["externalId"] != ana
    ]
    assert [(e["rank"], e["member"]["externalId"], e["score"]) for e in after_board["top"]] == [
        (rank, member, score) for rank, (member, score) in enumerate(others, start=1)
    ]
    assert (await board(admin, period="MONTHLY"))["size"] == before_month["size"] - 1
    # no row and no Redis key holds her externalId, her attributes or her event properties
    for secret in (ana, email, city, note):
        assert await rows_mentioning(services, secret) == {}, secret
        assert await redis_mentioning(services, secret, ana_id) == [], secret
    # she is found by no externalId, her token is refused, a LEAVE trigger paid her nothing
    assert (await admin.data("query($id: String!) { member(externalId: $id) { externalId } }", {"id": ana}))[
        "member"
    ] is None
    refused = await GraphQLClient(client, token).error(ME)
    assert refused["extensions"]["code"] == "UNAUTHENTICATED"
    # she left through the change log, under her pseudonym: sizes, history and live subscribers follow
    pseudonym = await _pseudonym(services, program.id)
    log = (await admin.data(CHANGES, {"k": "big"}))["segment"]["changes"]
    assert [(c["memberExternalId"], c["change"]) for c in log if c["memberExternalId"] == pseudonym] == [
        (pseudonym, "ENTERED"),
        (pseudonym, "LEFT"),
    ]
    # recomputing (and the time-flip scheduler's evaluation) never puts her back
    await admin.data(RECOMPUTE)
    assert await members_of(admin, "buyers") == sorted([bob, cem])
    assert await _program_totals(services, program.id) == (posted, buckets)


async def test_erasure_is_recorded_under_the_pseudonym_and_the_pseudonym_is_no_name(
    services: Services, program: ProgramFixture, admin: GraphQLClient, integration: GraphQLClient
) -> None:
    ana = _unique("ana")
    await integration.data(UPSERT, {"m": [{"externalId": ana, "attributes": {"plan": "gold"}}]})
    await erase(admin, ana)
    pseudonym = await _pseudonym(services, program.id)
    assert pseudonym.startswith("erased-")
    assert ana not in pseudonym
    async with services.db.read() as session:
        entry = (
            await session.execute(select(AuditEntry).where(AuditEntry.program_id == program.id))
        ).scalar_one()
    assert (entry.actor, entry.action, entry.before, entry.after) == (
        program.admin_email,
        "eraseMember",
        None,
        None,
    )
    # the pseudonym names nobody either: not in lookups, and an upsert of it is refused
    looked_up = await admin.data(
        "query($id: String!) { member(externalId: $id) { externalId } }", {"id": pseudonym}
    )
    assert looked_up["member"] is None
    not_found = await admin.error(ADJUST, {"m": pseudonym, "k": _unique("adjust")})
    assert not_found["extensions"]["code"] == "NOT_FOUND"
    refused = await integration.error(UPSERT, {"m": [{"externalId": pseudonym}]})
    assert refused["extensions"]["code"] == "BAD_USER_INPUT"
    assert "members[0].externalId: names an erased member" in refused["message"]


async def test_erasing_twice_or_an_unknown_member_is_not_found(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    ana = _unique("ana")
    await integration.data(UPSERT, {"m": [{"externalId": ana}]})
    await erase(admin, ana)
    for name in (ana, "nobody-at-all"):
        error = await admin.error("mutation($id: String!) { eraseMember(externalId: $id) }", {"id": name})
        assert error["extensions"]["code"] == "NOT_FOUND"
        assert error["message"] == f"externalId: no member {name!r} in this program"


async def test_a_later_event_under_the_old_external_id_is_an_unknown_member(
    admin: GraphQLClient, integration: GraphQLClient, now: datetime
) -> None:
    ana = _unique("ana")
    await integration.data(UPSERT, {"m": [{"externalId": ana}]})
    first = _purchase(ana, _unique("e"), "10", now - timedelta(hours=1))
    assert (await _record(integration, first))[0]["status"] == "ACCEPTED"
    await erase(admin, ana)
    replayed = await _record(integration, {**first, "externalId": _unique("e")})
    assert replayed == [
        {
            "externalId": replayed[0]["externalId"],
            "status": "REJECTED",
            "message": f"memberExternalId: no member {ana!r} in this program",
        }
    ]


async def test_with_auto_create_a_later_event_starts_a_new_member(
    services: Services, client: httpx.AsyncClient, clock: ShiftableClock, now: datetime
) -> None:
    program = await new_program(services, auto_create=True)
    integration = GraphQLClient(client, program.api_key)
    admin = GraphQLClient(client, await admin_token(client, program, clock))
    ana = _unique("ana")
    event = _purchase(ana, _unique("e"), "40", now - timedelta(hours=1))
    assert (await _record(integration, event))[0]["status"] == "ACCEPTED"
    await erase(admin, ana)
    assert (await _record(integration, {**event, "externalId": _unique("e")}))[0]["status"] == "ACCEPTED"
    reborn = await admin.data(
        "query($id: String!) { member(externalId: $id) { externalId pointsBalance ledger { edges { node { points } } } } }",
        {"id": ana},
    )
    pseudonym = await _pseudonym(services, program.id)
    named = await _record(integration, {**event, "externalId": _unique("e"), "memberExternalId": pseudonym})
    assert [(r["status"], r["message"]) for r in named] == [
        ("REJECTED", "memberExternalId: names an erased member")
    ]
    assert reborn["member"] == {
        "externalId": ana,
        "pointsBalance": 40,
        "ledger": {"edges": [{"node": {"points": 40}}]},
    }


async def test_erase_and_export_need_their_scopes(
    services: Services, client: httpx.AsyncClient, integration: GraphQLClient
) -> None:
    ana = _unique("ana")
    await integration.data(UPSERT, {"m": [{"externalId": ana}]})
    refused = await integration.error("mutation($id: String!) { eraseMember(externalId: $id) }", {"id": ana})
    assert refused["extensions"]["code"] == "FORBIDDEN"
    assert "members:erase" in refused["message"]
    refused = await integration.error("query($id: String!) { exportMember(externalId: $id) }", {"id": ana})
    assert refused["extensions"]["code"] == "FORBIDDEN"
    assert "members:export" in refused["message"]


async def test_export_holds_every_event_and_entry_of_the_member(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    now: datetime,
) -> None:
    # given a member with events (one refused by nothing but its type's zero points), entries and tags
    ana, bob = _unique("ana"), _unique("bob")
    await create(admin, "buyers", "count(purchase) >= 1", appliesTag="buyer")
    await integration.data(
        UPSERT,
        {
            "m": [
                {
                    "externalId": ana,
                    "kind": "DEALER",
                    "organizationExternalId": "north",
                    "attributes": {"city": "Bursa"},
                    "channels": ["EMAIL", "PUSH"],
                },
                {"externalId": bob},
            ]
        },
    )
    events = [
        _purchase(ana, _unique("e"), f"{10 + i}.25", now - timedelta(hours=10 - i), basket=i)
        for i in range(7)
    ]
    events.append({**_purchase(bob, _unique("e"), "99", now - timedelta(hours=1))})
    await _record(integration, *events)
    await admin.data(ADJUST, {"m": ana, "k": _unique("adjust")})

    # when it is exported
    document = await export(admin, ana)

    # then it holds the profile and exactly the member's events and entries, as the database has them
    assert document["format"] == "loyalty.member-export/1"
    assert document["program"] == program.key
    assert document["member"]["externalId"] == ana
    assert document["member"]["attributes"] == {"city": "Bursa"}
    assert document["member"]["channels"] == ["EMAIL", "PUSH"]
    assert document["member"]["organization"] == {"externalId": "north", "name": "north"}
    assert document["tags"] == [{"key": "buyer", "source": "buyers", "since": document["tags"][0]["since"]}]
    assert [s["key"] for s in document["segments"]] == ["buyers"]
    assert [(h["segment"], h["change"]) for h in document["segmentHistory"]] == [("buyers", "ENTERED")]
    async with services.db.read() as session:
        member_id = await _member_id(services, program.id, ana)
        stored_events = (
            await session.execute(
                select(Event.external_id, Event.type, Event.amount, Event.properties, Event.status)
                .where(Event.member_id == member_id)
                .order_by(Event.id)
            )
        ).all()
        stored_entries = (
            await session.execute(
                select(LedgerEntry.id, LedgerEntry.points, LedgerEntry.kind, LedgerEntry.status)
                .where(LedgerEntry.member_id == member_id)
                .order_by(LedgerEntry.id)
            )
        ).all()
    assert len(stored_events) == 7
    assert len(stored_entries) == 8
    assert [
        (e["externalId"], e["type"], e["amount"], e["properties"], e["status"]) for e in document["events"]
    ] == [(x, t, format(a, "f"), p, s) for x, t, a, p, s in stored_events]
    assert [(e["id"], e["points"], e["kind"], e["status"]) for e in document["ledger"]] == [
        tuple(row) for row in stored_entries
    ]
    assert document["member"]["pointsBalance"] == sum(e["points"] for e in document["ledger"])


async def test_export_reads_long_histories_in_pages(
    services: Services, admin: GraphQLClient, integration: GraphQLClient, now: datetime, monkeypatch: Any
) -> None:
    import domain.members.export as exporting

    monkeypatch.setattr(exporting, "PAGE", 3)
    ana = _unique("ana")
    await integration.data(UPSERT, {"m": [{"externalId": ana}]})
    events = [_purchase(ana, f"{ana}-{i:02d}", "1", now - timedelta(minutes=60 - i)) for i in range(10)]
    await _record(integration, *events)
    document = await export(admin, ana)
    assert [e["externalId"] for e in document["events"]] == [e["externalId"] for e in events]
    assert len(document["ledger"]) == 10


async def test_an_erased_member_exports_as_not_found(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    ana = _unique("ana")
    await integration.data(UPSERT, {"m": [{"externalId": ana}]})
    await erase(admin, ana)
    error = await admin.error("query($id: String!) { exportMember(externalId: $id) }", {"id": ana})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        f"externalId: no member {ana!r} in this program",
    )


async def test_the_cli_writes_the_same_document_and_names_what_is_missing(
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
    now: datetime,
    tmp_path: Path,
) -> None:
    ana = _unique("ana")
    await integration.data(UPSERT, {"m": [{"externalId": ana, "attributes": {"city": "Van"}}]})
    await _record(integration, _purchase(ana, _unique("e"), "12", now - timedelta(hours=2), lane=4))
    env = cli_environment(tmp_path) | {"LOYALTY_DATABASE_URL": services.settings.database_url}
    output = tmp_path / "exports" / f"{ana}.json"

    written = await asyncio.to_thread(
        loyalty, env, "members", "export", "--program", program.key, "--member", ana, "--output", str(output)
    )

    assert written.returncode == 0, written.stderr
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    from_cli = json.loads(output.read_text())
    from_api = await export(admin, ana)
    assert {k: v for k, v in from_cli.items() if k != "exportedAt"} == {
        k: v for k, v in from_api.items() if k != "exportedAt"
    }
    missing = await asyncio.to_thread(
        loyalty, env, "members", "export", "--program", program.key, "--member", "nobody-here"
    )
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == "loyalty: NOT_FOUND: externalId: no member 'nobody-here' in this program\n"


async def test_two_concurrent_erasures_erase_once(
    services: Services, program: ProgramFixture, admin: GraphQLClient, integration: GraphQLClient
) -> None:
    ana = _unique("ana")
    await integration.data(UPSERT, {"m": [{"externalId": ana}]})
    bodies = await asyncio.gather(*(admin.execute(ERASE, {"id": ana}) for _ in range(2)))
    outcomes = sorted(
        "erased" if "errors" not in body else body["errors"][0]["extensions"]["code"] for body in bodies
    )
    assert outcomes == ["NOT_FOUND", "erased"]
    async with services.db.read() as session:
        entries = await session.scalar(
            select(func.count()).where(
                AuditEntry.program_id == program.id, AuditEntry.action == "eraseMember"
            )
        )
    assert entries == 1


async def test_an_event_waiting_on_the_row_of_a_member_being_erased_is_rejected(
    services: Services, integration: GraphQLClient
) -> None:
    """The batch looked the member up before the erasure committed, then waited for its row: once the
    erasure commits, the batch sees the erased row and refuses the event instead of recording it."""
    if services.db.dialect != "postgresql":
        pytest.skip("SQLite has one writer: a batch never interleaves with an erasure")
    ana = _unique("ana")
    await integration.data(UPSERT, {"m": [{"externalId": ana}]})
    at = services.clock.now() - timedelta(minutes=1)
    async with services.db.unit_of_work() as uow:  # stands in for an erasure holding the row
        await uow.session.execute(select(Member).where(Member.external_id == ana).with_for_update())
        batch = asyncio.create_task(_record(integration, _purchase(ana, _unique("e"), "10", at)))
        await waiting_on_a_lock(services)
        member = (await uow.session.execute(select(Member).where(Member.external_id == ana))).scalar_one()
        member.erased_at = services.clock.now()
    [result] = await batch
    assert (result["status"], result["message"]) == ("REJECTED", "memberExternalId: names an erased member")
