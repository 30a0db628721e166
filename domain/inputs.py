"""What every string and JSON value a client sends must satisfy before it reaches storage. Pure.

- No string (nor JSON object key) holds a NUL character: PostgreSQL's text and jsonb
  refuse it, so one would fail the whole statement it travels in.
- JSON values nest at most MAX_JSON_DEPTH levels (the serializer stops at 255, and deep
  trees are a cheap way to burn CPU), and their integers fit in 64 bits (the serializer's
  range; PostgreSQL and SQLite store them as numbers), their floats are finite; a JSON
  argument of the API is at most MAX_JSON_BYTES as compact JSON (fields with a tighter
  limit of their own, such as event properties, check it themselves).
- A DateTime carries a UTC offset and falls, in UTC, within the years MIN_YEAR to MAX_YEAR:
  far enough from the ends of Python's range that converting it to UTC or shifting it by a
  period cannot overflow, wide enough for any date a loyalty program keeps.

A violation is an `UnsafeInput` whose message names the path of the offending value, e.g.
`properties.note: contains a NUL character`. Callers turn it into their own error: a
REJECTED event, or BAD_USER_INPUT for a whole operation (api/inputs.py).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 64 * 1024
MIN_YEAR, MAX_YEAR = 1900, 2999
_DATETIME_EXAMPLE = "2026-11-22T10:00:00+00:00"
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


class UnsafeInput(ValueError):
    """A value no store accepts; the message names its path."""


def check_text(value: str, field: str) -> None:
    if "\x00" in value:
        raise UnsafeInput(f"{field}: contains a NUL character")


def check_json(
    value: object, field: str, max_depth: int = MAX_JSON_DEPTH, max_bytes: int | None = None
) -> None:
    """Raise UnsafeInput for a NUL in any key or string, nesting deeper than `max_depth`
    objects and arrays, an integer outside 64 bits, a non-finite number, or (with `max_bytes`)
    a value longer than that as compact JSON."""
    # Paths are linked (parent, key) pairs, rendered only for the message of a refusal.
    stack: list[tuple[object, _Link, int]] = [(value, None, 0)]
    while stack:
        item, link, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= max_depth:
                raise UnsafeInput(f"{field}: nested deeper than {max_depth} levels")
            for key, child in item.items():
                if not isinstance(key, str):
                    raise UnsafeInput(f"{_render(field, link)}: object keys must be strings")
                if "\x00" in key:
                    raise UnsafeInput(f"{_render(field, (link, key))}: contains a NUL character")
                stack.append((child, (link, key), depth + 1))
        elif isinstance(item, list):
            if depth >= max_depth:
                raise UnsafeInput(f"{field}: nested deeper than {max_depth} levels")
            stack.extend((child, (link, i), depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            if "\x00" in item:
                raise UnsafeInput(f"{_render(field, link)}: contains a NUL character")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                raise UnsafeInput(f"{_render(field, link)}: integers must fit in 64 bits (signed)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise UnsafeInput(f"{_render(field, link)}: {item} is not a finite number")
        else:
            raise UnsafeInput(f"{_render(field, link)}: {type(item).__name__} is not a JSON value")
    if max_bytes is not None and (size := len(orjson.dumps(value))) > max_bytes:
        raise UnsafeInput(f"{field}: {size} bytes exceeds the limit of {max_bytes}")


def check_datetime(value: datetime, field: str) -> None:
    """Raise UnsafeInput for a date-time without a UTC offset, or one outside the years MIN_YEAR
    to MAX_YEAR once in UTC (year 1 at +14:00 is not even representable in UTC)."""
    if value.utcoffset() is None:
        raise UnsafeInput(f"{field}: needs a UTC offset, e.g. {_DATETIME_EXAMPLE}")
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = value.year
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise UnsafeInput(f"{field}: {value.isoformat()} is outside the years {MIN_YEAR} to {MAX_YEAR} (UTC)")


def not_a_datetime(field: str, text: str) -> str:
    """The refusal of a DateTime a client sent that is not ISO 8601 with an offset."""
    return f"{field}: {text[:40]!r} is not an ISO 8601 date-time with a UTC offset, e.g. {_DATETIME_EXAMPLE}"


def json_kind(value: object) -> str:
    """What a JSON value is, for messages: "an array", "a string", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


_Link = tuple[Any, str | int] | None


def _render(field: str, link: _Link) -> str:
    """`properties.items[2].note`; keys that are not plain names are quoted: `properties["a b"]`."""
    parts: list[str] = []
    while link is not None:
        link, key = link
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _PLAIN_KEY.match(key):
            parts.append(f".{key}")
        else:
            parts.append(f"[{orjson.dumps(key[:64]).decode()}]")
    return field + "".join(reversed(parts))
