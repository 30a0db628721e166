"""The embedded Redis server belongs to the process that started it: another process on the same
data directory uses it and never stops it while that owner runs, even when it is slow to answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.embedded_redis import acquire, release
from domain.settings import ConfigurationError
from tests.support.processes import Mark

#: The owner: starts the server, says so, and keeps it until its stdin closes.
OWNER = """
import sys
from pathlib import Path
from domain.embedded_redis import acquire
acquire(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A running process that owns the embedded server of `tmp_path`: (its pid, the server's pid).
    Closing its stdin ends it, and its server with it."""
    mark = Mark(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **mark.environ},
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        assert process.stdout.readline() == b"ready\n"
        owner_pid, server_pid = map(int, (tmp_path / "redis.owner").read_text().split())
        assert owner_pid == process.pid
        yield owner_pid, server_pid
    finally:
        process.stdin.close()
        process.wait(30)


def state(pid: int) -> str:
    """The process's state letter in /proc (R, S, T for stopped...), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_slow_server_of_a_running_owner_is_never_stopped(tmp_path: Path, owner: tuple[int, int]) -> None:
    owner_pid, server_pid = owner
    # given the owner's server does not answer (stopped here, as a busy or starved one would be)
    os.kill(server_pid, signal.SIGSTOP)
    try:
        # when another process wants it, then it gives up naming the owner, and sends no signal
        with pytest.raises(ConfigurationError) as refused:
            acquire(tmp_path, join_timeout=0.5)
        assert str(refused.value) == (
            f"the embedded Redis server in {tmp_path} belongs to process {owner_pid}, which is running, "
            "but it did not answer within 0.5 s; it was left running: try again, "
            f"or stop process {owner_pid} first"
        )
    finally:
        os.kill(server_pid, signal.SIGCONT)
    # and once the server answers again, the other process uses the same server (never a SIGTERM:
    # one sent to a stopped process would be pending, and end it now)
    joined = acquire(tmp_path, join_timeout=10)
    assert joined.owner is False
    release(joined)  # the last user of a server it did not start leaves it running
    assert state(server_pid) not in {"gone", "Z"}
    assert (tmp_path / "redis.owner").read_text().split() == [str(owner_pid), str(server_pid)]
