"""Background loops of a server process: the live relay, the time-flip scheduler, outbox delivery.

A loop does one bounded piece of work per `run_once` and says whether there may
be more. The runner calls it again at once while it has work, else waits until
its interval passes or one of its topics is announced (a commit elsewhere said
there is news, see `domain.db.engine.announce`). A failing pass is logged and
retried after the interval: a loop never dies of one bad pass. `stop` ends every
loop within STOP_TIMEOUT_S, whatever it was doing.

Every log line of a pass carries `loop` and `pass_id`, and `caused_by`: the
request id of the commit in this process that woke it, when one did (a pass
woken by its interval or by another process's commit has none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Protocol

from domain.ops import logcontext

log = logging.getLogger(__name__)

#: How long `Runner.stop` waits for the cancelled loops before it gives up on them.
STOP_TIMEOUT_S = 5.0


class Loop(Protocol):
    #: Shown in logs.
    name: str
    #: Longest wait between passes, in seconds.
    interval: float
    #: Announced topics that wake the loop early.
    topics: frozenset[str]

    async def run_once(self) -> bool:
        """Do one bounded pass; True when there may be more work right away."""
        ...


class Runner:
    """Runs loops as tasks of the current event loop; `wake` is fed by commits and by other processes."""

    def __init__(self, loops: Iterable[Loop]) -> None:
        self.loops = list(loops)
        self._events: dict[str, list[asyncio.Event]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: The request whose commit last woke each loop's event (read by that loop's next pass).
        self._causes: dict[asyncio.Event, str] = {}

    def wake(self, topics: Iterable[str]) -> None:
        """Wake the loops listening on `topics` ("*": every loop)."""
        cause = logcontext.request_id()
        for topic in topics:
            chosen = self._events.values() if topic == "*" else [self._events.get(topic, [])]
            for events in chosen:
                for event in events:
                    event.set()
                    if cause is not None:
                        self._causes[event] = cause

    def start(self) -> None:
        for loop in self.loops:
            event = asyncio.Event()
            for topic in loop.topics:
                self._events.setdefault(topic, []).append(event)
            self._tasks.append(asyncio.create_task(self._run(loop, event), name=f"loop:{loop.name}"))

    async def stop(self) -> None:
        """Cancel every loop and wait (at most STOP_TIMEOUT_S) for them to end.

        A loop still running then is logged and kept (an unreferenced task may be destroyed
        while it runs); a later `stop` cancels it again."""
        pending: set[asyncio.Task[None]] = set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            for task in pending:
                log.error(
                    "background task %s did not stop within %.1f s; it is left running",
                    task.get_name(),
                    STOP_TIMEOUT_S,
                )
        self._tasks = list(pending)
        self._events.clear()
        self._causes.clear()

    async def _run(self, loop: Loop, event: asyncio.Event) -> None:
        passes = 0
        while True:
            event.clear()
            passes += 1
            cause = self._causes.pop(event, None)
            with logcontext.bound(loop=loop.name, pass_id=passes, caused_by=cause):
                try:
                    more = await loop.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background loop %s failed; retrying in %.1f s", loop.name, loop.interval)
                    more = False
            if more:
                await asyncio.sleep(0)
                continue
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that
            # arrives as the event is set (a commit announced at shutdown), and the loop ran on
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(loop.interval):
                    await event.wait()
