"""The harness the benches share: servers, databases, concurrency, CPU accounting and figures.

What is here is independent of any workload: fresh PostgreSQL databases migrated with
`migrations.upgrade` (`PgServer`), autovacuum's ANALYZEs done by hand when the server runs
without it (`AutoAnalyze`), a real `loyalty serve` process with its program and API key made with
the CLI (`serving`), N requests in flight with their latencies (`run_concurrently`), the CPU of
this client, the server, the PostgreSQL backends and the machine (`CpuMeter`), and nearest-rank
percentiles (`PhaseResult`). bench/ingest.py, bench/pipeline.py, bench/realtime.py and
bench/leaderboards.py build on it. Linux only (CPU comes from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.engine import URL, make_url

import migrations

REPO = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).parent / "loyalty"
#: The `loyalty` CLI of this interpreter's environment (the module when the script is not there).
LOYALTY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "api.cli"]
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: 2 cores are shared by the server workers, PostgreSQL and this client: see docs/benchmarks.md.
DEFAULT_WORKERS = 2
DEFAULT_CONCURRENCY = 4


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every HTTP bench shares: batch size, the services, workers and requests in flight."""
    parser.add_argument("--batch", type=int, default=500, help="events per recordEvents call (<= 1000)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LOYALTY_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="the PostgreSQL server to create the fresh bench databases on",
    )
    parser.add_argument("--redis-url", default=os.environ.get("LOYALTY_BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="server worker processes")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight")


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------------------ figures


@dataclass
class PhaseResult:
    events: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    points: int = 0
    expected_points: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the batch latencies, in ms."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def run_concurrently(
    count: int,
    concurrency: int,
    work: Callable[[int], Awaitable[float]],
    label: str,
    deadline: float | None = None,
) -> tuple[float, list[float]]:
    """Run work(0..count-1) with `concurrency` in flight; returns wall seconds and each latency (ms).

    With a `deadline` (a `time.perf_counter()` instant) no new item starts after it: the items that
    ran are then a prefix 0..k-1, and only their latencies are returned."""
    numbers = iter(range(count))
    latencies: list[float] = [0.0] * count
    done = 0
    step = max(1, count // 10)

    async def worker() -> None:
        nonlocal done
        for number in numbers:
            latencies[number] = await work(number)
            done += 1
            if done % step == 0:
                log(f"{label}: {done}/{count} batches, {time.perf_counter() - started:.1f}s")
            if deadline is not None and time.perf_counter() >= deadline:
                return

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies[:done]


# ------------------------------------------------------------------------------- CPU accounting


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of one process in seconds (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children so far (a PostgreSQL postmaster and its backends);
    a child that exited took its share with it."""
    return _proc_cpu_s(pid) + sum(_proc_cpu_s(child) for child in _children(pid))


def _machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores, /proc/stat)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _pids_with(marker: str) -> list[int]:
    """Processes whose command line contains `marker` (PostgreSQL backends show their database)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuMeter:
    """CPU seconds over a phase: this client, the server's process tree, the PostgreSQL backends of
    one database, and the whole machine (the rest is other work on the machine, e.g. WAL writer)."""

    def __init__(self, server_pid: int | None, database: str) -> None:
        self.database = database
        self.server_pids = [server_pid, *_children(server_pid)] if server_pid else []
        self.client = time.process_time()
        self.server = self._sum(self.server_pids)
        self.backends = {pid: _proc_cpu_s(pid) for pid in _pids_with(f" {database} ")}
        self.machine = _machine_busy_s()

    @staticmethod
    def _sum(pids: Sequence[int]) -> float:
        return sum(_proc_cpu_s(pid) for pid in pids)

    def stop(self) -> dict[str, float]:
        client = time.process_time() - self.client
        machine = _machine_busy_s() - self.machine
        server = self._sum(self.server_pids) - self.server if self.server_pids else 0.0
        pids = set(self.backends) | set(_pids_with(f" {self.database} "))
        postgres = sum(_proc_cpu_s(pid) - self.backends.get(pid, 0.0) for pid in pids)
        figures = {"client_cpu_s": client, "postgres_cpu_s": postgres}
        if self.server_pids:
            figures["server_cpu_s"] = server
        figures["other_cpu_s"] = machine - client - server - postgres
        figures["machine_busy_cpu_s"] = machine
        return {name: round(value, 2) for name, value in figures.items()}


# ------------------------------------------------------------------------------------- databases


@dataclass(frozen=True)
class PgServer:
    url: URL

    @classmethod
    def parse(cls, database_url: str) -> PgServer:
        url = make_url(database_url)
        if url.get_backend_name() != "postgresql":
            raise SystemExit(f"--database-url: a PostgreSQL server is needed, got {url.get_backend_name()}")
        return cls(url.set(drivername="postgresql+asyncpg"))

    def database_url(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    async def connect(self, name: str) -> Any:
        return await asyncpg.connect(
            host=self.url.host or "127.0.0.1",
            port=self.url.port or 5432,
            user=self.url.username or "postgres",
            password=self.url.password,
            database=name,
        )

    async def create(self, name: str) -> str:
        connection = await self.connect("postgres")
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        url = self.database_url(name)
        await asyncio.to_thread(migrations.upgrade, url)  # alembic runs its own event loop
        return url

    async def drop(self, name: str) -> None:
        connection = await self.connect("postgres")
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


class AutoAnalyze:
    """ANALYZE each table that has changed by 50 rows + 10% (autovacuum's default trigger).

    Used when the server runs with autovacuum off (as the dev/CI PostgreSQL here does): without
    statistics the planner believes a growing table is tiny and the pipeline's lookups degrade
    to scans (the externalId lookup to a scan of all the program's events per batch, see
    docs/benchmarks.md). Like autovacuum it looks at every table: besides `events`, the audit
    reads `ledger_entries`, `fraud_receipts` and `fraud_devices` while they grow (members are
    analyzed once after they are loaded). Only the end-to-end phases need it: the floor makes no
    reads. The ANALYZE work runs on the same machine while the clock runs, as autovacuum's would.
    """

    INTERVAL_S = 5.0

    def __init__(self, pg: PgServer, database: str) -> None:
        self.pg = pg
        self.database = database
        self.runs = 0
        self.seconds = 0.0
        self._task: asyncio.Task[None] | None = None

    async def analyze_due(self, connection: Any) -> None:
        due = await connection.fetch(
            """
            SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
            WHERE s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0)
            """
        )
        for (table,) in due:
            started = time.perf_counter()
            await connection.execute(f'ANALYZE "{table}"')
            self.seconds += time.perf_counter() - started
            self.runs += 1

    async def _loop(self) -> None:
        connection = await self.pg.connect(self.database)
        try:
            while True:
                await asyncio.sleep(self.INTERVAL_S)
                await self.analyze_due(connection)
        finally:
            await connection.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return {"analyze_runs": self.runs, "analyze_s": round(self.seconds, 2)}


async def autovacuum_on(pg: PgServer) -> bool:
    connection = await pg.connect("postgres")
    try:
        return bool(await connection.fetchval("SELECT current_setting('autovacuum')::boolean"))
    finally:
        await connection.close()


async def analyze(pg: PgServer, database: str) -> None:
    connection = await pg.connect(database)
    try:
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def checkpoint(pg: PgServer, database: str) -> None:
    """Flush the dirty pages of earlier work before a clock starts (untimed; needs superuser)."""
    connection = await pg.connect(database)
    try:
        await connection.execute("CHECKPOINT")
    except asyncpg.PostgresError as error:
        log(f"CHECKPOINT skipped: {error}")
    finally:
        await connection.close()


async def table_sizes(pg: PgServer, database: str, *, compact: bool = False) -> dict[str, dict[str, int]]:
    """Every table of `database` holding rows: its rows and bytes on disk (`pg_total_relation_size`:
    heap, indexes and TOAST), as loaded; with `compact`, after `VACUUM FULL` (no dead rows, no
    free space: the least the same rows can take). Tables without rows are left out."""
    connection = await pg.connect(database)
    try:
        if compact:
            await connection.execute("VACUUM FULL")
        names = await connection.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "ORDER BY c.relname"
        )
        sizes: dict[str, dict[str, int]] = {}
        for (name,) in names:
            rows = int(await connection.fetchval(f'SELECT count(*) FROM "{name}"'))
            if rows:
                total = int(
                    await connection.fetchval(  # a partitioned table's bytes are its partitions'
                        "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) "
                        "FROM pg_partition_tree($1::regclass)), pg_total_relation_size($1::regclass))",
                        name,
                    )
                )
                sizes[name] = {"rows": rows, "bytes": total, "bytes_per_row": round(total / rows)}
        return sizes
    finally:
        await connection.close()


# ---------------------------------------------------------------------------------- end to end


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # uvicorn's supervisor stops its workers
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *LOYALTY,
        *args,
        env=env,
        cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"loyalty {' '.join(args)} failed: {stderr.decode(errors='replace')}")
    result: dict[str, Any] = orjson.loads(stdout)
    return result


def start_server(env: dict[str, str], workers: int, data_dir: Path) -> Server:
    port = free_port()
    log_path = data_dir / "server.log"
    with log_path.open("wb") as sink:
        process = subprocess.Popen(
            [
                *LOYALTY,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=str(REPO),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Server(process, f"http://127.0.0.1:{port}", log_path)


#: How long a server may take to answer /healthz (its workers import the app: slow on a busy machine).
STARTUP_TIMEOUT_S = float(os.environ.get("LOYALTY_BENCH_STARTUP_TIMEOUT_S", "60"))


async def wait_healthy(server: Server, http: httpx.AsyncClient, timeout_s: float | None = None) -> None:
    timeout_s = STARTUP_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.tail()}")
        try:
            if (await http.get(f"{server.base_url}/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the server did not become healthy in {timeout_s:.0f}s:\n{server.tail()}")


async def graphql(http: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    response = await http.post(url, content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"POST /graphql: HTTP {response.status_code}: {response.text[:500]}")
    payload: dict[str, Any] = orjson.loads(response.content)
    if payload.get("errors"):
        raise RuntimeError(f"POST /graphql: {orjson.dumps(payload['errors'][:3]).decode()}")
    data: dict[str, Any] = payload["data"]
    return data


async def clear_redis(redis_url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    except Exception as error:  # derived data only; a failed clean-up must not hide the figures
        log(f"redis clean-up skipped: {error}")
    finally:
        await client.aclose()


@dataclass
class Api:
    """A running server with its fresh database: where to POST, with which key, and the process."""

    pg: PgServer
    database: str
    database_url: str
    server: Server
    http: httpx.AsyncClient
    endpoint: str
    headers: dict[str, str]

    async def call(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        return await graphql(self.http, self.endpoint, self.headers, orjson.dumps(body))


@contextlib.asynccontextmanager
async def serving(
    pg: PgServer,
    database: str,
    redis_url: str,
    run_id: str,
    label: str,
    *,
    workers: int,
    concurrency: int,
    scopes: str,
    env_extra: dict[str, str] | None = None,
) -> AsyncIterator[Api]:
    """A fresh database `database` (migrated), program `bench` and an API key with `scopes` made with
    the CLI, `loyalty serve --workers W` on a free port, and an httpx client with `concurrency`
    connections. On exit the server stops, its Redis keys (a prefix of their own) and data
    directory go; the database stays (the caller reads its totals, then drops it)."""
    url = await pg.create(database)
    data_dir = Path(tempfile.mkdtemp(prefix=f"loyalty-bench-{run_id}-"))
    redis_prefix = f"bench:{run_id}:{label}:"
    env = {
        **os.environ,
        "LOYALTY_DATABASE_URL": url,
        "LOYALTY_REDIS_URL": redis_url,
        "LOYALTY_REDIS_PREFIX": redis_prefix,
        "LOYALTY_SECRET_KEY": secrets.token_urlsafe(48),
        "LOYALTY_DATA_DIR": str(data_dir),
        **(env_extra or {}),
    }
    server: Server | None = None
    try:
        await cli(env, "program", "create", "--key", "bench", "--name", "Bench", "--kind", "B2C")
        created = await cli(
            env, "apikey", "create", "--program", "bench", "--name", "bench", "--scopes", scopes
        )
        server = start_server(env, workers, data_dir)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0)) as http:
            await wait_healthy(server, http)
            log(f"{label}: server up at {server.base_url} with {workers} worker(s)")
            headers = {"Authorization": f"Bearer {created['key']}", "Content-Type": "application/json"}
            yield Api(pg, database, url, server, http, f"{server.base_url}/graphql", headers)
    finally:
        if server is not None:
            server.stop()
        await clear_redis(redis_url, redis_prefix)
        shutil.rmtree(data_dir, ignore_errors=True)
