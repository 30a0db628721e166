"""Finding the processes a test started, children and daemonized grandchildren included.

A process tree is marked twice: LOYALTY_TEST_MARK=<id> in the environment, which every child
inherits, and a private directory. redis-server overwrites its environment's memory with its
process title, but it runs in its data directory (redis.conf `dir`), so a process carrying the
environment mark or running inside the directory is one of the test's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MARK = "LOYALTY_TEST_MARK"


@dataclass(frozen=True)
class Mark:
    directory: Path
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def environ(self) -> dict[str, str]:
        """What to add to the environment of the processes the test starts."""
        return {MARK: self.id}


def marked(mark: Mark) -> dict[int, str]:
    """Running (not zombie) processes of `mark`: pid -> command name."""
    needle = f"{MARK}={mark.id}".encode()
    directory = mark.directory.resolve()
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            inside = Path(os.readlink(proc / "cwd")).is_relative_to(directory)
            if not inside and needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            stat = (proc / "stat").read_text()
            name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()[0]
            if state != "Z":
                found[int(proc.name)] = name
    return found


async def left_after(mark: Mark, within: float) -> dict[int, str]:
    """The processes of `mark` still running after `within` seconds (returns as soon as none are)."""
    for _ in range(int(within * 10)):
        remaining = marked(mark)
        if not remaining:
            return remaining
        await asyncio.sleep(0.1)
    return marked(mark)
