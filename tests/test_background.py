"""The background loop runner: stopping always ends its loops, whatever they were doing."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from domain import background
from domain.background import Runner


class IdleLoop:
    """A loop with nothing to do that sleeps long between passes."""

    name = "idle"
    interval = 3600.0
    topics: frozenset[str] = frozenset({"news"})

    def __init__(self) -> None:
        self.passes = 0

    async def run_once(self) -> bool:
        self.passes += 1
        return False


async def _waiting(runner: Runner, loop: IdleLoop, passes: int) -> None:
    """Until `loop` has made `passes` passes and waits for its next wake-up (a bounded poll)."""
    for _ in range(1000):
        if loop.passes >= passes:
            await asyncio.sleep(0)
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"the loop made {loop.passes} passes, not {passes}")


async def test_stop_ends_a_loop_that_was_woken_just_before() -> None:
    # given a loop waiting for news
    loop = IdleLoop()
    runner = Runner([loop])
    runner.start()
    await _waiting(runner, loop, 1)

    # when news arrives and the runner is stopped in the same instant (a commit announced at shutdown)
    runner.wake(["news"])
    stopping = asyncio.ensure_future(runner.stop())

    # then the stop completes: the wake-up does not swallow the cancellation
    done, _ = await asyncio.wait([stopping], timeout=10)
    assert stopping in done, "Runner.stop() did not return: a loop survived its cancellation"


async def test_stop_gives_up_on_a_loop_that_ignores_its_cancellation_and_keeps_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given a pass that swallows cancellation (a misbehaving library) and then waits on something
    # only it can reach, until it is cancelled once more
    monkeypatch.setattr(background, "STOP_TIMEOUT_S", 0.5)
    started, ended = asyncio.Event(), asyncio.Event()

    class StubbornLoop(IdleLoop):
        name = "stubborn"

        async def run_once(self) -> bool:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                try:
                    await asyncio.get_running_loop().create_future()
                finally:
                    ended.set()
            return False

    runner = Runner([StubbornLoop()])
    runner.start()
    await asyncio.wait_for(started.wait(), 10)

    # when the runner is stopped, and the garbage collector runs
    with caplog.at_level(logging.ERROR):
        stopping = asyncio.ensure_future(runner.stop())
        done, _ = await asyncio.wait([stopping], timeout=10)
        gc.collect()

    # then it returned after its timeout instead of waiting for ever, and logged the loop, which
    # still runs (referenced: not destroyed by the collector) until the next stop ends it
    assert stopping in done, "Runner.stop() waited for ever on a loop that ignored its cancellation"
    assert "background task loop:stubborn did not stop within 0.5 s; it is left running" in caplog.text
    assert "Task was destroyed but it is pending" not in caplog.text
    assert not ended.is_set()
    await runner.stop()
    assert ended.is_set()
