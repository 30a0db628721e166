"""Webhooks go to public destinations only (SSRF), answers are never echoed, endpoints can be
deactivated and their secrets rotated."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.runtime import Services
from domain.campaigns.delivery import OutboxDelivery
from domain.campaigns.destinations import (
    WEB_PORTS,
    AllowList,
    DestinationPolicy,
    DestinationRefused,
    SystemResolver,
)
from domain.campaigns.messages import LoggingProvider
from domain.campaigns.outbox import DEACTIVATED
from domain.campaigns.service import CampaignService
from domain.campaigns.webhooks import NO_ANSWER, WebhookRequest, WebhookSender
from domain.errors import InvalidInput
from domain.models import WebhookEndpoint
from domain.settings import ConfigurationError, Settings, split_entries
from tests.support import ShiftableClock
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.webhooks import (
    ADD,
    ALLOWED_HOST,
    ENDPOINT,
    PUBLIC_ADDRESS,
    RETRY,
    HostsResolver,
    Receiver,
    deliveries,
    drain,
    hooked_segment,
    webhook_segment,
)

LISTED = "{ webhookEndpoints { key url active } }"
DEACTIVATE = "mutation($k: String!) { deactivateWebhookEndpoint(key: $k) { key active } }"
ROTATE = "mutation($k: String!) { rotateWebhookSecret(key: $k) { secret endpoint { key active } } }"
HINT = "(unless LOYALTY_WEBHOOK_ALLOW names it)"


def delivery(
    services: Services, clock: ShiftableClock, sender: WebhookSender | None = None
) -> OutboxDelivery:
    return OutboxDelivery(
        services.db, clock, LoggingProvider(), sender or WebhookSender(services.campaigns.destinations)
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/hook", f"url: 127.0.0.1 is not a public address {HINT}"),
        (
            "http://localhost:8080/hook",
            f"url: host 'localhost' does not resolve to public addresses only {HINT}",
        ),
        ("http://[::1]/hook", f"url: ::1 is not a public address {HINT}"),
        ("http://2130706433/hook", f"url: 2130706433 (127.0.0.1) is not a public address {HINT}"),
        # httpx cannot send to this octal form, so it is refused before any address check
        ("http://0177.0.0.1/hook", "url: 'http://0177.0.0.1/hook' is not a valid URL"),
        # urlsplit raised ValueError here: the creation answered INTERNAL
        ("http://[::1", "url: 'http://[::1' is not a valid URL"),
        ("http://0x7f.1/hook", f"url: 0x7f.1 (127.0.0.1) is not a public address {HINT}"),
        ("http://127.1:6379/", f"url: 127.1 (127.0.0.1) is not a public address {HINT}"),
        ("http://[::ffff:127.0.0.1]/hook", f"url: ::ffff:127.0.0.1 is not a public address {HINT}"),
        ("http://0.0.0.0:5432/", f"url: 0.0.0.0 is not a public address {HINT}"),
        ("http://169.254.169.254/latest/meta-data/", f"url: 169.254.169.254 is not a public address {HINT}"),
        ("https://10.1.2.3/hook", f"url: 10.1.2.3 is not a public address {HINT}"),
        ("https://[fd00::1]/hook", f"url: fd00::1 is not a public address {HINT}"),
        (
            "http://nowhere.invalid/hook",
            f"url: host 'nowhere.invalid' does not resolve to public addresses only {HINT}",
        ),
        (
            "http://example.com:6379/",
            f"url: port 6379 is not allowed (public destinations use ports 80, 443, 8080, 8443, {HINT[1:-1]})",
        ),
        (
            f"http://{PUBLIC_ADDRESS}:5432/",
            f"url: port 5432 is not allowed (public destinations use ports 80, 443, 8080, 8443, {HINT[1:-1]})",
        ),
    ],
)
async def test_non_public_destinations_are_refused_at_creation(
    admin: GraphQLClient, url: str, message: str
) -> None:
    error = await admin.error(ENDPOINT, {"k": "crm", "u": url})
    assert (error["extensions"]["code"], error["message"]) == ("BAD_USER_INPUT", message)
    assert (await admin.data(LISTED))["webhookEndpoints"] == []


async def test_public_destinations_are_accepted(admin: GraphQLClient) -> None:
    for key, url in [
        ("by-name", "https://hooks.example.com/loyalty"),
        ("by-address", f"http://{PUBLIC_ADDRESS}:8080/loyalty"),
        ("allowed", f"http://{ALLOWED_HOST}:9000/loyalty"),  # the tests' allow-list names 127.0.0.2
    ]:
        await admin.data(ENDPOINT, {"k": key, "u": url})
    assert [e["key"] for e in (await admin.data(LISTED))["webhookEndpoints"]] == [
        "allowed",
        "by-address",
        "by-name",
    ]


async def test_a_loopback_listener_registered_before_the_check_receives_nothing(
    admin: GraphQLClient, services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    async with Receiver(host="127.0.0.1") as receiver:
        # given an endpoint stored before destinations were checked (as after an upgrade)
        async with services.db.unit_of_work() as uow:
            uow.session.add(
                WebhookEndpoint(
                    program_id=program.id,
                    key="crm",
                    url=receiver.url,
                    secret="s",
                    active=True,
                    created_at=clock.now(),
                )
            )
        await hooked_segment(admin)
        # when a delivery for it is due
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        await drain(delivery(services, clock))
    # then no request was made, and the delivery says why
    assert receiver.received == []
    [row] = await deliveries(admin)
    assert (row["status"], row["attempts"], row["lastError"]) == (
        "PENDING",
        1,
        f"not sent: 127.0.0.1 is not a public address {HINT}",
    )


async def test_last_error_keeps_the_status_code_never_the_answer(
    admin: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    async with Receiver(statuses=[500], body=b"redis_version:7.2.4 requirepass=hunter2") as receiver:
        await webhook_segment(admin, receiver.url)
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        await drain(delivery(services, clock))
    assert len(receiver.received) == 1
    [row] = await deliveries(admin)
    assert row["lastError"] == "HTTP 500"


async def test_closed_and_silent_ports_fail_alike(
    admin: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    """A refused connection and one that never answers leave the same lastError (no port scanning)."""
    with socket.socket() as probe:
        probe.bind((ALLOWED_HOST, 0))
        closed_port = probe.getsockname()[1]
    silent_connections: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent_connections.append(writer)

    silent = await asyncio.start_server(never_answer, ALLOWED_HOST, 0)
    silent_port = silent.sockets[0].getsockname()[1]
    try:
        await admin.data(ENDPOINT, {"k": "closed", "u": f"http://{ALLOWED_HOST}:{closed_port}/"})
        await webhook_segment(admin, f"http://{ALLOWED_HOST}:{silent_port}/")
        await admin.data(
            'mutation($t: [SegmentTriggerInput!]!) { setSegmentTriggers(segmentKey: "hooked", triggers: $t) { id } }',
            {"t": [{"on": "ENTER", "action": "CALL_WEBHOOK", "webhookKey": k} for k in ("crm", "closed")]},
        )
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        sender = WebhookSender(services.campaigns.destinations, timeout=0.5)
        await drain(delivery(services, clock, sender))
    finally:
        for writer in silent_connections:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert len(silent_connections) == 1
    assert sorted((d["endpointKey"], d["lastError"]) for d in await deliveries(admin)) == [
        ("closed", NO_ANSWER),
        ("crm", NO_ANSWER),
    ]


async def test_a_dns_answer_that_turns_private_after_creation_is_caught_at_delivery(
    admin: GraphQLClient, services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    async with Receiver(host="127.0.0.1") as receiver:
        dns = HostsResolver({"rebind.example.com": [PUBLIC_ADDRESS]})
        policy = DestinationPolicy(AllowList(), dns, ports=WEB_PORTS | {receiver.port})
        url = f"http://rebind.example.com:{receiver.port}/hooks/loyalty"
        # given an endpoint whose name resolved to a public address when it was created
        await CampaignService(services.db, clock, policy).create_endpoint(
            program.id, "crm", url, actor="test"
        )
        await hooked_segment(admin)
        # when the name resolves to loopback by the time of the delivery
        dns.set("rebind.example.com", "127.0.0.1")
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        await drain(delivery(services, clock, WebhookSender(policy)))
    # then nothing was sent
    assert receiver.received == []
    [row] = await deliveries(admin)
    assert (
        row["lastError"]
        == f"not sent: host 'rebind.example.com' does not resolve to public addresses only {HINT}"
    )


async def test_the_sender_connects_to_the_address_it_checked(
    admin: GraphQLClient, services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    """The name is resolved once, by the policy: the HTTP client never resolves it again (the system's
    DNS does not know it), and the receiver still sees the name in the Host header."""
    async with Receiver() as receiver:
        dns = HostsResolver({"pinned.example.com": [ALLOWED_HOST]})
        policy = DestinationPolicy(AllowList.parse([ALLOWED_HOST]), dns)
        url = f"http://pinned.example.com:{receiver.port}/hooks/loyalty"
        await CampaignService(services.db, clock, policy).create_endpoint(
            program.id, "crm", url, actor="test"
        )
        await hooked_segment(admin)
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        await drain(delivery(services, clock, WebhookSender(policy)))
    [request] = receiver.received
    assert request.headers["host"] == f"pinned.example.com:{receiver.port}"
    [row] = await deliveries(admin)
    assert (row["status"], row["lastError"]) == ("DELIVERED", None)


def hook(url: str, delivery_id: str = "d-1") -> WebhookRequest:
    return WebhookRequest(url, "secret", delivery_id, "test", b"{}")


async def test_the_next_checked_address_is_tried_when_one_refuses() -> None:
    async with Receiver() as receiver:  # on 127.0.0.2: 127.0.0.3 refuses connections to its port
        dns = HostsResolver({"multi.example.com": ["127.0.0.3", ALLOWED_HOST]})
        sender = WebhookSender(DestinationPolicy(AllowList.parse(["127.0.0.3", ALLOWED_HOST]), dns))
        async with sender.open() as webhooks:
            await webhooks.send(hook(f"http://multi.example.com:{receiver.port}/hook"), 0)
    [request] = receiver.received
    assert request.headers["host"] == f"multi.example.com:{receiver.port}"


async def test_a_pass_resolves_each_host_once() -> None:
    async with Receiver() as receiver:
        dns = HostsResolver({"once.example.com": [ALLOWED_HOST]})
        sender = WebhookSender(DestinationPolicy(AllowList.parse([ALLOWED_HOST]), dns))
        url = f"http://once.example.com:{receiver.port}/hook"
        async with sender.open() as webhooks:  # three deliveries at once, as the delivery loop sends them
            await asyncio.gather(*(webhooks.send(hook(url, f"d-{i}"), 0) for i in range(3)))
        assert (len(receiver.received), dns.lookups) == (3, ["once.example.com"])
        # the next pass looks it up again: a changed answer is checked before it is used
        async with sender.open() as webhooks:
            await webhooks.send(hook(url), 0)
    assert (len(receiver.received), dns.lookups) == (4, ["once.example.com"] * 2)


def test_lookups_never_take_the_event_loops_default_executor() -> None:
    """getaddrinfo holds its thread until the OS answers, even after the wait for it timed out: slow
    DNS must not fill the executor that the rest of the process shares."""

    class Refusing(ThreadPoolExecutor):
        def submit(self, *_: object, **__: object) -> None:  # type: ignore[override]
            raise AssertionError("the default executor was used")

    async def lookup() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        asyncio.get_running_loop().set_default_executor(Refusing())
        return await SystemResolver().resolve("127.0.0.1", 80)

    assert asyncio.run(lookup()) == [ipaddress.ip_address("127.0.0.1")]


async def test_a_malformed_url_is_refused_before_any_lookup(
    services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    dns = HostsResolver({"hooks.example.com": [PUBLIC_ADDRESS]})
    campaigns = CampaignService(services.db, clock, DestinationPolicy(AllowList(), dns))
    with pytest.raises(InvalidInput, match=r"^url: 'http://hooks.example.com/\\x7f' is not a valid URL$"):
        await campaigns.create_endpoint(program.id, "crm", "http://hooks.example.com/\x7f", actor="test")
    assert dns.lookups == []


async def test_a_deactivated_endpoint_gets_no_deliveries(
    admin: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    async with Receiver() as receiver:
        await webhook_segment(admin, receiver.url)
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        # when the endpoint is deactivated with a delivery still queued
        deactivated = (await admin.data(DEACTIVATE, {"k": "crm"}))["deactivateWebhookEndpoint"]
        assert deactivated == {"key": "crm", "active": False}
        # then the queued delivery is DEAD unsent, and later entries queue nothing
        await admin.data('mutation { upsertMembers(members: [{externalId: "bo"}]) { upserted } }')
        await admin.data(ADD, {"k": "hooked", "m": ["bo"]})
        await drain(delivery(services, clock))
    assert receiver.received == []
    [dead] = await deliveries(admin)
    assert (dead["status"], dead["attempts"], dead["lastError"]) == ("DEAD", 0, DEACTIVATED)
    error = await admin.error(RETRY, {"id": dead["id"]})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        f"id: delivery {dead['id']} goes to the deactivated endpoint 'crm'",
    )
    assert (await admin.data(LISTED))["webhookEndpoints"][0]["active"] is False
    # deactivating again changes nothing; an unknown key is NOT_FOUND
    assert (await admin.data(DEACTIVATE, {"k": "crm"}))["deactivateWebhookEndpoint"]["active"] is False
    error = await admin.error(DEACTIVATE, {"k": "nope"})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        "key: no webhook endpoint 'nope' in this program",
    )


async def test_a_rotated_secret_signs_the_deliveries_that_follow(
    admin: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    async with Receiver() as receiver:
        old = await webhook_segment(admin, receiver.url)
        rotated = (await admin.data(ROTATE, {"k": "crm"}))["rotateWebhookSecret"]
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        await drain(delivery(services, clock))
    new = rotated["secret"]
    assert rotated["endpoint"] == {"key": "crm", "active": True}
    assert new.startswith("whsec_")
    assert new != old
    [request] = receiver.received
    signed = f"{request.headers['x-loyalty-timestamp']}.".encode() + request.body
    assert (
        request.headers["x-loyalty-signature"]
        == "sha256=" + hmac.new(new.encode(), signed, hashlib.sha256).hexdigest()
    )


@pytest.mark.parametrize("mutation", [DEACTIVATE, ROTATE], ids=["deactivate", "rotate"])
async def test_a_key_that_cannot_exist_is_refused_without_echoing_it(
    admin: GraphQLClient, mutation: str
) -> None:
    error = await admin.error(mutation, {"k": "k" * 10_000})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        f"key: {'k' * 70!r} does not match [A-Za-z0-9_-]{{1,64}}",
    )


async def test_managing_endpoints_needs_segments_write(integration: GraphQLClient) -> None:
    for mutation in (DEACTIVATE, ROTATE):
        error = await integration.error(mutation, {"k": "crm"})
        assert error["extensions"]["code"] == "FORBIDDEN"


# ---- the policy itself ----


async def test_the_allow_list_names_hosts_ports_addresses_and_networks() -> None:
    dns = HostsResolver(
        {"hooks.internal": ["10.1.2.3"], "crm.internal": ["10.9.9.9"], "db.internal": ["10.0.0.5"]}
    )
    policy = DestinationPolicy(
        AllowList.parse(
            split_entries("hooks.internal, crm.internal:9000 192.168.0.0/16 [::1]:8080 10.0.0.5:5000")
        ),
        dns,
    )
    allowed = [
        ("http://hooks.internal:1234/x", "10.1.2.3"),  # a named host: any port, whatever it resolves to
        ("http://crm.internal:9000/x", "10.9.9.9"),
        ("http://192.168.7.7:6000/x", "192.168.7.7"),  # a network: any port
        ("http://[::1]:8080/x", "::1"),
        ("http://db.internal:5000/x", "10.0.0.5"),  # resolves into an allowed address:port
    ]
    for url, address in allowed:
        assert (await policy.check(url)).address == ipaddress.ip_address(address)
    refused = [
        "http://crm.internal:9001/x",
        "http://[::1]:8081/x",
        "http://db.internal:5432/x",
        "http://127.0.0.1/x",
    ]
    for url in refused:
        with pytest.raises(DestinationRefused):
            await policy.check(url)


def test_a_malformed_allow_list_stops_the_start() -> None:
    with pytest.raises(
        ConfigurationError, match=r"LOYALTY_WEBHOOK_ALLOW: 'hooks\.internal:http': the port must be a number"
    ):
        Settings.from_env({"LOYALTY_WEBHOOK_ALLOW": "10.0.0.0/8, hooks.internal:http"})
    settings = Settings.from_env({"LOYALTY_WEBHOOK_ALLOW": "10.0.0.0/8, hooks.internal:8080"})
    assert settings.webhook_allow == AllowList.parse(["10.0.0.0/8", "hooks.internal:8080"])
