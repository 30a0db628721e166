"""The one place the API authorizes: every root field checks the caller against the operation's
entry in domain/auth/policy.py before its resolver runs (resolvers check no scopes themselves)."""

from __future__ import annotations

import inspect
from typing import Any

from strawberry.extensions.field_extension import (
    AsyncExtensionResolver,
    FieldExtension,
    SyncExtensionResolver,
)
from strawberry.types.base import get_object_definition

from api.context import Info
from domain.auth import policy
from domain.auth.scopes import Scope


def _authorize(info: Info) -> None:
    operation = info.field_name
    if not policy.requirement(operation).public:
        policy.authorize(operation, info.context.principal)


class Authorize(FieldExtension):
    """Refuses the call (FORBIDDEN or UNAUTHENTICATED) unless the policy table allows the caller."""

    def resolve(self, next_: SyncExtensionResolver, source: Any, info: Info, **kwargs: Any) -> Any:
        _authorize(info)
        return next_(source, info, **kwargs)

    async def resolve_async(
        self, next_: AsyncExtensionResolver, source: Any, info: Info, **kwargs: Any
    ) -> Any:
        _authorize(info)
        result = next_(source, info, **kwargs)
        return result if inspect.isasyncgen(result) else await result


def authorize_root_fields(*root_types: type) -> None:
    """Put `Authorize` on every field of the root types (once, however often the schema is built)."""
    for root in root_types:
        definition = get_object_definition(root, strict=True)
        for field in definition.fields:
            if not any(isinstance(e, Authorize) for e in field.extensions):
                field.extensions.append(Authorize())


def field_scope(info: Info, scope: Scope) -> int:
    """For a nested field that reveals more than its root operation: the caller's program, if it
    holds `scope` too; FORBIDDEN naming the field (e.g. `Segment.members`) otherwise."""
    return info.context.principal.require(scope, f"{info.path.typename}.{info.field_name}")
