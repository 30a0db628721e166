"""Opaque Relay cursors over integer keys."""

from __future__ import annotations

import base64

from domain.errors import InvalidInput

DEFAULT_PAGE_SIZE = 50


def page_size(first: int | None) -> int:
    """`first` as given; an explicit null means the default, as the contract's `Int = 50` allows."""
    return DEFAULT_PAGE_SIZE if first is None else first


def encode_cursor(kind: str, key: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, key = text.partition(":")
        if prefix != kind:
            raise ValueError(prefix)
        return int(key)
    except ValueError:
        raise InvalidInput(f"after: {cursor[:40]!r} is not a {kind} cursor from this API") from None
