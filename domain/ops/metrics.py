"""The process's Prometheus metrics: counters and histograms incremented where the work happens.

docs/operations.md ("Metrics") documents each one. Backlogs and lags are not
here: they are read from the database when /metrics is scraped
(domain/ops/backlogs.py), so every process reports the same, whole picture.

`loyalty serve --workers N` sets PROMETHEUS_MULTIPROC_DIR before the workers
start, so these values live in per-process files that a scrape of any worker
adds up (prometheus-client's multiprocess mode; the gauges say how).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

EVENTS = Counter(
    "loyalty_events",
    "Events recordEvents answered, by status (ACCEPTED, HELD_FOR_REVIEW, BLOCKED, REJECTED, DUPLICATE)",
    ["status"],
)
SEGMENT_EVALUATIONS = Counter(
    "loyalty_segment_evaluations",
    "Segment evaluations: evaluator=memory counts one per member and segment (after events, "
    "time flips), evaluator=sql one per whole segment recomputed",
    ["evaluator"],
)
SEGMENT_CHANGES = Counter(
    "loyalty_segment_changes", "Committed segment membership changes, by change (ENTERED, LEFT)", ["change"]
)
GRAPHQL_DURATION = Histogram(
    "loyalty_graphql_request_duration_seconds",
    "Time to parse, validate and execute a GraphQL query or mutation, by operation name and root field",
    ["operation", "root_field"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DB_POOL_CHECKED_OUT = Gauge(
    "loyalty_db_pool_checked_out",
    "Database connections in use now, summed over the server processes",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "loyalty_db_pool_size",
    "Database connections the pools keep open, summed over the server processes "
    "(each may open as many again for bursts)",
    multiprocess_mode="livesum",
)
LIVE_BUS = Counter(
    "loyalty_live_bus",
    "What the live bus did (domain/live/bus.py), by event: gaps_detected, gaps_replayed, "
    "changes_replayed, subscribers_closed (a gap not replayed: 4008), subscribers_too_slow (4008), "
    "reconnects",
    ["event"],
)
LIVE_GAPS_DETECTED = LIVE_BUS.labels("gaps_detected")
LIVE_GAPS_REPLAYED = LIVE_BUS.labels("gaps_replayed")
LIVE_CHANGES_REPLAYED = LIVE_BUS.labels("changes_replayed")
LIVE_SUBSCRIBERS_CLOSED = LIVE_BUS.labels("subscribers_closed")
LIVE_SUBSCRIBERS_TOO_SLOW = LIVE_BUS.labels("subscribers_too_slow")
LIVE_RECONNECTS = LIVE_BUS.labels("reconnects")
LIVE_PAYLOADS = Counter(
    "loyalty_live_payloads",
    "Subscription payloads (api/fanout.py), by outcome: executed (the first subscriber of a selection "
    "in this process to take a change), shared (handed the result another subscriber executed)",
    ["outcome"],
)
LIVE_PAYLOADS_EXECUTED = LIVE_PAYLOADS.labels("executed")
LIVE_PAYLOADS_SHARED = LIVE_PAYLOADS.labels("shared")

#: Distinct (operation name, root field) pairs one process labels by name; later names become "other".
MAX_OPERATION_NAMES = 100
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
_named: set[tuple[str, str]] = set()
_named_lock = threading.Lock()


def operation_label(name: str | None, root_field: str) -> str:
    """A bounded label for a client-chosen operation name: "anonymous", the name, or "other".

    Root fields are the schema's, so with at most MAX_OPERATION_NAMES named pairs the
    histogram has a bounded number of series whatever names callers send.
    """
    if not name:
        return "anonymous"
    if not _NAME.fullmatch(name):
        return "other"
    with _named_lock:
        if (name, root_field) in _named:
            return name
        if len(_named) < MAX_OPERATION_NAMES:
            _named.add((name, root_field))
            return name
    return "other"


def instrument_pool(engine: AsyncEngine) -> int:
    """Count the engine's checked-out connections in DB_POOL_CHECKED_OUT and add its pool's size to
    DB_POOL_SIZE; returns that size (`release_pool` takes it back when the engine is disposed)."""

    def checked_out(*_: Any) -> None:
        DB_POOL_CHECKED_OUT.inc()

    def checked_in(*_: Any) -> None:
        DB_POOL_CHECKED_OUT.dec()

    event.listen(engine.sync_engine, "checkout", checked_out)
    event.listen(engine.sync_engine, "checkin", checked_in)
    size = getattr(engine.sync_engine.pool, "size", None)
    pool_size = size() if callable(size) else 0
    DB_POOL_SIZE.inc(pool_size)
    return int(pool_size)


def release_pool(pool_size: int) -> None:
    DB_POOL_SIZE.dec(pool_size)
