"""The `loyalty` command: JSON on stdout, one-line errors on stderr (the demo: test_demo.py)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import migrations
from domain.settings import Introspection, Settings, sqlite_url
from tests.support.backends import PG_HOST, PG_PORT, reachable
from tests.support.cli import cli_environment, loyalty, ok


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_environment(tmp_path)


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
    assert (admin["email"], admin["role"]) == ("ops@acme.example", "OWNER")  # OWNER when no --role
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
        (
            (
                "admin",
                "create",
                "--email",
                "a@b.example",
                "--password",
                "long enough pass",
                "--program",
                "acme",
                "--role",
                "king",
            ),
            "loyalty: BAD_USER_INPUT: --role: unknown role 'king'; roles: OWNER, ADMIN, MARKETER, "
            "REVIEWER, VIEWER",
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


def test_points_expire_drains_what_is_due(env: dict[str, str]) -> None:
    """Nothing is due in a fresh program (the sweep itself: tests/test_expiry_api.py)."""
    ok(env, "db", "upgrade")
    ok(env, "program", "create", "--key", "cafe", "--name", "Cafe", "--kind", "B2C")
    assert ok(env, "points", "expire", "--program", "cafe") == {"program": "cafe", "expired_lots": 0}
    assert ok(env, "points", "expire") == {"program": None, "expired_lots": 0}
    unknown = loyalty(env, "points", "expire", "--program", "ghost")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("loyalty: NOT_FOUND: program 'ghost' does not exist")


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
        (  # transient (domain/transient.py), as the API's SERVICE_UNAVAILABLE: worth a retry
            "postgresql+asyncpg://postgres:secret@127.0.0.1:1/nothing",
            "loyalty: SERVICE_UNAVAILABLE: the database postgresql+asyncpg://postgres:***@127.0.0.1:1/nothing: "
            "[Errno 111] ",
        ),
        (  # not transient: retrying will not help
            "sqlite+aiosqlite:///{tmp_path}/garbage.db",
            "loyalty: DATABASE_ERROR: the database sqlite+aiosqlite:///{tmp_path}/garbage.db: file is not a database",
        ),
        pytest.param(
            f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/loyalty_no_such_database",
            f"loyalty: DATABASE_ERROR: the database postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/"
            'loyalty_no_such_database: database "loyalty_no_such_database" does not exist',
            marks=pytest.mark.skipif(not reachable(PG_HOST, PG_PORT), reason="PostgreSQL is not reachable"),
        ),
        ("nosuchdb://x", "loyalty: CONFIGURATION: LOYALTY_DATABASE_URL: "),
    ],
    ids=["unreachable", "not-a-database", "no-such-database", "not-a-url"],
)
def test_a_database_that_cannot_be_used_is_one_line_not_a_traceback(
    env: dict[str, str], tmp_path: Path, url: str, message: str
) -> None:
    url, message = url.format(tmp_path=tmp_path), message.format(tmp_path=tmp_path)
    (tmp_path / "garbage.db").write_bytes(b"not a database\n" * 100)
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


def test_a_failing_worker_thread_prints_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """aiosqlite's worker thread could print one after a connection that failed (a race)."""
    from api import cli

    def failing_thread(_: object) -> int:
        worker = threading.Thread(target=lambda: 1 / 0, name="worker")
        worker.start()
        worker.join()
        return 0

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored afterwards
    monkeypatch.setattr(cli, "cmd_schema", failing_thread)
    assert cli.main(["schema"]) == 0
    assert capsys.readouterr().err == ""


def test_schema_prints_the_sdl(env: dict[str, str]) -> None:
    result = loyalty(env, "schema")
    assert result.returncode == 0
    assert "recordEvents(events: [EventInput!]!): RecordEventsPayload!" in result.stdout


def test_serve_refuses_to_start_without_a_secret_key(env: dict[str, str]) -> None:
    result = loyalty({k: v for k, v in env.items() if k != "LOYALTY_SECRET_KEY"}, "serve")
    assert result.returncode == 1
    assert "LOYALTY_SECRET_KEY is not set" in result.stderr


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


@pytest.mark.parametrize(
    ("introspection", "expected"), [(None, Introspection.ON), ("off", Introspection.OFF)]
)
def test_serve_demo_hands_the_server_the_settings_its_workers_run_with(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, introspection: str | None, expected: Introspection
) -> None:
    """`serve --demo` decides two settings itself (a generated secret key; introspection on unless the
    environment says otherwise): the settings given to serving.serve carry them, and are what the
    workers read from their environment."""
    from api import cli, serving

    for name in [*os.environ, "LOYALTY_SECRET_KEY", "LOYALTY_INTROSPECTION", "LOYALTY_DATA_DIR"]:
        if name.startswith("LOYALTY_"):
            monkeypatch.delenv(name, raising=False)  # and restored after the test
    if introspection is not None:
        monkeypatch.setenv("LOYALTY_INTROSPECTION", introspection)
    monkeypatch.setenv("LOYALTY_REDIS_URL", "redis://127.0.0.1:1/0")  # not started, not reached
    migrations.upgrade(sqlite_url(tmp_path))
    given: list[Settings] = []
    read_by_workers: list[Settings] = []
    serve = serving.serve

    def serve_spy(settings: Settings, *rest: Any) -> None:
        given.append(settings)
        serve(settings, *rest)

    monkeypatch.setattr(serving, "serve", serve_spy)
    monkeypatch.setattr(serving, "run", lambda *_: read_by_workers.append(Settings.from_env()))

    assert cli.main(["--data-dir", str(tmp_path), "serve", "--demo", "--port", "0"]) == 0

    assert given == read_by_workers
    assert (given[0].introspection, given[0].secret_key) == (expected, (tmp_path / "secret_key").read_text())


def test_tiers_recompute_places_members_with_a_progress_bar(env: dict[str, str]) -> None:
    from domain.members.service import MemberUpsert
    from tests.support import private_services
    from tests.support.tiers import spend_ladder

    # given a program with a ladder and two members (set in-process on the command's database)
    ok(env, "db", "upgrade")
    ok(env, "program", "create", "--key", "cafe", "--name", "Cafe", "--kind", "B2C")
    no_ladder = loyalty(env, "tiers", "recompute", "--program", "cafe")
    with private_services(Settings.from_env(env)) as harness:
        program = harness.run(harness.services.programs.get_by_key("cafe"))
        harness.run(harness.services.tiers.set_ladder(program.id, spend_ladder(), actor="test"))
        harness.run(
            harness.services.members.upsert_members(program.id, [MemberUpsert("a"), MemberUpsert("b")])
        )
        harness.run(harness.services.bus.stop())  # the announcements still in flight end with the loop

    # when every program's tiers are recomputed
    result = loyalty(env, "tiers", "recompute")

    # then the members are counted and the progress bar ends full; without a ladder: NOT_FOUND
    assert no_ladder.returncode == 1
    assert no_ladder.stderr.startswith("loyalty: NOT_FOUND: program: this program has no tier ladder")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"programs": {"cafe": 2}}
    assert "cafe [####################] 5/5 states written" in result.stderr


def test_admin_create_gives_the_role_asked_for(env: dict[str, str]) -> None:
    """The admin's sessions then hold that role's scopes (tests/test_roles.py logs such admins in)."""
    ok(env, "db", "upgrade")
    ok(env, "program", "create", "--key", "acme", "--name", "Acme", "--kind", "B2B")
    args = ("--password", "a long passphrase", "--program", "acme")
    viewer = ok(env, "admin", "create", "--email", "v@acme.example", *args, "--role", "viewer")
    assert (viewer["email"], viewer["role"]) == ("v@acme.example", "VIEWER")
    marketer = ok(env, "admin", "create", "--email", "m@acme.example", *args, "--role", "MARKETER")
    assert marketer["role"] == "MARKETER"
