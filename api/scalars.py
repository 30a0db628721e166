"""The contract's DateTime and Decimal scalars.

DateTime is ISO 8601 parsed by the standard library's C parser (strawberry's
default goes through dateutil, several times slower on the ingest path); a
value without a UTC offset parses, and the domain refuses it by field name. A
value that does not parse reaches the API as `UnparsedDateTime`, for the same
reason as a bad Decimal below.

The Decimal scalar: a decimal number serialised as a string.

Input parsing is lenient on purpose: a value that is not a number reaches the
domain as the raw text, so `recordEvents` can reject that one event with a
message naming the field instead of failing the whole batch. Text counts as a
number only when it is a plain decimal (`PLAIN_DECIMAL`: "129.90", not " 5 ",
"1_000" or "1e3"); a JSON or GraphQL number is taken as it is.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from graphql import FloatValueNode, IntValueNode, StringValueNode, ValueNode
from strawberry.types.scalar import ScalarDefinition, scalar

from domain.events.validation import PLAIN_DECIMAL


def _serialize(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")


def _parse_value(value: Any) -> Decimal | str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return Decimal(value) if PLAIN_DECIMAL.match(value) else value
    if isinstance(value, (int, float)):
        return _number(str(value))
    return repr(value)


def _parse_literal(node: ValueNode, _variables: Any = None) -> Decimal | str:
    if isinstance(node, (IntValueNode, FloatValueNode)):
        return _number(node.value)
    if isinstance(node, StringValueNode):
        return _parse_value(node.value)
    return type(node).__name__


def _number(text: str) -> Decimal | str:
    try:
        return Decimal(text)
    except InvalidOperation:
        return text


DecimalScalar: ScalarDefinition = scalar(
    name="Decimal",
    description='A decimal number serialised as a string, e.g. "129.90"',
    serialize=_serialize,
    parse_value=_parse_value,
    parse_literal=_parse_literal,
)


class UnparsedDateTime(str):
    """A DateTime argument that is not ISO 8601, kept as the client's text rather than failing the
    whole operation: `recordEvents` REJECTS the one event that carries it, and InputGuard
    (api/inputs.py) refuses it, naming its path, wherever else it appears."""


def parse_datetime(value: Any) -> datetime | UnparsedDateTime:
    if not isinstance(value, str):
        return UnparsedDateTime(repr(value))
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return UnparsedDateTime(value)


def _parse_datetime_literal(node: ValueNode, _variables: Any = None) -> datetime | UnparsedDateTime:
    if not isinstance(node, StringValueNode):
        return UnparsedDateTime(getattr(node, "value", type(node).__name__))
    return parse_datetime(node.value)


DateTimeScalar: ScalarDefinition = scalar(
    name="DateTime",
    description="ISO 8601 with offset, e.g. 2026-11-22T10:00:00+00:00",
    serialize=lambda value: value.isoformat(),
    parse_value=parse_datetime,
    parse_literal=_parse_datetime_literal,
)
