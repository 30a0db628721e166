"""The fields every log line of the current task carries: a request's id, or a background pass's.

The API binds `request_id` and `client_ip` for each HTTP request and WebSocket
connection (api/request_id.py); the background runner binds `loop`, `pass_id` and, when
a request's commit woke the pass, `caused_by` (domain/background.py). The log
formatters (api/logs.py) add them to every line. Context variables are copied
into tasks created meanwhile, so work a request spawns keeps its id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

_EMPTY: Mapping[str, object] = MappingProxyType({})
_fields: ContextVar[Mapping[str, object]] = ContextVar("loyalty_log_fields", default=_EMPTY)


def current() -> Mapping[str, object]:
    """The fields bound in this context (read-only)."""
    return _fields.get()


def request_id() -> str | None:
    value = _fields.get().get("request_id")
    return value if isinstance(value, str) else None


@contextmanager
def bound(**values: object) -> Iterator[None]:
    """Add fields for the duration of the block (None values are left out)."""
    merged = {**_fields.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _fields.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _fields.reset(token)
