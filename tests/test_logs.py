"""Logs: JSON lines off a terminal, a request id on every request and WebSocket, carried into loops' lines."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from api.logs import JsonFormatter, TextFormatter, resolve
from domain.background import Runner
from domain.ops import logcontext
from domain.settings import ConfigurationError, LogFormat, Settings
from tests.support.servers import PROTOCOL, running_server


def record(message: str, *args: object, **extra: Any) -> logging.LogRecord:
    line = logging.LogRecord("api.test", logging.WARNING, __file__, 1, message, args, None)
    line.__dict__.update(extra)
    return line


def test_json_lines_carry_the_context_the_extras_and_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord(
            "api.test", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    with logcontext.bound(request_id="req-1"):
        plain = orjson.loads(JsonFormatter().format(record("hello %s", "world", member="m1")))
        broken = orjson.loads(JsonFormatter().format(failed))
    assert plain.pop("time").endswith("+00:00")
    assert plain == {
        "level": "WARNING",
        "logger": "api.test",
        "message": "hello world",
        "request_id": "req-1",
        "member": "m1",
    }
    assert broken["message"] == "failed x"
    assert broken["request_id"] == "req-1"
    assert broken["exception"].startswith("Traceback")
    assert "ValueError: boom" in broken["exception"]
    assert "\n" not in JsonFormatter().format(failed)  # one line, whatever the traceback


def test_uvicorn_access_lines_get_their_fields() -> None:
    access = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "POST", "/graphql", "1.1", 200), None,
    )  # fmt: skip
    line = orjson.loads(JsonFormatter().format(access))
    assert (line["method"], line["path"], line["status"], line["client"]) == (
        "POST",
        "/graphql",
        200,
        "1.2.3.4:5",
    )


def test_text_lines_are_for_people() -> None:
    with logcontext.bound(loop="outbox-delivery", pass_id=7):
        text = TextFormatter().format(record("delivered %d", 3))
    assert re.fullmatch(r"\S+ \S+ WARNING api\.test \[loop=outbox-delivery pass_id=7\] delivered 3", text), (
        text
    )


def test_the_format_is_json_unless_stderr_is_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve(LogFormat.AUTO, io.StringIO()) == LogFormat.JSON
    assert resolve(LogFormat.AUTO, Terminal()) == LogFormat.TEXT
    assert resolve(LogFormat.JSON, Terminal()) == LogFormat.JSON
    assert resolve(LogFormat.TEXT, io.StringIO()) == LogFormat.TEXT
    assert Settings.from_env({"LOYALTY_LOG_FORMAT": "JSON"}).log_format == LogFormat.JSON
    with pytest.raises(ConfigurationError, match="LOYALTY_LOG_FORMAT must be one of auto, json, text"):
        Settings.from_env({"LOYALTY_LOG_FORMAT": "xml"})


async def test_every_response_carries_a_request_id_a_hostile_one_is_replaced(
    client: httpx.AsyncClient,
) -> None:
    made = (await client.get("/healthz")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert (await client.get("/healthz")).headers["x-request-id"] != made
    assert (await client.get("/healthz", headers={"X-Request-ID": "lb-42:a.b_c"})).headers[
        "x-request-id"
    ] == ("lb-42:a.b_c")
    hostile: list[bytes] = [b"x" * 65, b"a b", b"<script>", "\u00fc".encode("latin-1"), b"a\x00b", b""]
    for value in hostile:
        answered = (await client.get("/healthz", headers={b"X-Request-ID": value})).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", answered), value
    too_big = await client.post(
        "/graphql", content=b"x", headers={"content-length": str(10**9), "x-request-id": "big-1"}
    )
    assert too_big.status_code == 413
    assert too_big.headers["x-request-id"] == "big-1"


class Chatty:
    """A loop that logs one line per pass."""

    name = "chatty"
    interval = 60.0
    topics = frozenset({"news"})

    def __init__(self) -> None:
        self.passes = 0
        self.ran = asyncio.Event()

    async def run_once(self) -> bool:
        self.passes += 1
        logging.getLogger("domain.test").warning("pass %d", self.passes)
        self.ran.set()
        return False


async def test_a_background_pass_logs_its_loop_its_pass_and_the_request_that_woke_it() -> None:
    loop = Chatty()
    runner = Runner([loop])
    written = io.StringIO()
    handler = logging.StreamHandler(written)  # formats as it emits, in the pass's context, as in production
    handler.setFormatter(JsonFormatter())
    logging.getLogger("domain.test").addHandler(handler)
    runner.start()
    try:
        await asyncio.wait_for(loop.ran.wait(), 5)  # the first pass, woken by nothing
        loop.ran.clear()
        with logcontext.bound(request_id="req-77"):
            runner.wake(["news"])  # what a commit's announcement does in the request's context
        await asyncio.wait_for(loop.ran.wait(), 5)
    finally:
        await runner.stop()
        logging.getLogger("domain.test").removeHandler(handler)
    lines = [orjson.loads(line) for line in written.getvalue().splitlines()]
    assert [(line["loop"], line["pass_id"], line.get("caused_by")) for line in lines] == [
        ("chatty", 1, None),
        ("chatty", 2, "req-77"),
    ]


@pytest.mark.slow
async def test_the_server_logs_json_lines_with_each_request_s_id(settings: Settings, tmp_path: Path) -> None:
    stderr = tmp_path / "server.log"
    trusted = {"LOYALTY_TRUSTED_PROXIES": "127.0.0.1"}  # the test's requests come through a "proxy"
    async with running_server(settings, trusted, log_level="info", stderr_to=stderr) as server:
        async with httpx.AsyncClient(base_url=server.http) as http:
            answered = await http.get("/healthz", headers={"X-Request-ID": "probe-1"})
            await http.get("/healthz", headers={"X-Request-ID": "proxied", "X-Forwarded-For": "198.51.100.7"})
        assert answered.headers["x-request-id"] == "probe-1"
        async with connect(
            server.ws,
            subprotocols=[PROTOCOL],  # type: ignore[list-item]
            additional_headers={"X-Request-ID": "socket-1"},
        ) as socket:
            assert socket.response is not None
            assert socket.response.headers["x-request-id"] == "socket-1"
    lines = [orjson.loads(line) for line in stderr.read_bytes().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access" and line.get("path") == "/healthz"]
    assert [(line["request_id"], line["status"]) for line in access if line["request_id"] == "probe-1"] == [
        ("probe-1", 200)
    ]
    # the client a trusted proxy names, not the proxy, in the access line and in the context
    clients = {
        line["request_id"]: (line["message"].split()[0], line["client"], line["client_ip"]) for line in access
    }
    assert clients["proxied"] == ("198.51.100.7:0", "198.51.100.7:0", "198.51.100.7")
    assert clients["probe-1"][2] == "127.0.0.1"  # no X-Forwarded-For: the peer
    accepted = [
        line for line in lines if "WebSocket /graphql" in line["message"] and "[accepted]" in line["message"]
    ]
    assert [line["request_id"] for line in accepted] == ["socket-1"]
