"""`loyalty demo` as README.md promises it: every GraphQL example of the README runs as written
against it, and the demo shows every feature at once.

One demo for the module: `loyalty --data-dir <tmp> demo --no-serve` seeds it, then
`loyalty --data-dir <tmp> demo --port <free>` reuses the seed and serves it, as `make demo` run
twice does. It uses the embedded pair (SQLite and its own Redis), whatever the suite's backends.

README examples: each ```graphql block is one operation whose first line says which
Authorization header it needs (CALLERS). The only substitutions, in the login example, are
`password: "..."` by the demo's password and `totpCode: "123456"` by the current TOTP code:
the README tells the reader to do the same.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import graphql
import httpx
import pyotp
import pytest
from playwright.async_api import expect

from tests.support.browser import chromium_page, needs_chromium
from tests.support.cli import BIN
from tests.support.graphql import LOGIN
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: Seeding and starting on a busy 2-core machine; the demo's budget is under a minute.
START_WITHIN_S = 120
BLOCK = re.compile(r"^```graphql\n(.*?)^```", re.S | re.M)
CALLERS = {
    "# no Authorization header": None,
    "# Authorization: Bearer <admin token>": "admin",
    "# Authorization: Bearer <API key>": "apiKey",
    "# Authorization: Bearer <read-only key>": "readOnlyKey",
}
PASSWORD_PLACEHOLDER = 'password: "..."'
TOTP_PLACEHOLDER = 'totpCode: "123456"'


@dataclass
class Demo:
    url: str
    data_dir: Path
    banner: str
    credentials: dict[str, Any]
    env: dict[str, str]

    def post(self, query: str, token: str | None, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"query": query, "variables": variables or {}}
        response = httpx.post(f"{self.url}/graphql", json=body, headers=headers, timeout=60)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data_dir = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    seeded = subprocess.run(
        [str(BIN), "--data-dir", str(data_dir), "demo", "--no-serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_WITHIN_S,
        cwd=tmp_path_factory.getbasetemp(),
    )
    assert seeded.returncode == 0, seeded.stderr
    credentials = json.loads((data_dir / "demo-credentials.json").read_text())
    port = free_port()
    log = (data_dir / "serve.log").open("w")
    process = subprocess.Popen(
        [str(BIN), "--data-dir", str(data_dir), "demo", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path_factory.getbasetemp(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_WITHIN_S
        while not _ready(url):
            assert process.poll() is None, (data_dir / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo did not serve in time"
            time.sleep(0.2)
        yield Demo(url, data_dir, seeded.stdout, credentials, env)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def readme_examples() -> list[tuple[str | None, str]]:
    """(caller, operation) of every ```graphql block of README.md, in order."""
    examples = []
    for number, block in enumerate(BLOCK.findall((ROOT / "README.md").read_text()), start=1):
        first, _, operation = block.partition("\n")
        assert first in CALLERS, f"README graphql block {number} does not start with one of {list(CALLERS)}"
        document = graphql.parse(operation)
        assert len(document.definitions) == 1, f"README graphql block {number} holds several operations"
        examples.append((CALLERS[first], operation))
    return examples


@pytest.fixture(scope="module")
def admin_token(demo: Demo) -> str:
    """The README's login example, as written but for its two placeholders."""
    (login,) = [operation for caller, operation in readme_examples() if caller is None]
    assert PASSWORD_PLACEHOLDER in login
    assert TOTP_PLACEHOLDER in login
    admin = demo.credentials["admin"]
    login = login.replace(PASSWORD_PLACEHOLDER, f'password: "{admin["password"]}"')
    login = login.replace(TOTP_PLACEHOLDER, f'totpCode: "{pyotp.TOTP(admin["totpSecret"]).now()}"')
    body = demo.post(login, None)
    assert "errors" not in body, body
    token: str = body["data"]["login"]["token"]
    return token


def test_every_graphql_example_of_the_readme_runs_as_written(demo: Demo, admin_token: str) -> None:
    tokens = {"admin": admin_token, "apiKey": demo.credentials["apiKey"]}
    tokens["readOnlyKey"] = demo.credentials["readOnlyKey"]
    examples = [(caller, operation) for caller, operation in readme_examples() if caller is not None]
    assert len(examples) >= 9
    for caller, operation in examples:
        assert PASSWORD_PLACEHOLDER not in operation
        body = demo.post(operation, tokens[caller])
        assert "errors" not in body, (operation, body["errors"])
        assert all(value is not None for value in body["data"].values()), (operation, body)


def test_the_demo_prints_what_the_readme_says_and_reuses_its_seed(demo: Demo) -> None:
    credentials = demo.credentials
    for line in (
        f"Demo program 'demo' is ready; its data is in {demo.data_dir}.",
        f"Admin:          admin@demo.local / {credentials['admin']['password']}",
        f"API key:        {credentials['apiKey']}",
        f"Read-only key:  {credentials['readOnlyKey']}   (segments:read, leaderboards:read; for the dashboard)",
        f"Credentials are kept in {demo.data_dir / 'demo-credentials.json'}.",
    ):
        assert line in demo.banner
    # serving reused the seed: the same credentials still work
    assert json.loads((demo.data_dir / "demo-credentials.json").read_text()) == credentials
    program = demo.post("{ program { key name kind } }", credentials["apiKey"])["data"]["program"]
    assert program == {"key": "demo", "name": "Demo Coffee Club", "kind": "B2C"}
    assert httpx.get(f"{demo.url}/readyz", timeout=5).json()["checks"] == {"database": "ok", "redis": "ok"}


def test_the_demo_shows_its_schema_to_anyone(demo: Demo) -> None:
    """`serve` alone shows it to token holders only (LOYALTY_INTROSPECTION=authenticated); a local
    demo is for exploring, in GraphiQL, before any login."""
    body = demo.post("{ __schema { queryType { name } } }", None)
    assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


def test_churn_training_succeeds_on_the_demo(demo: Demo) -> None:
    result = subprocess.run(
        [str(BIN), "--data-dir", str(demo.data_dir), "predict", "train", "--program", "demo"],
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["positives"] >= 100
    assert report["negatives"] >= 100
    assert report["scored"] > 0


def test_the_review_queue_holds_a_few_accruals(demo: Demo, admin_token: str) -> None:
    body = demo.post("{ reviewQueue { memberExternalId findings { rule verdict } } }", admin_token)
    queue = body["data"]["reviewQueue"]
    assert 2 <= len(queue) <= 10
    rules = {
        finding["rule"] for item in queue for finding in item["findings"] if finding["verdict"] == "REVIEW"
    }
    assert {"single_accrual_cap", "shared_device"} <= rules


def test_segment_history_moves_over_the_last_30_days(demo: Demo, admin_token: str) -> None:
    segments = demo.post("{ segments { key history { size entered left } } }", admin_token)["data"][
        "segments"
    ]
    histories = {s["key"]: s["history"] for s in segments}
    assert all(len(history) == 30 for history in histories.values())
    # changes on most days, not "zeros, then everything today"
    days_with_changes = {
        day
        for history in histories.values()
        for day, point in enumerate(history)
        if point["entered"] + point["left"]
    }
    assert len(days_with_changes) >= 20, sorted(days_with_changes)
    # segments already had members 30 days ago, and several are not the size they were then
    assert sum(history[0]["size"] > 0 for history in histories.values()) >= 5
    assert sum(history[0]["size"] != history[-1]["size"] for history in histories.values()) >= 3


def test_every_tier_is_held_and_points_expire_after_a_year(demo: Demo, admin_token: str) -> None:
    body = demo.post(
        """{ program { pointsExpiryDays } tierLadder { graceDays tiers { key } }
             segments { key kind size } reward(key: "gold-lounge") { segmentKeys }
             members(first: 200) { totalCount edges { node { tier { tier { key } }
               expiringPoints(withinDays: 366) { points } } } } }""",
        admin_token,
    )["data"]
    assert body["program"]["pointsExpiryDays"] == 365
    assert body["tierLadder"] == {
        "graceDays": 30,
        "tiers": [{"key": k} for k in ("bronze", "silver", "gold")],
    }
    sizes = {s["key"]: s["size"] for s in body["segments"] if s["kind"] == "TIER"}
    assert set(sizes) == {"tier-bronze", "tier-silver", "tier-gold"}
    assert all(size > 0 for size in sizes.values()), sizes
    members = [edge["node"] for edge in body["members"]["edges"]]
    assert sum(sizes.values()) == body["members"]["totalCount"] == len(members)  # one tier each
    assert all(member["tier"] is not None for member in members)
    assert sum(bool(member["expiringPoints"]) for member in members) >= len(members) // 2
    assert body["reward"] == {"segmentKeys": ["tier-gold"]}


def test_the_seeded_configuration_is_in_the_audit_log_as_system(demo: Demo, admin_token: str) -> None:
    query = '{ auditLog(first: 500, actor: "system") { edges { node { action target } } } }'
    edges = demo.post(query, admin_token)["data"]["auditLog"]["edges"]
    seeded = {(edge["node"]["action"], edge["node"]["target"]) for edge in edges}
    assert {("setTierLadder", "demo"), ("setReward", "gold-lounge"), ("setPointsExpiry", "demo")} <= seeded


def test_members_entering_new_get_a_welcome_coupon(demo: Demo, admin_token: str) -> None:
    body = demo.post(
        """{ couponPool(key: "welcome") { discountKind discountValue validDays available issued }
             segment(key: "new_members") { triggers { action couponPoolKey } } }""",
        admin_token,
    )["data"]
    pool = body["couponPool"]
    assert (pool["discountKind"], pool["discountValue"], pool["validDays"]) == ("PERCENT", "10", 30)
    assert pool["available"] + pool["issued"] == 500
    assert {"action": "ISSUE_COUPON", "couponPoolKey": "welcome"} in body["segment"]["triggers"]


def test_the_version_2_templates_find_their_members(demo: Demo, admin_token: str) -> None:
    body = demo.post(
        """{ segments { key size }
             segment(key: "old_android") { members(first: 200) { edges { node { attributes } } } } }""",
        admin_token,
    )["data"]
    sizes = {s["key"]: s["size"] for s in body["segments"]}
    assert sizes["favourite_store_s1"] > 0
    assert sizes["old_android"] > 0
    assert sizes["push_disabled"] > 0
    versions = {
        edge["node"]["attributes"]["device"]["appVersion"] for edge in body["segment"]["members"]["edges"]
    }
    assert versions <= {"4.2", "4.9"}  # 10.2 is not an old app


@needs_chromium
async def test_the_dashboard_accepts_the_read_only_key(demo: Demo) -> None:
    count = len(demo.post("{ segments { key } }", demo.credentials["readOnlyKey"])["data"]["segments"])
    async with chromium_page() as page:
        await page.goto(f"{demo.url}/dashboard")
        await page.fill("#token", demo.credentials["readOnlyKey"])
        await page.click("#login button[type=submit]")
        await expect(page.locator("#segments tbody tr")).to_have_count(count)
        await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    # and the key changes nothing
    refused = demo.post('mutation { deleteSegment(key: "vip") }', demo.credentials["readOnlyKey"])
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_the_demo_has_an_admin_of_every_other_role(demo: Demo) -> None:
    """marketer@, reviewer@ and viewer@demo.local log in as the banner prints them, each in its role."""
    admins = demo.credentials["roleAdmins"]
    assert [a["email"] for a in admins] == ["marketer@demo.local", "reviewer@demo.local", "viewer@demo.local"]
    for admin in admins:
        label = admin["role"].title() + ":"
        assert f"{label:<15} {admin['email']} / {admin['password']}" in demo.banner
        code = pyotp.TOTP(admin["totpSecret"]).now()
        body = demo.post(LOGIN, None, {"e": admin["email"], "p": admin["password"], "c": code})
        token = body["data"]["login"]["token"]
        current = demo.post("{ currentAdmin { email role } }", token)["data"]["currentAdmin"]
        assert current == {"email": admin["email"], "role": admin["role"]}


def test_the_demo_promotions_pay_from_today(demo: Demo, admin_token: str) -> None:
    # given the demo's promotions and one of its Gold members
    body = demo.post(
        """{ promotions { key condition multiplier stacking active }
             segment(key: "tier-gold") { members(first: 1) { edges { node { externalId } } } } }""",
        admin_token,
    )["data"]
    assert {p["key"]: p["multiplier"] for p in body["promotions"]} == {
        "gold-coffee": "3",
        "weekend-double": "2",
    }
    (gold,) = [edge["node"]["externalId"] for edge in body["segment"]["members"]["edges"]]

    # when the POS records a coffee for 4 on a Wednesday (no weekend), then reads the entry
    record = (
        """mutation($e: [EventInput!]!) { recordEvents(events: $e) { results { status pointsAwarded } } }"""
    )
    event = {
        "externalId": f"promo-{gold}",
        "memberExternalId": gold,
        "type": "purchase",
        "occurredAt": _last_wednesday().isoformat(),
        "amount": "4",
        "properties": {"category": "coffee"},
    }
    results = demo.post(record, demo.credentials["apiKey"], {"e": [event]})["data"]["recordEvents"]["results"]

    # then Gold's 3x coffee added 2 x 4 on top of the Gold-multiplied base
    assert results[0]["status"] == "ACCEPTED"
    assert results[0]["pointsAwarded"] >= 4 + 8


def _last_wednesday() -> datetime:
    """10:00 UTC on the most recent Wednesday before today (a weekday in the demo's UTC calendar)."""
    today = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    return today - timedelta(days=(today.weekday() - 2) % 7 or 7)
