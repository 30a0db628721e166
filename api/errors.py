"""Every error a client sees has a message and an `extensions.code`; nothing unexpected leaks.

Domain errors keep their message and code. GraphQL syntax and validation errors
are BAD_USER_INPUT, the complexity limits QUERY_TOO_COMPLEX. A transient fault (the
database or Redis unreachable or busy, domain/transient.py) is SERVICE_UNAVAILABLE
with `retryAfter` (seconds). Anything else is logged with its traceback and replaced
by "Unexpected error." (code INTERNAL): a bug, which retrying will not fix.
"""

from __future__ import annotations

import logging
import re

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from domain.errors import DomainError
from domain.transient import is_transient

log = logging.getLogger("api.errors")

#: Seconds a client should wait before retrying after SERVICE_UNAVAILABLE (HTTP Retry-After).
RETRY_AFTER_S = 5
UNAVAILABLE = f"the service is temporarily unavailable; retry in {RETRY_AFTER_S} s"

_TOO_COMPLEX = re.compile(
    r"exceeds maximum operation depth|more than \d+ tokens|aliases found|query cost", re.IGNORECASE
)


def classify(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if isinstance(original, DomainError):
        extensions = {"code": original.code, **{k: v for k, v in original.details.items() if _plain(v)}}
        return _with(error, error.message, extensions)
    if original is None or isinstance(original, GraphQLError):
        if error.extensions and "code" in error.extensions:
            return error
        code = "QUERY_TOO_COMPLEX" if _TOO_COMPLEX.search(error.message) else "BAD_USER_INPUT"
        return _with(error, error.message, {"code": code})
    if is_transient(original):
        log.warning("transient failure at %s: %r", error.path, original)
        extensions = {"code": "SERVICE_UNAVAILABLE", "retryAfter": RETRY_AFTER_S}
        return _with(error, UNAVAILABLE, extensions, keep_original=False)
    log.error("unexpected error at %s", error.path, exc_info=original)
    return _with(error, "Unexpected error.", {"code": "INTERNAL"}, keep_original=False)


def _plain(value: object) -> bool:
    return isinstance(value, (str, int, float, bool))


def _with(
    error: GraphQLError, message: str, extensions: dict[str, object], keep_original: bool = True
) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error if keep_original else None,
        extensions=extensions,
    )


class ErrorCodes(MaskErrors):
    """strawberry's MaskErrors, taught our codes: expected errors keep their message, the rest are masked."""

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [classify(e) for e in errors]

    def _process_result(self, result: object) -> None:
        """MaskErrors' own test is an isinstance against a runtime-checkable Protocol, which costs
        more than the rest of a live change's delivery once its payload is shared (api/fanout.py);
        this is the same test: a result that has errors."""
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]
