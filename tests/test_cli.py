"""The `loyalty` command: JSON on stdout, clear errors on stderr, and the demo end to end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

BIN = Path(sys.executable).parent / "loyalty"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_environment(tmp_path)


def cli_environment(tmp_path: Path) -> dict[str, str]:
    """The command's environment: a fresh SQLite database in `tmp_path`, nothing from the caller's LOYALTY_*."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    return base | {
        "LOYALTY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "LOYALTY_DATA_DIR": str(tmp_path / "var"),
        "LOYALTY_SECRET_KEY": "cli-test-secret-" + "s" * 32,
    }


def loyalty(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


def ok(env: dict[str, str], *args: str) -> Any:
    result = loyalty(env, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_provisioning_prints_json(env: dict[str, str]) -> None:
    assert ok(env, "db", "upgrade")["revision"] == "head"
    program = ok(env, "program", "create", "--key", "acme", "--name", "Acme Dealers", "--kind", "B2B")
    assert program == {
        "key": "acme",
        "name": "Acme Dealers",
        "kind": "B2B",
        "settings": {"autoCreateMembers": False},
    }
    admin = ok(
        env,
        "admin",
        "create",
        "--email",
        "Ops@Acme.example",
        "--password",
        "a long passphrase",
        "--program",
        "acme",
    )
    assert admin["email"] == "ops@acme.example"
    assert admin["provisioningUri"].startswith("otpauth://totp/")
    assert len(admin["totpSecret"]) == 32
    key = ok(
        env,
        "apikey",
        "create",
        "--program",
        "acme",
        "--name",
        "erp",
        "--scopes",
        "members:write,events:write",
    )
    assert key["key"].startswith("lk_")
    assert key["scopes"] == ["events:write", "members:write"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("program", "create", "--key", "acme", "--name", "Again", "--kind", "B2C"),
            "loyalty: CONFLICT: a program with key 'acme' already exists",
        ),
        (
            ("program", "create", "--key", "bad key!", "--name", "X", "--kind", "B2C"),
            "loyalty: BAD_USER_INPUT: key: 'bad key!' does not match",
        ),
        (
            ("admin", "create", "--email", "a@b.example", "--password", "short", "--program", "acme"),
            "loyalty: BAD_USER_INPUT: password: at least 12 characters",
        ),
        (
            (
                "admin",
                "create",
                "--email",
                "a@b.example",
                "--password",
                "long enough pass",
                "--program",
                "nope",
            ),
            "loyalty: NOT_FOUND: program: no program with key 'nope'",
        ),
        (
            ("apikey", "create", "--program", "acme", "--name", "x", "--scopes", "root"),
            "loyalty: BAD_USER_INPUT: --scopes: unknown scope 'root'",
        ),
    ],
)
def test_errors_go_to_stderr_with_a_non_zero_exit(
    env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    ok(env, "db", "upgrade")
    ok(env, "program", "create", "--key", "acme", "--name", "Acme", "--kind", "B2B")
    result = loyalty(env, *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(message)


def test_segments_recompute_reports_progress_and_counts(env: dict[str, str]) -> None:
    ok(env, "db", "upgrade")
    ok(env, "program", "create", "--key", "cafe", "--name", "Cafe", "--kind", "B2C")
    done = ok(env, "segments", "recompute", "--program", "cafe")
    assert done == {"program": "cafe", "members": 0, "segments": 0}
    unknown = loyalty(env, "segments", "recompute", "--program", "cafe", "--keys", "ghost")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("loyalty: NOT_FOUND: key: no segment 'ghost' in this program")


def test_schema_prints_the_sdl(env: dict[str, str]) -> None:
    result = loyalty(env, "schema")
    assert result.returncode == 0
    assert "recordEvents(events: [EventInput!]!): RecordEventsPayload!" in result.stdout


def test_serve_refuses_to_start_without_a_secret_key(env: dict[str, str]) -> None:
    result = loyalty({k: v for k, v in env.items() if k != "LOYALTY_SECRET_KEY"}, "serve")
    assert result.returncode == 1
    assert "LOYALTY_SECRET_KEY is not set" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running(env: dict[str, str], *args: str, cwd: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [str(BIN), *args, "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not start within 90 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def gql(url: str, query: str, variables: dict[str, Any] | None = None, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        f"{url}/graphql", json={"query": query, "variables": variables or {}}, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


@pytest.mark.slow
def test_the_demo_seeds_once_and_serves_graphql(env: dict[str, str], tmp_path: Path) -> None:
    """`loyalty demo` (what `make demo` runs): seed, print how to log in, serve; a second run reuses the seed."""
    demo_env = {k: v for k, v in env.items() if k != "LOYALTY_SECRET_KEY"}
    first = loyalty(demo_env, "demo", "--no-serve", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    credentials = json.loads((tmp_path / "var" / "demo-credentials.json").read_text())
    assert f"API key:    {credentials['apiKey']}" in first.stdout
    second = loyalty(demo_env, "demo", "--no-serve", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert credentials == json.loads((tmp_path / "var" / "demo-credentials.json").read_text())

    with running(demo_env, "demo", cwd=tmp_path) as url:
        admin = credentials["admin"]
        token = gql(
            url,
            "mutation($e: String!, $p: String!, $c: String!) { login(email: $e, password: $p, totpCode: $c) { token } }",
            {"e": admin["email"], "p": admin["password"], "c": pyotp.TOTP(admin["totpSecret"]).now()},
        )["login"]["token"]
        members = gql(url, "{ members(first: 1) { totalCount } }", token=token)["members"]
        assert members["totalCount"] == credentials["members"] == 60
        program = gql(url, "{ program { key name kind } }", token=credentials["apiKey"])["program"]
        assert program == {"key": "demo", "name": "Demo Coffee Club", "kind": "B2C"}
        ready = httpx.get(f"{url}/readyz", timeout=5).json()
        assert ready["checks"] == {"database": "ok", "redis": "ok"}


def test_prune_reports_per_table_what_goes_and_refuses_unsafe_periods(env: dict[str, str]) -> None:
    ok(env, "db", "upgrade")
    planned = ok(env, "prune", "--dry-run")
    assert planned["dryRun"] is True
    assert [(t["table"], t["rows"]) for t in planned["tables"]] == [
        ("segment_changes", 0),
        ("outbox", 0),
        ("outbox", 0),
        ("messages", 0),
        ("fraud_findings", 0),
        ("events", 0),
    ]
    assert planned["tables"][-1]["goes"].startswith("never pruned")
    assert ok(env, "prune")["dryRun"] is False
    refused = loyalty(env | {"LOYALTY_RETAIN_FINDINGS_DAYS": "30"}, "prune", "--dry-run")
    assert refused.returncode == 1
    assert refused.stderr == (
        "loyalty: CONFIGURATION: LOYALTY_RETAIN_FINDINGS_DAYS must be at least 367 days, not 30\n"
    )
