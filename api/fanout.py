"""Live fan-out: a subscription event's selection executed once per process and distinct selection.

graphql-core executes a subscription's selection set anew for each event and each
subscriber. For an event type whose every field resolves from the event alone
(`SharedEvent`: `SegmentChangeEvent`), the result depends only on the event and on the
selection, so the executor here (`shared_events`) keeps the last SHARED_PAYLOADS results
by (selection, event): the first subscriber of a selection to take a change executes it,
every other subscriber of that selection in the process is handed the same result.
Counted on /metrics as `loyalty_live_payloads_total{outcome="executed"|"shared"}`.

Sharing decides how a payload is computed, never who receives it: which subscriber gets
which change (program, segment keys), in which order, and the 4008 closes stay the bus's
(domain/live/bus.py). The selection is the operation's text (its fragments included) and
the values of the variables that can shape the payload: every variable except those used
only as arguments of the root field (`segmentKeys`, `since`: the filter). Two subscribers
that filter differently therefore share the payload of a change they both receive.

Limits: a result with errors is never shared (each subscriber executes its own); a
subscriber more than SHARED_PAYLOADS (selection, event) pairs behind the rest executes its
own, the same result at the old cost; the shared data is read-only by convention (no
extension of ours writes into `data`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Hashable
from typing import Any

import orjson
from graphql import ExecutionResult, OperationType, print_ast
from graphql.execution.executor import Executor
from graphql.language import (
    SKIP,
    ArgumentNode,
    FieldNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    visit,
)
from graphql.pyutils import AwaitableOrValue

from domain.ops.metrics import LIVE_PAYLOADS_EXECUTED, LIVE_PAYLOADS_SHARED

#: (selection, event) results a process keeps: a subscriber this far behind executes its own.
SHARED_PAYLOADS = 4096


class SharedEvent:
    """A subscription event type whose every field resolves from the event alone: no context, no
    loaders, no authorisation, so one execution of a selection serves every subscriber.
    tests/test_live_fanout.py checks that such a type's fields are all scalars or enums."""

    def shared_key(self) -> Hashable:
        """Equal keys for events that are equal in every field (the type's values, as a tuple)."""
        raise NotImplementedError


class SharedPayloads:
    """The last `size` execution results by (selection, event); for one event loop (no locking)."""

    def __init__(self, size: int = SHARED_PAYLOADS) -> None:
        self.size = size
        self._results: OrderedDict[tuple[Hashable, Hashable], Any] = OrderedDict()

    def get(self, key: tuple[Hashable, Hashable]) -> Any | None:
        data = self._results.get(key)
        if data is not None:
            self._results.move_to_end(key)
        return data

    def put(self, key: tuple[Hashable, Hashable], data: Any) -> None:
        self._results[key] = data
        if len(self._results) > self.size:
            self._results.popitem(last=False)


class _Selection:
    """The selection key of one subscription, computed once and shared by its per-event copies."""

    computed = False
    key: Hashable | None = None


def shared_events(base: type[Executor[Any]], size: int = SHARED_PAYLOADS) -> type[Executor[Any]]:
    """`base`, executing each (selection, SharedEvent) once per schema (per process)."""
    payloads = SharedPayloads(size)

    class SharedEventExecutor(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._selection = _Selection()  # per-event executors are shallow copies: they share it

        def execute_operation(self, serially: bool | None = None) -> AwaitableOrValue[Any]:
            event = self.root_value
            if self.operation.operation is not OperationType.SUBSCRIPTION or not isinstance(
                event, SharedEvent
            ):
                return super().execute_operation(serially)
            selection = self._selection
            if not selection.computed:
                selection.key, selection.computed = selection_key(self), True
            if selection.key is None:
                return super().execute_operation(serially)
            key = (selection.key, event.shared_key())
            data = payloads.get(key)
            if data is not None:
                LIVE_PAYLOADS_SHARED.inc()
                return ExecutionResult(data, None)
            LIVE_PAYLOADS_EXECUTED.inc()
            result = super().execute_operation(serially)
            if self.is_awaitable(result):
                return _kept(payloads, key, result)
            _keep(payloads, key, result)
            return result

    return SharedEventExecutor


def _keep(payloads: SharedPayloads, key: tuple[Hashable, Hashable], result: object) -> None:
    if isinstance(result, ExecutionResult) and not result.errors and result.data is not None:
        payloads.put(key, result.data)


async def _kept(payloads: SharedPayloads, key: tuple[Hashable, Hashable], result: Awaitable[Any]) -> Any:
    done = await result
    _keep(payloads, key, done)
    return done


def selection_key(executor: Executor[Any]) -> Hashable | None:
    """What shapes a subscription's payloads: its operation's text and fragments, and the values of
    the variables used outside the root field's arguments; None when a value has no stable form."""
    operation = executor.operation
    filters = {
        id(argument)
        for node in operation.selection_set.selections
        if isinstance(node, FieldNode)
        for argument in node.arguments or ()
    }
    used = _Variables(filters)
    fragments = [executor.fragment_definitions[name] for name in sorted(executor.fragment_definitions)]
    for node in (operation, *fragments):
        visit(node, used)
    values = executor.variable_values.coerced
    try:
        shaping = orjson.dumps(
            {name: values[name] for name in sorted(used.names) if name in values},
            default=repr,
            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        )
    except TypeError:
        return None
    text = "\n".join(print_ast(node) for node in (operation, *fragments))
    return (text, shaping)


class _Variables(Visitor):
    """The names of the variables a document uses, leaving out the arguments in `skipped` (by id)."""

    def __init__(self, skipped: set[int]) -> None:
        super().__init__()
        self.skipped = skipped
        self.names: set[str] = set()

    def enter_argument(self, node: ArgumentNode, *_: object) -> object:
        return SKIP if id(node) in self.skipped else None

    def enter_variable_definition(self, node: VariableDefinitionNode, *_: object) -> object:
        return SKIP

    def enter_variable(self, node: VariableNode, *_: object) -> None:
        self.names.add(node.name.value)
