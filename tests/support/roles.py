"""Admins of each role, and the smallest document that calls any root field (the role matrix)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
    Undefined,
    get_named_type,
    is_composite_type,
)

from domain.enums import AdminRole
from tests.support import ShiftableClock
from tests.support.graphql import GraphQLClient, ProgramFixture, log_in

if TYPE_CHECKING:
    from api.runtime import Services

PASSWORD = "a long enough passphrase"
#: A literal of each scalar the schema's required arguments use.
SCALARS = {
    "String": '"x"',
    "ID": '"1"',
    "Int": "1",
    "Boolean": "false",
    "DateTime": '"2030-01-01T00:00:00+00:00"',
    "Date": '"2030-01-01"',
    "Decimal": '"1"',
    "JSON": "{}",
}


async def admin_with_role(
    services: Services,
    client: httpx.AsyncClient,
    program: ProgramFixture,
    clock: ShiftableClock,
    role: AdminRole,
    email: str | None = None,
) -> GraphQLClient:
    """A new admin of `program` with `role`, logged in (its session has a fresh TOTP step-up)."""
    email = email or f"{role.value.lower()}.{program.key}@roles.example"
    created = await services.auth.create_admin(program.key, email, PASSWORD, role)
    return GraphQLClient(client, await log_in(client, email, PASSWORD, created.totp_secret, clock))


def root_fields(schema: GraphQLSchema) -> dict[str, tuple[str, GraphQLField]]:
    """Every query and mutation field: name -> (operation type, field)."""
    found: dict[str, tuple[str, GraphQLField]] = {}
    for operation, root in (("query", schema.query_type), ("mutation", schema.mutation_type)):
        assert root is not None
        found.update({name: (operation, field) for name, field in root.fields.items()})
    return found


def minimal_document(operation: str, name: str, field: GraphQLField) -> str:
    """`operation { name(required arguments) { __typename } }`: valid, whatever the call then does."""
    args = ", ".join(
        f"{arg_name}: {_literal(arg.type)}"
        for arg_name, arg in field.args.items()
        if isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined
    )
    call = f"{name}({args})" if args else name
    selection = " { __typename }" if is_composite_type(get_named_type(field.type)) else ""
    return f"{operation} {{ {call}{selection} }}"


def _literal(kind: GraphQLInputType) -> str:
    if isinstance(kind, GraphQLNonNull):
        return _literal(kind.of_type)
    if isinstance(kind, GraphQLList):
        return "[]"
    if isinstance(kind, GraphQLEnumType):
        return str(list(kind.values)[-1])  # AdminRole: VIEWER, which any admin manager may grant
    if isinstance(kind, GraphQLInputObjectType):
        fields = ", ".join(
            f"{name}: {_literal(f.type)}"
            for name, f in kind.fields.items()
            if isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined
        )
        return f"{{ {fields} }}"
    assert isinstance(kind, GraphQLScalarType), kind
    return SCALARS[kind.name]
