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


def test_a_database_that_is_not_migrated_is_named_with_the_command_that_migrates_it(
    env: dict[str, str],
) -> None:
    for args in (
        ("program", "create", "--key", "acme", "--name", "Acme", "--kind", "B2B"),
        ("segments", "recompute", "--program", "acme"),
        ("leaderboards", "rebuild"),
        ("serve",),
    ):
        result = loyalty(env, *args)
        assert (result.returncode, result.stdout) == (1, ""), args
        assert (
            result.stderr == "loyalty: NOT_MIGRATED: the database is not migrated: run `loyalty db upgrade`\n"
        )


def test_without_a_data_directory_nothing_is_written_where_the_command_runs(tmp_path: Path) -> None:
    # given no database URL and no data directory, in some directory
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # then commands that need no data directory run, and those that need one say how to give it
    assert loyalty(env, "schema", cwd=elsewhere).returncode == 0
    assert loyalty(env, "--help", cwd=elsewhere).returncode == 0
    for args, needs in (
        (("db", "upgrade"), "no database: set LOYALTY_DATABASE_URL, or give a data directory"),
        (("program", "create", "--key", "a", "--name", "A", "--kind", "B2C"), "no database"),
        (
            ("demo", "--no-serve"),
            "the demo needs a data directory: pass --data-dir DIR or set LOYALTY_DATA_DIR",
        ),
        (
            ("serve", "--demo"),
            "--demo (a generated secret key kept in the data directory) needs a data directory",
        ),
    ):
        result = loyalty(env, *args, cwd=elsewhere)
        assert result.returncode == 1, args
        assert result.stderr.startswith(f"loyalty: CONFIGURATION: {needs}"), result.stderr
    assert list(elsewhere.iterdir()) == []


def test_the_data_directory_is_given_explicitly_and_may_be_relative(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_")}
    migrated = loyalty(env, "db", "upgrade", "--data-dir", "state", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["database"] == f"sqlite+aiosqlite:///{tmp_path}/state/loyalty.db"
    created = loyalty(
        env | {"LOYALTY_DATA_DIR": str(tmp_path / "state")},
        *("program", "create", "--key", "a", "--name", "A", "--kind", "B2C"),
        cwd=tmp_path / "state",
    )
    assert created.returncode == 0, created.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql+asyncpg://postgres:secret@127.0.0.1:1/nothing",
            "loyalty: UNAVAILABLE: the database postgresql+asyncpg://postgres:***@127.0.0.1:1/nothing "
            "cannot be used: ",
        ),
        ("nosuchdb://x", "loyalty: CONFIGURATION: LOYALTY_DATABASE_URL: "),
    ],
)
def test_a_database_that_cannot_be_used_is_one_line_not_a_traceback(
    env: dict[str, str], url: str, message: str
) -> None:
    result = loyalty(env | {"LOYALTY_DATABASE_URL": url}, "segments", "recompute", "--program", "a")
    assert result.returncode == 1
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api import cli

    def broken(_: object) -> int:
        raise RuntimeError("something nobody expected\nsecond line")

    monkeypatch.setattr(cli, "cmd_schema", broken)
    assert cli.main(["schema"]) == 1
    assert capsys.readouterr().err == (
        "loyalty: INTERNAL: unexpected RuntimeError: something nobody expected "
        "(run the command again with --debug for the traceback)\n"
    )
    with pytest.raises(RuntimeError, match="something nobody expected"):
        cli.main(["--debug", "schema"])


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
    assert f"API key:        {credentials['apiKey']}" in first.stdout
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
