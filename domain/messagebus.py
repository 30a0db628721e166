"""The in-transaction message bus: domain events a unit of work collects, and their handlers.

Services and the posting module *collect* past-tense events (`MembersChanged`,
`SegmentsChanged`, `EventsRecorded`) into the unit of work instead of calling
one another. Before the unit of work commits, `MessageBus.dispatch` drains them
in a loop (never by recursion), round by round: the events queued when a round
starts are handled in order, and what their handlers collect is the next round.
Within a round, the `MembersChanged` of one program at one depth are merged
first, so each touched member is evaluated once per round.

Cascade depth is data: an event carries `depth`. A handler registered with
`cascades=True` (the trigger runner: its actions can feed segments that fire
triggers again) raises the events it causes one level deeper, and is skipped,
with a warning, for events at `max_depth` or deeper. Every other handler
raises events at its cause's depth. So the loop ends: non-cascading handlers
cannot feed themselves (the segment engine answers a change with the segment
changes it logged, challenges pay balances that no challenge reads).

After the commit, each event's `after_commit` handlers run (metrics); a failure
there is logged and never reported as the failure of the committed request.
The commit's `announce` topics (domain/db/engine.py) go out before them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import MembersChanged

if TYPE_CHECKING:
    from domain.db.engine import UnitOfWork

log = logging.getLogger(__name__)

#: How many nested rounds of cascading handlers (trigger actions) run; the next is logged and skipped.
MAX_DEPTH = 3


class DomainEvent(Protocol):
    """A past-tense fact of the current transaction; `depth` counts the cascading rounds behind it."""

    @property
    def depth(self) -> int: ...


Handler = Callable[[AsyncSession, Any], Awaitable[None]]
AfterCommit = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class _Registered:
    handler: Handler
    cascades: bool
    name: str


@dataclass
class MessageBus:
    """Handlers by event type, in registration order. One per `Database`; wired at start."""

    max_depth: int = MAX_DEPTH
    _handlers: dict[type, list[_Registered]] = field(default_factory=lambda: defaultdict(list))
    _after_commit: dict[type, list[AfterCommit]] = field(default_factory=lambda: defaultdict(list))

    def handle(self, event_type: type, handler: Handler, *, cascades: bool = False, name: str = "") -> None:
        """Run `handler(session, event)` inside the transaction for each event of `event_type`."""
        label = name or getattr(handler, "__qualname__", repr(handler))
        self._handlers[event_type].append(_Registered(handler, cascades, label))

    def after_commit(self, event_type: type, handler: AfterCommit) -> None:
        """Run `handler(event)` once the transaction that collected the event has committed."""
        self._after_commit[event_type].append(handler)

    async def dispatch(self, uow: UnitOfWork, *, rounds: int | None = None) -> None:
        """Handle the collected events in rounds until none is left (or `rounds` rounds have run)."""
        done = 0
        while uow.queued and (rounds is None or done < rounds):
            batch = merged(uow.take())
            for event in batch:
                uow.handled.append(event)
                for registered in self._handlers.get(type(event), ()):
                    if registered.cascades and event.depth >= self.max_depth:
                        log.warning(
                            "%s cascade stopped at depth %d: not run for %s",
                            registered.name,
                            event.depth,
                            type(event).__name__,
                        )
                        continue
                    with uow.raising_at(event.depth + 1 if registered.cascades else event.depth):
                        await registered.handler(uow.session, event)
            done += 1

    async def committed(self, events: Sequence[DomainEvent]) -> None:
        """The after-commit handlers of the committed events, in order; failures are logged."""
        for event in events:
            for handler in self._after_commit.get(type(event), ()):
                try:
                    await handler(event)
                except Exception:  # metrics, derived data: never un-acknowledges a commit
                    log.exception("after-commit handler failed for %s", type(event).__name__)


def merged(events: Sequence[DomainEvent]) -> list[DomainEvent]:
    """The round's events with each program's `MembersChanged` of one depth and instant folded into
    the first of them (where it stood), every other event in order."""
    out: list[DomainEvent] = []
    first: dict[tuple[int, int, datetime | None], int] = {}
    for event in events:
        if isinstance(event, MembersChanged):
            key = (event.program_id, event.depth, event.at)
            at = first.get(key)
            if at is not None:
                earlier = out[at]
                assert isinstance(earlier, MembersChanged)
                out[at] = earlier.merge(event)
                continue
            first[key] = len(out)
        out.append(event)
    return out
