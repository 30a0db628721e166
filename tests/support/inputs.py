"""Hostile input values shared by the tests of bad input."""

from __future__ import annotations

from typing import Any


def nested(levels: int) -> dict[str, Any]:
    """A JSON object `levels` objects deep: {"a": {"a": ... {"leaf": 1}}}."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value
