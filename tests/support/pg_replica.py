"""A PostgreSQL primary and its streaming replica of the test's own, from Debian's binaries.

`PgPair.start()` initdb's a primary (wal_level=replica) in a temporary directory, takes a base
backup of it with `pg_basebackup -R` (which writes standby.signal and primary_conninfo) and starts
that as a hot standby; both listen on free loopback ports only and keep their sockets in the
directory. PostgreSQL refuses to run as root, so as root every command runs as `postgres`
(runuser). Durability is off (fsync, full_page_writes): these clusters live for one test run.
Nothing here touches the shared server on 5432.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import migrations
from tests.support.servers import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
#: LOYALTY_TEST_REPLICA=1 (`make test-scale`): the whole session's services run on the pair, and
#: every commit waits until the replica has applied it (synchronous_commit = remote_apply), so the
#: suite's read-after-write assertions hold on the replica too.
SUITE_ON_REPLICA = os.environ.get("LOYALTY_TEST_REPLICA") == "1"
DATABASE = "loyalty"
#: Generous bound for a cluster to start, stop or catch up on a loaded 2-core machine.
WITHIN_S = 60


def missing() -> str | None:
    """Why the pair cannot be started here (a reason for pytest.skip), or None."""
    if not (BIN / "pg_basebackup").exists():
        return f"no PostgreSQL 15 binaries in {BIN} (apt-get install postgresql-15)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


@pytest.fixture(scope="session")
def pg_pair() -> Iterator[PgPair]:
    """A migrated primary and its streaming replica, caught up; stopped and removed afterwards."""
    reason = missing()
    if reason and os.environ.get("LOYALTY_TEST_SCALE"):  # `make test-scale`: the harness must run
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)
    pair = PgPair.start()
    try:
        migrations.upgrade(pair.primary_url)
        pair.wait_replayed()
        if SUITE_ON_REPLICA:
            pair.synchronous("*")
        yield pair
    finally:
        pair.stop()


@dataclass
class PgPair:
    directory: Path
    primary_port: int
    replica_port: int

    @property
    def primary_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.primary_port}/{DATABASE}"

    @property
    def replica_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.replica_port}/{DATABASE}"

    @classmethod
    def start(cls) -> PgPair:
        directory = Path(tempfile.mkdtemp(prefix="loyalty-pg-replica-"))
        pair = cls(directory, free_port(), free_port())
        try:
            pair._init_primary()
            pair._clone_replica()
            pair.start_replica()
            pair.wait_streaming()
        except BaseException:
            pair.stop()
            raise
        return pair

    def _init_primary(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        _run("initdb", "-D", str(self.primary), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.primary_port),
            "unix_socket_directories": f"'{self.directory}'",
            "wal_level": "replica",
            "max_wal_senders": "4",
            "hot_standby": "on",
            "hot_standby_feedback": "on",  # the primary's vacuum spares rows the replica's reads see
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
        }
        with (self.primary / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        _run("pg_ctl", "-D", str(self.primary), "-l", str(self.directory / "primary.log"), "-w", "start")
        self.sql(self.primary_port, f"CREATE DATABASE {DATABASE}", database="postgres")

    def _clone_replica(self) -> None:
        port = str(self.primary_port)
        _run("pg_basebackup", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-D", str(self.replica), "-R",
             "-X", "stream", "-c", "fast", "--no-sync")  # fmt: skip
        with (self.replica / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.replica_port}\n")

    @property
    def primary(self) -> Path:
        return self.directory / "primary"

    @property
    def replica(self) -> Path:
        return self.directory / "replica"

    def start_replica(self) -> None:
        _run("pg_ctl", "-D", str(self.replica), "-l", str(self.directory / "replica.log"), "-w", "start")

    @property
    def replica_running(self) -> bool:
        return (self.replica / "postmaster.pid").exists()

    def stop_replica(self) -> None:
        """An outage: the replica stops at once (immediate mode), and refuses connections."""
        _run("pg_ctl", "-D", str(self.replica), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        for data in (self.replica, self.primary):
            if (data / "postmaster.pid").exists():
                _run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)

    def wait_streaming(self) -> None:
        """Until the primary's WAL sender streams to the replica."""
        query = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        _until(lambda: self.sql(self.primary_port, query) == "1", "the replica streaming")

    def wait_replayed(self) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        lsn = self.sql(self.primary_port, "SELECT pg_current_wal_lsn()")
        replayed = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
        _until(lambda: self.sql(self.replica_port, replayed) == "t", f"the replica replaying up to {lsn}")

    def pause_replay(self) -> None:
        """The replica keeps receiving WAL but applies none of it: it shows the data as it is now."""
        self.wait_replayed()
        self.sql(self.replica_port, "SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.sql(self.replica_port, "SELECT pg_wal_replay_resume()")
        self.wait_replayed()

    def synchronous(self, standbys: str) -> None:
        """Commits wait until the replica applied them (`standbys` "*"), or not at all ("")."""
        self.sql(self.primary_port, f"ALTER SYSTEM SET synchronous_standby_names = '{standbys}'")
        self.sql(self.primary_port, "ALTER SYSTEM SET synchronous_commit = 'remote_apply'")
        self.sql(self.primary_port, "SELECT pg_reload_conf()")

    @contextmanager
    def asynchronous(self) -> Iterator[None]:
        """Commits do not wait for the replica inside (its replay may be paused or it may be down)."""
        before = self.sql(self.primary_port, "SHOW synchronous_standby_names")
        self.synchronous("")
        try:
            yield
        finally:
            self.synchronous(before)

    def sql(self, port: int, query: str, database: str = DATABASE) -> str:
        """One statement through psql; its output, unaligned and without headers."""
        return _run(
            "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database, "-Atc", query
        )


def _run(command: str, *args: str, check: bool = True) -> str:
    argv = [str(BIN / command), *args]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=WITHIN_S, cwd="/", check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WITHIN_S} s: {what}")
        time.sleep(0.1)
