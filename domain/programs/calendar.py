"""A program's calendar timezone (settings.timezone): the days of boards, challenges and fraud caps."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.errors import InvalidInput

UTC_ZONE = ZoneInfo("UTC")


def parse_timezone(name: str) -> ZoneInfo:
    """An IANA timezone such as "Europe/Istanbul"; BAD_USER_INPUT naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"timezone: {name[:70]!r} is not an IANA timezone such as 'Europe/Istanbul'"
        ) from None


def program_timezone(settings: dict[str, Any] | None) -> ZoneInfo:
    """The program's calendar timezone (settings.timezone), UTC by default."""
    name = (settings or {}).get("timezone")
    return parse_timezone(name) if isinstance(name, str) else UTC_ZONE
