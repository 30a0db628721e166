"""A real Redis Cluster for the scale tests: Debian's redis-server in cluster mode on loopback ports.

Three masters and a replica of each (`redis-cli --cluster create --cluster-replicas 1`), without
persistence, in a temporary directory. `make test-scale` sets LOYALTY_TEST_REDIS=cluster and the
session fixture `redis_cluster` (tests/conftest.py) starts one for the run; tests/support/backends.py
points the app's Redis at it (`redis+cluster://...`). Failover drills: `failover` (a replica takes over
its master's slots gracefully, CLUSTER FAILOVER) and `kill_master` (the master dies; its replica is
elected after the node timeout) with `revive` (the dead node restarts and rejoins as a replica).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

MASTERS = 3
#: How long a master may be unreachable before its replica is elected (ms): short, for the drills.
NODE_TIMEOUT_MS = 1000
#: Generous bound for the cluster to form or fail over on a loaded 2-core machine.
WITHIN_S = 60.0
#: A node's cluster-bus port is its port + 10000; both must be free.
_BUS_OFFSET = 10000


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """`count` ports whose cluster-bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 29999)
        if port not in ports and _free(port) and _free(port + _BUS_OFFSET):
            ports.append(port)
    return ports


def _wait(check: Callable[[], bool], what: str, within: float = WITHIN_S) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.1)


@dataclass
class Node:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    #: False: a plain one-server redis-server (bench/scale.py's baseline).
    cluster_enabled: bool = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # the whole file: a revived node keeps nodes.conf and so its identity, and rejoins
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes" if self.cluster_enabled else "no",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", "redis.log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(self.answers, f"redis-server on {self.port}", 30)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5)

    def answers(self) -> bool:
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def cluster_state(self) -> str:
        """ "ok" when this node sees every slot served."""
        with self.client() as c:
            info = c.execute_command("CLUSTER", "INFO")
        if isinstance(info, str):
            info = dict(line.split(":", 1) for line in info.split() if ":" in line)
        return str(info["cluster_state"])

    def role(self) -> str:
        with self.client() as c:
            return str(c.execute_command("ROLE")[0])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self.process = None


@dataclass
class RedisClusterProcesses:
    directory: Path
    #: Replicas per master: 1 for the failover drills; 0 for bench/scale.py's side by side.
    replicas: int = 1
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The app's LOYALTY_REDIS_URL: every master and replica as a startup node."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self) -> None:
        self.nodes = [Node(p, self.directory / str(p)) for p in _free_ports(MASTERS * (1 + self.replicas))]
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=WITHIN_S,
        )
        self.wait_healthy()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    # ---------- state ----------

    def alive(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None]

    def healthy(self) -> bool:
        """Every live node says the cluster is ok, and every master has a live replica in sync."""
        try:
            if any(n.cluster_state() != "ok" for n in self.alive()):
                return False
            masters = [n for n in self.alive() if n.role() == "master"]
            replicas = [n for n in self.alive() if n.role() == "slave"]
            return len(masters) == MASTERS and all(self._synced(r) for r in replicas)
        except (redis.RedisError, KeyError):
            return False

    @staticmethod
    def _synced(replica: Node) -> bool:
        with replica.client() as c:
            return bool(c.execute_command("ROLE")[3] == "connected")

    def wait_healthy(self) -> None:
        _wait(self.healthy, "the Redis Cluster healthy (every slot served, replicas in sync)")

    def master_of(self, key: str) -> Node:
        with self.alive()[0].client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(f"no master serves {key!r}")

    def replica_of(self, master: Node) -> Node:
        for node in self.alive():
            with node.client() as c:
                role = c.execute_command("ROLE")
            if role[0] == "slave" and int(role[2]) == master.port:
                return node
        raise LookupError(f"master {master.address} has no live replica")

    # ---------- drills ----------

    def failover(self, key: str) -> Node:
        """The replica of `key`'s master takes its slots over (CLUSTER FAILOVER): the new master."""
        replica = self.replica_of(self.master_of(key))
        with replica.client() as c:
            c.execute_command("CLUSTER", "FAILOVER")
        _wait(lambda: replica.role() == "master", f"{replica.address} promoted")
        self.wait_healthy()
        return replica

    def kill_master(self, key: str) -> Node:
        """Kill `key`'s master; wait until its replica is elected. The dead node (for `revive`)."""
        master = self.master_of(key)
        replica = self.replica_of(master)
        master.kill()
        _wait(lambda: replica.role() == "master", f"{replica.address} elected after its master died")
        _wait(
            lambda: all(n.cluster_state() == "ok" for n in self.alive()),
            "every slot served again",
        )
        return master

    def revive(self, node: Node) -> None:
        """Restart a killed node: it rejoins as a replica of the master that replaced it."""
        node.start()
        self.wait_healthy()


@contextlib.contextmanager
def running_redis_cluster(replicas: int = 1) -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses(Path(tempfile.mkdtemp(prefix="loyalty-redis-cluster-")), replicas)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """A Redis Cluster for the whole run, torn down at its end."""
    with running_redis_cluster() as cluster:
        yield cluster


@contextlib.contextmanager
def running_redis_server() -> Iterator[Node]:
    """One plain redis-server, configured as the cluster's nodes are (bench/scale.py's baseline)."""
    directory = Path(tempfile.mkdtemp(prefix="loyalty-redis-single-"))
    node = Node(_free_ports(1)[0], directory, cluster_enabled=False)
    try:
        node.start()
        yield node
    finally:
        node.kill()
        shutil.rmtree(directory, ignore_errors=True)
