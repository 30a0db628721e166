"""Typed reads of JSON documents in SQL, the same on PostgreSQL (jsonb) and SQLite (JSON1).

Each predicate is guarded by the value's JSON type, so a string is never compared
with a number and PostgreSQL never casts what is not a number.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Numeric,
    String,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from domain.segments.conditions import Scalar, is_number


class JsonPath:
    """The value at a dotted path inside a JSON column."""

    def __init__(self, dialect: str, column: ColumnElement[Any], path: str) -> None:
        self.dialect = dialect
        self.column = column
        self.parts = path.split(".")

    @property
    def _sqlite_path(self) -> str:
        return "$" + "".join(f'."{part}"' for part in self.parts)

    def type_is(self, kind: str) -> ColumnElement[bool]:
        """kind: number, string, boolean, array or present (anything but absent and null); never NULL."""
        if self.dialect == "postgresql":
            found = func.coalesce(
                func.jsonb_typeof(func.jsonb_extract_path(self.column, *self.parts)), "null"
            )
            return found != "null" if kind == "present" else found == kind
        found = func.coalesce(func.json_type(self.column, self._sqlite_path), "null")
        return {
            "number": found.in_(["integer", "real"]),
            "string": found == "text",
            "boolean": found.in_(["true", "false"]),
            "array": found == "array",
            "present": found != "null",
        }[kind]

    def text(self) -> ColumnElement[Any]:
        if self.dialect == "postgresql":
            return func.jsonb_extract_path_text(self.column, *self.parts).collate("C")
        return func.json_extract(self.column, self._sqlite_path)

    def number(self) -> ColumnElement[Any]:
        if self.dialect == "postgresql":
            return cast(func.jsonb_extract_path_text(self.column, *self.parts), NUMERIC)
        return func.json_extract(self.column, self._sqlite_path)

    def boolean_is(self, value: bool) -> ColumnElement[bool]:
        if self.dialect == "postgresql":  # by its text alone, the string "true" would be true
            text = func.jsonb_extract_path_text(self.column, *self.parts)
            return guarded(self.type_is("boolean"), text == ("true" if value else "false"))
        found = func.coalesce(func.json_type(self.column, self._sqlite_path), "null")
        return found == ("true" if value else "false")

    def equals(self, value: Scalar) -> ColumnElement[bool]:
        """Type-strict equality with a scalar, never NULL."""
        if isinstance(value, bool):
            return self.boolean_is(value)
        if is_number(value):
            return guarded(self.type_is("number"), self.number() == sql_number(self.dialect, value))
        return guarded(self.type_is("string"), self.text() == literal(value, String))

    def array_contains(self, value: Scalar) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            document = func.jsonb_extract_path(self.column, *self.parts)
            probe = cast(literal(orjson.dumps([value]).decode(), Text), JSONB)
            return guarded(self.type_is("array"), document.op("@>")(probe))
        items = func.json_each(self.column, self._sqlite_path).table_valued("type", "value")
        element = _SqliteElement(items.c.type, items.c.value)
        return guarded(
            self.type_is("array"), exists(select(1).select_from(items).where(element.equals(value)))
        )


class _SqliteElement:
    def __init__(self, json_type: ColumnElement[Any], value: ColumnElement[Any]) -> None:
        self.json_type = json_type
        self.value = value

    def equals(self, value: Scalar) -> ColumnElement[bool]:
        if isinstance(value, bool):
            return self.json_type == ("true" if value else "false")
        if is_number(value):
            return and_(self.json_type.in_(["integer", "real"]), self.value == value)
        return and_(self.json_type == "text", self.value == value)


NUMERIC = Numeric()


def sql_number(dialect: str, value: Any) -> ColumnElement[Any]:
    """A numeric literal: exact NUMERIC on PostgreSQL, a double (or integer) on SQLite."""
    if dialect == "postgresql":
        return literal(Decimal(str(value)), NUMERIC)
    return literal(value)


def guarded(guard: ColumnElement[bool], comparison: ColumnElement[bool]) -> ColumnElement[bool]:
    """`comparison` where `guard` holds, false elsewhere: never NULL, never evaluated unguarded."""
    return case((guard, comparison), else_=false())
