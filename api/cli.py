"""`loyalty`: serve the API, migrate, print the schema, provision programs, admins and keys.

Machine-readable output is JSON on stdout. Every failure is one line on stderr,
`loyalty: CODE: message`, and exit code 1 (2 for a command line that does not parse); a
traceback only with --debug.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import orjson

from api.cli_errors import failure
from domain.analytics.recording import record_history
from domain.errors import DomainError
from domain.settings import Introspection, Settings, local_secret_key
from fraud.backtest import Backtest


def _print_json(data: object) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _settings(demo: bool = False) -> Settings:
    """The environment's settings; a demo's also get a generated secret key and show their schema to
    everyone (LOYALTY_INTROSPECTION=on), unless the environment sets those."""
    settings = Settings.from_env()
    if demo and not settings.secret_key:
        data_dir = settings.require_data_dir("--demo (a generated secret key kept in the data directory)")
        settings = settings.with_secret(local_secret_key(data_dir))
    if demo and not os.environ.get("LOYALTY_INTROSPECTION"):
        settings = replace(settings, introspection=Introspection.ON)
    return settings


def _with_services(
    work: Callable[[Any], Awaitable[object]], settings: Settings | None = None, clock: Any = None
) -> object:
    """Run `work` with the services (on `clock`, the system's by default), on a migrated database.

    Without LOYALTY_SECRET_KEY a throwaway key is used: these commands sign no token.
    """
    from api.runtime import build_services

    settings = settings or Settings.from_env()
    if not settings.secret_key:
        settings = settings.with_secret(secrets.token_urlsafe(48))

    async def run() -> object:
        services = build_services(settings, clock)
        try:
            await _require_migrated(services.db.engine)
            return await work(services)
        finally:
            await services.close()

    return asyncio.run(run())


async def _require_migrated(engine: Any) -> None:
    """The first use of the database: it must be reachable and migrated. What fails here is about
    this database, so the error is noted with its URL (`failure` names it; the code is its own)."""
    import migrations

    try:
        await migrations.require_current(engine)
    except Exception as error:
        error.add_note(f"the database {_redacted(engine.url.render_as_string())}")
        raise


def cmd_serve(args: argparse.Namespace, listener: socket.socket | None = None) -> int:
    """Check everything, bind the port, then start: a busy port fails before anything runs."""
    from api import serving
    from domain.db.engine import create_engine

    settings = _settings(demo=args.demo)
    settings.require_secret()
    embedded_dir = None if settings.redis_url else settings.require_data_dir("the embedded Redis server")

    async def check_database() -> None:
        engine = create_engine(settings.require_database_url(), pool_size=1)
        try:
            await _require_migrated(engine)
        finally:
            await engine.dispose()

    asyncio.run(check_database())
    serving.serve(
        settings,
        serving.Options(args.host, args.port, args.workers, args.log_level),
        embedded_dir,
        listener,
    )
    return 0


def cmd_db_upgrade(_: argparse.Namespace) -> int:
    import migrations

    settings = Settings.from_env()
    database_url = settings.require_database_url()
    migrations.upgrade(database_url)
    _print_json({"database": _redacted(database_url), "revision": "head"})
    return 0


def cmd_schema(_: argparse.Namespace) -> int:
    from api.schema import schema_sdl

    sys.stdout.write(schema_sdl() + "\n")
    return 0


def cmd_program_create(args: argparse.Namespace) -> int:
    from domain.programs.service import ProgramSettings

    async def work(services: Any) -> object:
        program = await services.programs.create_program(
            args.key, args.name, args.kind, ProgramSettings(auto_create_members=args.auto_create_members)
        )
        return {"key": program.key, "name": program.name, "kind": program.kind, "settings": program.settings}

    _print_json(_with_services(work))
    return 0


def cmd_admin_create(args: argparse.Namespace) -> int:
    from domain.auth.roles import parse_role

    try:
        role = parse_role(args.role)
    except ValueError as error:
        raise DomainError(f"--role: {error}") from None

    async def work(services: Any) -> object:
        created = await services.auth.create_admin(args.program, args.email, args.password, role)
        return {
            "email": created.email,
            "role": role.value,
            "program": created.program_key,
            "totpSecret": created.totp_secret,
            "provisioningUri": created.provisioning_uri,
        }

    _print_json(_with_services(work))
    return 0


def cmd_apikey_create(args: argparse.Namespace) -> int:
    from domain.auth.scopes import parse_scopes

    try:
        scopes = parse_scopes(args.scopes) if args.scopes else None
    except ValueError as error:
        raise DomainError(f"--scopes: {error}") from None

    async def work(services: Any) -> object:
        created = await services.auth.create_api_key(args.program, args.name, scopes)
        return {
            "name": created.name,
            "program": created.program_key,
            "key": created.key,
            "scopes": created.scopes,
        }

    _print_json(_with_services(work))
    return 0


def cmd_segments_recompute(args: argparse.Namespace) -> int:
    """Refresh RFM/ABC, then recompute the program's segments, with a progress line per segment."""
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None

    async def work(services: Any) -> object:
        program = await services.programs.get_by_key(args.program)
        total = (
            len(keys)
            if keys
            else sum(s.condition is not None for s in await services.segments.list_segments(program.id))
        )
        done = 0

        def progress(key: str, result: Any) -> None:
            nonlocal done
            done += 1
            bar = "#" * (20 * done // max(total, 1))
            sys.stderr.write(f"\r[{bar:<20}] {done}/{total} {key}: +{result.entered} -{result.left}\x1b[K")
            sys.stderr.flush()

        members = await services.segments.recompute(program.id, keys, progress)
        sys.stderr.write("\n")
        return {"program": args.program, "members": members, "segments": done}

    _print_json(_with_services(work))
    return 0


def cmd_tiers_recompute(args: argparse.Namespace) -> int:
    """Place every member at the tier its value reaches now (set-based), with a progress bar per program."""

    async def work(services: Any) -> object:
        if args.program:
            programs = [(await services.programs.get_by_key(args.program)).id]
        else:
            programs = await services.tiers.programs_with_ladders()
        placed: dict[str, int] = {}
        for program_id in programs:
            key = (await services.programs.get(program_id)).key

            def progress(done: int, total: int, what: str, key: str = key) -> None:
                bar = "#" * (20 * done // max(total, 1))
                sys.stderr.write(f"\r{key} [{bar:<20}] {done}/{total} {what}\x1b[K")
                sys.stderr.flush()

            placed[key] = await services.tiers.recompute(program_id, progress)
            sys.stderr.write("\n")
        return {"programs": placed}

    _print_json(_with_services(work))
    return 0


def cmd_analytics_record(args: argparse.Namespace) -> int:
    """Record the conversions and reactions segment analytics count (domain/analytics/recording.py)."""

    async def work(services: Any) -> object:
        program = await services.programs.get_by_key(args.program)
        members = await record_history(services.db, program.id, everything=args.all)
        return {"program": args.program, "members": members, "all": args.all}

    _print_json(_with_services(work))
    return 0


def cmd_points_expire(args: argparse.Namespace) -> int:
    """Run the expiry sweep now until nothing is due (every program unless --program)."""

    async def work(services: Any) -> object:
        program_id = (await services.programs.get_by_key(args.program)).id if args.program else None
        lots = await services.expiry.drain(program_id)
        return {"program": args.program, "expired_lots": lots}

    _print_json(_with_services(work))
    return 0


def cmd_leaderboards_rebuild(args: argparse.Namespace) -> int:
    """Rebuild boards from the ledger (all programs unless --program), with a progress bar."""

    async def work(services: Any) -> object:
        programs = [(await services.programs.get_by_key(args.program)).id] if args.program else None

        def progress(done: int, total: int, what: str) -> None:
            bar = "#" * (20 * done // max(total, 1))
            sys.stderr.write(f"\r[{bar:<20}] {done}/{total} {what}\x1b[K")
            sys.stderr.flush()

        report = await services.leaderboards.rebuild(programs, args.board, progress)
        sys.stderr.write("\n")
        return {"periods": report.periods, "keys": report.keys, "entries": report.entries}

    _print_json(_with_services(work))
    return 0


def cmd_leaderboards_reconcile(args: argparse.Namespace) -> int:
    """Compare the open periods with the ledger, repair them, and report the drift found."""

    async def work(services: Any) -> object:
        programs = [(await services.programs.get_by_key(args.program)).id] if args.program else None
        report = await services.leaderboards.reconcile(programs)
        return {
            "entries": report.entries,
            "missing": report.missing,
            "extra": report.extra,
            "wrong": report.wrong,
            "drift": report.drift,
        }

    _print_json(_with_services(work))
    return 0


def cmd_fraud_backtest(args: argparse.Namespace) -> int:
    """Replay the last --days of recorded events through one rule's configuration; changes nothing."""
    try:
        params = json.loads(args.params) if args.params else None
    except json.JSONDecodeError as error:
        raise DomainError(f"--params: not JSON ({error})") from None

    async def work(services: Any) -> object:
        program = await services.programs.get_by_key(args.program)
        report = await Backtest(services.db, services.clock).run(
            program.id, args.rule, params, args.days, args.examples
        )
        return report.as_json()

    _print_json(_with_services(work))
    return 0


def cmd_predict_train(args: argparse.Namespace) -> int:
    """Train the program's churn model, score its members, print the holdout report."""

    async def work(services: Any) -> object:
        program = await services.programs.get_by_key(args.program)
        report = await services.churn.train(program.id, args.cutoffs)
        return {"program": args.program, **report.as_json()}

    _print_json(_with_services(work))
    return 0


def cmd_members_export(args: argparse.Namespace) -> int:
    """Write exportMember's document of one member to --output (readable by its owner only) or stdout."""
    from domain.private_files import write_private

    async def work(services: Any) -> object:
        program = await services.programs.get_by_key(args.program)
        return await services.exports.export(program.id, args.member)

    document = _with_services(work)
    if args.output is None:
        _print_json(document)
    else:
        write_private(Path(args.output), orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete (or with --dry-run count) what the retention settings let go; JSON report on stdout."""
    from api.retention_windows import stored_windows
    from domain.ops.event_retention import EventPartitionPruner
    from domain.ops.retention import Pruner, report_json

    async def work(services: Any) -> object:
        events = None
        if args.events_retention is not None:  # refused before anything is deleted
            windows = await stored_windows(services.db, services.segments.engine)
            events = await EventPartitionPruner(services.db, services.clock).run(
                args.events_retention, windows, args.dry_run
            )
        pruner = Pruner(services.db, services.clock, services.settings.retention, batch=args.batch)
        return report_json(args.dry_run, await pruner.run(args.dry_run), events)

    _print_json(_with_services(work))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import migrations
    from api.demo import ReplayClock, seed_demo
    from api.serving import listen

    data_dir = Settings.from_env().require_data_dir("the demo")
    settings = _settings(demo=True)
    # a taken port fails before seeding; `make demo` runs this command, so its way out is named too
    make_hint = f" (make demo PORT={args.port + 1})"
    listener = None if args.no_serve else listen(args.host, args.port, make_hint)
    try:
        migrations.upgrade(settings.require_database_url())
        clock = ReplayClock()
        credentials = _with_services(lambda services: seed_demo(services, data_dir, clock), settings, clock)
    except BaseException:
        if listener is not None:
            listener.close()
        raise
    _print_demo_banner(credentials, args.host, args.port, data_dir)
    if listener is None:
        return 0
    args.demo = True
    args.workers = 1
    return cmd_serve(args, listener)


def _print_demo_banner(credentials: Any, host: str, port: int, data_dir: Path) -> None:
    admin = credentials["admin"]
    url = f"http://{host}:{port}"
    print(
        f"""
Demo program {credentials["program"]!r} is ready; its data is in {data_dir}.

  Admin console:  {url}/admin
  GraphiQL:       {url}/graphql
  Dashboard:      {url}/dashboard
  Admin:          {admin["email"]} / {admin["password"]}
  TOTP code:      {sys.executable} -c "import pyotp; print(pyotp.TOTP('{admin["totpSecret"]}').now())"
                  (or add {admin["provisioningUri"]} to an authenticator app)
  API key:        {credentials["apiKey"]}   (send as: Authorization: Bearer <key>)
  Read-only key:  {credentials["readOnlyKey"]}   (segments:read, leaderboards:read; for the dashboard)
{_role_admin_lines(credentials.get("roleAdmins", []))}

  Log in with:  mutation {{ login(email: "{admin["email"]}",
                             password: "...", totpCode: "...") {{ token }} }}
  Credentials are kept in {data_dir / "demo-credentials.json"}.
""",
        flush=True,
    )


def _role_admin_lines(admins: list[dict[str, str]]) -> str:
    """One line per demo admin of another role (same TOTP command, with its own secret)."""
    return "\n".join(
        f"  {a['role'].title() + ':':<15} {a['email']} / {a['password']}   (TOTP secret {a['totpSecret']})"
        for a in admins
    )


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class _Parser(argparse.ArgumentParser):
    """Usage errors in the `loyalty: CODE: message` form too (exit code 2, as argparse's)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"loyalty: USAGE: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="loyalty", description="Loyalty segmentation engine")
    _common_options(parser, argparse.SUPPRESS)
    parser.set_defaults(data_dir=None, debug=False)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the GraphQL API")
    _server_options(serve)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="a local demo: generate a secret key in the data directory if LOYALTY_SECRET_KEY is not set, "
        "and show the schema to callers without a token unless LOYALTY_INTROSPECTION is set",
    )
    serve.set_defaults(func=cmd_serve)

    db = commands.add_parser("db", help="database migrations").add_subparsers(
        dest="db_command", required=True
    )
    db.add_parser("upgrade", help="migrate to the newest revision").set_defaults(func=cmd_db_upgrade)

    commands.add_parser("schema", help="print the GraphQL SDL").set_defaults(func=cmd_schema)

    program = commands.add_parser("program").add_subparsers(dest="program_command", required=True)
    create_program = program.add_parser("create", help="create a program with the default earning rules")
    create_program.add_argument("--key", required=True)
    create_program.add_argument("--name", required=True)
    create_program.add_argument("--kind", required=True, choices=["B2C", "B2B", "B2E"])
    create_program.add_argument("--auto-create-members", action="store_true")
    create_program.set_defaults(func=cmd_program_create)

    admin = commands.add_parser("admin").add_subparsers(dest="admin_command", required=True)
    create_admin = admin.add_parser("create", help="create an admin (password + TOTP)")
    create_admin.add_argument("--email", required=True)
    create_admin.add_argument("--password", required=True)
    create_admin.add_argument("--program", required=True, help="program key")
    create_admin.add_argument(
        "--role", default="OWNER", help="OWNER (default), ADMIN, MARKETER, REVIEWER or VIEWER"
    )
    create_admin.set_defaults(func=cmd_admin_create)

    apikey = commands.add_parser("apikey").add_subparsers(dest="apikey_command", required=True)
    create_key = apikey.add_parser("create", help="create an integration API key (shown once)")
    create_key.add_argument("--program", required=True, help="program key")
    create_key.add_argument("--name", required=True)
    create_key.add_argument("--scopes", help="comma-separated, e.g. members:write,events:write")
    create_key.set_defaults(func=cmd_apikey_create)

    segments = commands.add_parser("segments").add_subparsers(dest="segments_command", required=True)
    recompute = segments.add_parser("recompute", help="refresh RFM/ABC, then recompute segments")
    recompute.add_argument("--program", required=True, help="program key")
    recompute.add_argument("--keys", help="comma-separated segment keys (default: all)")
    recompute.set_defaults(func=cmd_segments_recompute)

    tiers = commands.add_parser("tiers").add_subparsers(dest="tiers_command", required=True)
    place = tiers.add_parser("recompute", help="place every member at the tier its value reaches now")
    place.add_argument("--program", help="program key (default: every program with a tier ladder)")
    place.set_defaults(func=cmd_tiers_recompute)

    analytics = commands.add_parser("analytics").add_subparsers(dest="analytics_command", required=True)
    record = analytics.add_parser("record", help="record the conversions and reactions reports count")
    record.add_argument("--program", required=True, help="program key")
    record.add_argument("--all", action="store_true", help="recompute every row, not only unrecorded ones")
    record.set_defaults(func=cmd_analytics_record)

    points = commands.add_parser("points").add_subparsers(dest="points_command", required=True)
    expire = points.add_parser("expire", help="post the EXPIRY entries of every due lot now")
    expire.add_argument("--program", help="program key (default: every program)")
    expire.set_defaults(func=cmd_points_expire)

    members = commands.add_parser("members").add_subparsers(dest="members_command", required=True)
    export = members.add_parser("export", help="write everything held about a member as one JSON document")
    export.add_argument("--program", required=True, help="program key")
    export.add_argument("--member", required=True, help="the member's externalId")
    export.add_argument("--output", help="file to write (owner-only permissions); default: stdout")
    export.set_defaults(func=cmd_members_export)

    boards = commands.add_parser("leaderboards").add_subparsers(dest="leaderboards_command", required=True)
    rebuild = boards.add_parser("rebuild", help="rebuild the Redis boards exactly from the ledger")
    rebuild.add_argument("--program", help="program key (default: every program)")
    rebuild.add_argument("--board", help="board key (default: every board)")
    rebuild.set_defaults(func=cmd_leaderboards_rebuild)
    reconcile = boards.add_parser("reconcile", help="report and repair drift of the open periods")
    reconcile.add_argument("--program", help="program key (default: every program)")
    reconcile.set_defaults(func=cmd_leaderboards_reconcile)

    fraud = commands.add_parser("fraud").add_subparsers(dest="fraud_command", required=True)
    backtest = fraud.add_parser(
        "backtest", help="replay recorded events through a rule configuration; reports, changes nothing"
    )
    backtest.add_argument("--program", required=True, help="program key")
    backtest.add_argument("--rule", required=True, help="rule name, e.g. velocity (see docs/fraud.md)")
    backtest.add_argument("--days", type=int, default=30, help="window to replay, counted back from now")
    backtest.add_argument("--params", help="thresholds to try, JSON, e.g. '{\"reviewAbove\": 10}'")
    backtest.add_argument("--examples", type=int, default=20, help="flagged events to list")
    backtest.set_defaults(func=cmd_fraud_backtest)

    predict = commands.add_parser("predict").add_subparsers(dest="predict_command", required=True)
    train = predict.add_parser("train", help="train the churn model and store every member's churnRisk7d")
    train.add_argument("--program", required=True)
    train.add_argument(
        "--cutoffs", type=int, default=8, help="weekly cutoffs; the newest quarter is the holdout"
    )
    train.set_defaults(func=cmd_predict_train)

    prune = commands.add_parser(
        "prune", help="delete what the retention settings let go (docs/operations.md, Retention)"
    )
    prune.add_argument("--dry-run", action="store_true", help="count per table what would go; delete nothing")
    prune.add_argument("--batch", type=int, default=5000, help="rows per delete transaction")
    prune.add_argument(
        "--events-retention",
        type=int,
        metavar="DAYS",
        help="also drop the event partitions older than DAYS (PostgreSQL); refused unless DAYS exceeds "
        "the longest window of any segment, ladder, board, challenge, fraud rule or churn model",
    )
    prune.set_defaults(func=cmd_prune)

    demo = commands.add_parser("demo", help="migrate, seed a demo program and serve it")
    _server_options(demo)
    demo.add_argument("--no-serve", action="store_true", help="seed and exit")
    demo.set_defaults(func=cmd_demo)
    for command in _commands(parser):  # before or after the command's name alike
        _common_options(command, argparse.SUPPRESS)
    return parser


def _common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--data-dir",
        default=default,
        help="where the embedded SQLite database, the embedded Redis server and the demo's files live "
        "(LOYALTY_DATA_DIR); commands that need one and have none refuse to run",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default, help="print the traceback of an unexpected error"
    )


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of the runnable commands (the leaves under `parser`)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _commands(child) or [child]
    return found


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")


def _thread_failed(failed: threading.ExceptHookArgs) -> None:
    """A worker thread that fails prints no traceback (aiosqlite's can, racing a connection that
    failed, after the command reported that failure itself): one log line; --debug shows all."""
    logging.getLogger("api.cli").debug("thread %s failed", failed.thread, exc_info=failed.exc_value)


def main(argv: list[str] | None = None) -> int:
    from api.logs import configure

    args = build_parser().parse_args(argv)
    if not args.debug:
        threading.excepthook = _thread_failed
    if args.data_dir:  # for this process and the server's workers alike
        os.environ["LOYALTY_DATA_DIR"] = str(Path(args.data_dir).expanduser().absolute())
    try:
        configure(Settings.from_env().log_format)
        result: int = args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("loyalty: INTERRUPTED: stopped before it finished\n")
        return 130
    except Exception as error:
        if args.debug:
            raise
        code, message = failure(error)
        sys.stderr.write(f"loyalty: {code}: {message}\n")
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
