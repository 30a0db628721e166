"""One check of every argument an operation brings, before it runs: no input becomes INTERNAL.

Every string (at any depth of input objects and lists) must hold no NUL character,
every JSON argument must satisfy domain/inputs.py (depth, NUL, 64-bit integers, at most
MAX_JSON_BYTES), and every DateTime must parse (the scalar lets text that does not through
as `UnparsedDateTime`, so that an event with a bad occurredAt is REJECTED alone), carry a UTC
offset and lie within domain/inputs.py's years, which no service then needs to check again. A
violation refuses the operation with BAD_USER_INPUT naming the argument path, e.g.
`members[3].attributes.note: contains a NUL character`, the way upsertMembers names a bad
member.

Input types whose service checks each item on its own mark themselves `checked_per_item`
and are skipped here: a bad event in `recordEvents` is REJECTED alone, the others stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    Undefined,
    Visitor,
    get_named_type,
    get_nullable_type,
    value_from_ast_untyped,
    visit,
)
from graphql.language.visitor import SKIP, VisitorAction
from strawberry.extensions import SchemaExtension

from api.scalars import UnparsedDateTime, parse_datetime
from domain.inputs import (
    MAX_JSON_BYTES,
    UnsafeInput,
    check_datetime,
    check_json,
    check_text,
    not_a_datetime,
)

T = TypeVar("T")
_PER_ITEM: set[type] = set()


def checked_per_item(cls: type[T]) -> type[T]:
    """Mark an input type whose service validates each item itself (one bad item never sinks the rest)."""
    _PER_ITEM.add(cls)
    return cls


class InputGuard(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            check_arguments(
                context.schema._schema, context.graphql_document, context.operation_name, context.variables
            )
        yield


def check_arguments(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
) -> None:
    """Raise a BAD_USER_INPUT GraphQLError for the first unsafe argument of the operation to run."""
    type_info = TypeInfo(schema)
    visit(document, TypeInfoVisitor(type_info, _Arguments(type_info, operation_name, variables or {})))


class _Arguments(Visitor):
    def __init__(self, type_info: TypeInfo, operation_name: str | None, variables: dict[str, Any]) -> None:
        super().__init__()
        self.type_info = type_info
        self.operation_name = operation_name
        self.variables = variables

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: object) -> VisitorAction:
        if self.operation_name is not None and (node.name is None or node.name.value != self.operation_name):
            return SKIP
        defaults = {
            definition.variable.name.value: value_from_ast_untyped(definition.default_value)
            for definition in node.variable_definitions or ()
            if definition.default_value is not None
        }
        self.variables = {**defaults, **self.variables}
        return None

    def enter_argument(self, node: ArgumentNode, *_: object) -> VisitorAction:
        argument = self.type_info.get_argument()
        if argument is not None and not _per_item(get_named_type(argument.type)):  # not even converted
            try:
                _check(argument.type, value_from_ast_untyped(node.value, self.variables), node.name.value)
            except UnsafeInput as unsafe:
                raise GraphQLError(str(unsafe), node, extensions={"code": "BAD_USER_INPUT"}) from None
        return SKIP


def _check(type_: GraphQLInputType, value: Any, path: str) -> None:
    if value is None or value is Undefined:
        return
    if _per_item(get_named_type(type_)):
        return
    nullable = get_nullable_type(type_)
    if isinstance(nullable, GraphQLList):
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            _check(nullable.of_type, item, f"{path}[{i}]" if items is value else path)
    elif isinstance(nullable, GraphQLInputObjectType):
        if isinstance(value, dict):
            for name, field in nullable.fields.items():
                if name in value:
                    _check(field.type, value[name], f"{path}.{name}")
    elif isinstance(nullable, GraphQLScalarType) and nullable.name == "JSON":
        check_json(value, path, max_bytes=MAX_JSON_BYTES)
    elif isinstance(nullable, GraphQLScalarType) and nullable.name == "DateTime":
        if isinstance(parsed := parse_datetime(value), UnparsedDateTime):
            raise UnsafeInput(not_a_datetime(path, parsed))
        check_datetime(parsed, path)
    elif isinstance(value, str):
        check_text(value, path)


def _per_item(named: GraphQLNamedType) -> bool:
    definition = named.extensions.get("strawberry-definition")
    return getattr(definition, "origin", None) in _PER_ITEM
