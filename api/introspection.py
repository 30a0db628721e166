"""Who may see the schema: introspection and "Did you mean ...?" suggestions, decided per caller.

LOYALTY_INTROSPECTION (domain/settings.py): `on` shows the schema to everyone,
`authenticated` to admin sessions and API keys only (member tokens ship inside
apps, so they count as public), `off` to nobody. A caller who may not see it
gets neither `__schema`/`__type` nor suggestions in any error: validation
(unknown fields, arguments, types, enum values) and variable coercion run
with graphql-core's `hide_suggestions`, so an error names only what the caller
itself sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, validate
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from api.context import Context
from api.document_cache import CACHED_DOCUMENTS, Lru, cacheable
from domain.auth.principal import PrincipalKind
from domain.settings import Introspection

#: Validation results by schema, query text, rules and exposure (api/document_cache.py).
_validations: Lru[tuple[GraphQLSchema, str, tuple[type[ASTValidationRule], ...], bool], list[GraphQLError]]
_validations = Lru(CACHED_DOCUMENTS)


def may_see_schema(mode: Introspection, context: object) -> bool:
    """Whether the caller of this request (`context`, our Context) may introspect and get suggestions."""
    if mode is Introspection.ON:
        return True
    if mode is Introspection.OFF or not isinstance(context, Context):
        return False
    return context.caller is not None and context.caller.kind != PrincipalKind.MEMBER


def caller_validation(mode: Introspection) -> type[SchemaExtension]:
    """A cached validation step that hides introspection and suggestions from callers per `mode`."""

    class CallerValidation(SchemaExtension):
        def on_validate(self) -> Iterator[None]:
            context = self.execution_context
            if context.pre_execution_errors is None:  # another extension may have refused it already
                schema, query, document = context.schema._schema, context.query, context.graphql_document
                assert document is not None
                rules, hidden = context.validation_rules, not may_see_schema(mode, context.context)

                def validated() -> list[GraphQLError]:
                    return _validate(schema, document, rules, hidden)

                context.pre_execution_errors = (
                    _validations.get((schema, query, rules, hidden), validated)
                    if cacheable(query)
                    else validated()
                )
            yield

    return CallerValidation


def _validate(
    schema: GraphQLSchema,
    document: DocumentNode,
    rules: tuple[type[ASTValidationRule], ...],
    hidden: bool,
) -> list[GraphQLError]:
    hiding = (NoSchemaIntrospectionCustomRule,) if hidden else ()
    # strawberry's own rules, which its validation step adds
    every = (*rules, MaybeNullValidationRule, OneOfInputValidationRule, *hiding)
    return validate(schema, document, every, hide_suggestions=hidden)


def caller_executor(mode: Introspection) -> type[StrawberryGraphQLCoreExecutionContext]:
    """strawberry's executor, hiding suggestions from variable coercion errors per `mode`."""

    class CallerExecutor(StrawberryGraphQLCoreExecutionContext):
        @classmethod
        def build(cls, *args: Any, **kwargs: Any) -> Any:
            # graphql-core passes the context as the fourth positional argument (or by name)
            context = args[3] if len(args) > 3 else kwargs.get("context_value")
            kwargs["hide_suggestions"] = kwargs.get("hide_suggestions", False) or not may_see_schema(
                mode, context
            )
            return super().build(*args, **kwargs)

    return CallerExecutor
