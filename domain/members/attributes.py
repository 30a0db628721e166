"""Typed access to a member's free-form attributes, and their merge rule. Pure."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

MAX_ATTRIBUTES_BYTES = 16 * 1024

_MISSING = object()


def merge_attributes(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`patch` merged into `current`; a key whose value is null is removed."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def attributes_size(attributes: dict[str, Any]) -> int:
    return len(orjson.dumps(attributes))


def lookup(attributes: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (`address.city`), or None when any step is absent."""
    value: Any = attributes
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return None
    return value


def as_number(value: Any) -> Decimal | None:
    """Numbers and numeric strings as Decimal; anything else is absent."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_date(value: Any) -> date | None:
    """ISO dates (`1990-04-01`) or datetimes; anything else is absent."""
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10]) if len(value) >= 10 else None
    except ValueError:
        try:
            return datetime.fromisoformat(value).date()
        except ValueError:
            return None
