"""Which failures are transient: the database or Redis was unreachable, busy or restarting.

The same request may succeed when retried (every write of the API is idempotent or keyed),
so the API answers them with a retryable code instead of INTERNAL, which is kept for bugs.
"""

from __future__ import annotations

import sqlite3

import redis.exceptions
import sqlalchemy.exc

#: SQLSTATEs (or their two-letter classes) after which a retry can succeed: connection
#: exceptions, insufficient resources (too many connections), the server shutting down or
#: starting up, serialization failures and deadlocks.
_RETRYABLE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03", "40001", "40P01")
_FILESYSTEM = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
_REDIS = (
    redis.exceptions.ConnectionError,  # also BusyLoadingError (a restart loading its data)
    redis.exceptions.TimeoutError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ReadOnlyError,  # a replica promoted mid-failover
)


def is_transient(error: BaseException) -> bool:
    """True when `error`, or an exception it wraps or was raised from (explicitly, or while handling
    it unless the context is suppressed), is a transient fault."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if _transient_itself(current):
            return True
        # `raise ... from None` hides the context: a bug raised while handling an outage stays a bug
        pending += [current.__cause__, None if current.__suppress_context__ else current.__context__]
        if isinstance(current, sqlalchemy.exc.DBAPIError) and isinstance(current.orig, BaseException):
            pending.append(current.orig)
    return False


def _transient_itself(error: BaseException) -> bool:
    if isinstance(error, redis.exceptions.AuthenticationError):
        return False  # a wrong password stays wrong
    if isinstance(error, _REDIS):
        return True
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sqlite3.OperationalError):
        return any(word in str(error) for word in ("locked", "busy"))
    if isinstance(error, OSError):  # refused, reset, unreachable, timed out; not a file's absence
        return not isinstance(error, _FILESYSTEM)
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_RETRYABLE_SQLSTATES)
