"""GET /metrics (Prometheus text format) behind a bearer token, and the GraphQL timing extension.

/metrics answers only when LOYALTY_METRICS_TOKEN is set, and only to
`Authorization: Bearer <that token>`: 404 without the setting, 401 without the
right token. It serves this process's metrics (all processes' under
`--workers N`: prometheus-client's multiprocess mode) and the backlog gauges,
read from the database at scrape time (domain/ops/backlogs.py).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator

from graphql import FieldNode, OperationType
from graphql.utilities import get_operation_ast
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from strawberry.extensions import SchemaExtension

from api.context import bearer_from_header
from api.runtime import Services
from domain.ops.backlogs import Backlogs, read_backlogs
from domain.ops.metrics import GRAPHQL_DURATION, operation_label
from domain.settings import Settings

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Longest a scrape waits for the backlog queries before it reports loyalty_backlogs_up 0.
BACKLOG_TIMEOUT_S = 5.0


class OperationTimer(SchemaExtension):
    """Observes each query's and mutation's duration in loyalty_graphql_request_duration_seconds."""

    async def on_operation(self) -> AsyncIterator[None]:
        started = time.perf_counter()
        yield
        root_field = self._root_field()
        if root_field is None:  # a subscription: its duration is the connection's
            return
        name = self.execution_context.operation_name if root_field != "invalid" else None
        GRAPHQL_DURATION.labels(operation_label(name, root_field), root_field).observe(
            time.perf_counter() - started
        )

    def _root_field(self) -> str | None:
        """The operation's first root field when the schema has it; "invalid" when there is none."""
        context = self.execution_context
        document = context.graphql_document
        operation = get_operation_ast(document, context.operation_name) if document else None
        if operation is None:
            return "invalid"
        if operation.operation == OperationType.SUBSCRIPTION:
            return None
        root_type = context.schema._schema.get_root_type(operation.operation)
        first = operation.selection_set.selections[0] if operation.selection_set.selections else None
        if root_type is None or not isinstance(first, FieldNode) or first.name.value not in root_type.fields:
            return "invalid"
        return first.name.value


class _BacklogGauges(Collector):
    """The backlog snapshot of one scrape as gauges; loyalty_backlogs_up says whether it was read."""

    GAUGES = (
        ("loyalty_relay_lag_changes", "relay_lag_changes", "Change-log rows committed but not yet relayed"),
        ("loyalty_relay_lag_seconds", "relay_lag_seconds", "Age of the oldest change not yet relayed"),
        ("loyalty_time_flip_backlog", "time_flip_backlog", "Members whose segments_due_at has passed"),
        (
            "loyalty_time_flip_lag_seconds",
            "time_flip_lag_seconds",
            "How long ago the oldest due member fell due",
        ),
        ("loyalty_outbox_pending", "outbox_pending", "Outbox rows PENDING (due or backing off)"),
        (
            "loyalty_outbox_oldest_due_seconds",
            "outbox_oldest_due_seconds",
            "How long the oldest due PENDING outbox row has waited",
        ),
        ("loyalty_outbox_dead", "outbox_dead", "Outbox rows DEAD (dead letters)"),
        ("loyalty_standings_feed_backlog", "standings_feed_backlog", "standings_feed rows not yet fed"),
    )

    def __init__(self, backlogs: Backlogs | None) -> None:
        self.backlogs = backlogs

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "loyalty_backlogs_up",
            "1 when this scrape read the backlogs from the database, else 0",
            value=1 if self.backlogs else 0,
        )
        if self.backlogs is None:
            return
        for name, attribute, documentation in self.GAUGES:
            yield GaugeMetricFamily(name, documentation, value=getattr(self.backlogs, attribute))


def _process_registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def refusal(settings: Settings, authorization: str | None) -> tuple[int, str, str] | None:
    """Why /metrics is refused to this caller (HTTP status, code, message), or None to serve it."""
    token = settings.metrics_token
    if token is None:
        return 404, "NOT_FOUND", "metrics are off: set LOYALTY_METRICS_TOKEN to serve them"
    given = bearer_from_header(authorization) or ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        return 401, "UNAUTHENTICATED", "send Authorization: Bearer <LOYALTY_METRICS_TOKEN>"
    return None


async def exposition(services: Services) -> bytes:
    """The scrape's body: the processes' metrics, then the backlog gauges read now."""
    backlogs: Backlogs | None = None
    try:
        backlogs = await asyncio.wait_for(
            read_backlogs(services.db, services.clock.now()), timeout=BACKLOG_TIMEOUT_S
        )
    except Exception as error:
        log.warning("metrics: could not read the backlogs (%s)", type(error).__name__)
    snapshot = CollectorRegistry()
    snapshot.register(_BacklogGauges(backlogs))
    return generate_latest(_process_registry()) + generate_latest(snapshot)


def process_exited() -> None:
    """Under --workers N: drop this process's live gauges (pool use) from the shared directory."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
