"""Step 1 of the pipeline: is an incoming event well formed? Pure, no I/O."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from domain.db.types import AMOUNT_SCALE
from domain.inputs import UnsafeInput, check_datetime, check_json, check_text, json_kind, not_a_datetime

EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
MAX_EXTERNAL_ID = 128
MAX_PROPERTIES_BYTES = 16 * 1024
MAX_FUTURE = timedelta(minutes=5)
MAX_AMOUNT = Decimal("1e12")
#: How an amount may be written as text: digits with an optional fraction (a sign only to say
#: "negative" clearly). No spaces, underscores, exponents, "+", hex, NaN or Infinity.
PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?\Z")


@dataclass(frozen=True)
class EventDraft:
    """An event as a client sent it; `amount` may be anything the client typed, `occurred_at` text
    that did not parse as a date-time."""

    external_id: str
    member_external_id: str
    type: str
    occurred_at: datetime | str
    amount: object = None
    properties: object = None


@dataclass(frozen=True)
class ValidEvent:
    external_id: str
    member_external_id: str
    type: str
    occurred_at: datetime
    amount: Decimal | None
    properties: dict[str, Any]
    content_hash: str


class Rejection(Exception):
    """Why one event is refused; the message names the offending field."""


def parse_amount(value: object, field: str = "amount") -> Decimal | None:
    """A non-negative, finite decimal with at most AMOUNT_SCALE places, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str, float)):
        raise Rejection(f"{field}: expected a decimal number, got {type(value).__name__}")
    if isinstance(value, str) and not PLAIN_DECIMAL.match(value):
        raise Rejection(
            f"{field}: {value[:40]!r} is not a decimal number: digits with an optional fraction, e.g. 129.90"
        )
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise Rejection(f"{field}: {str(value)[:40]!r} is not a decimal number") from None
    if not amount.is_finite():
        raise Rejection(f"{field}: {str(value)!r} is not a finite number")
    if amount < 0:
        raise Rejection(f"{field}: must not be negative, got {amount}")
    if amount >= MAX_AMOUNT:
        raise Rejection(f"{field}: {amount} is too large (limit {MAX_AMOUNT:f})")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -AMOUNT_SCALE:
        raise Rejection(f"{field}: at most {AMOUNT_SCALE} decimal places, got {amount}")
    return amount


def check_age(event: ValidEvent, now: datetime, max_age: timedelta) -> None:
    """The program's limit on old events (ProgramSettings.max_event_age_days), counted back from `now`."""
    if event.occurred_at < now - max_age:
        raise Rejection(
            f"occurredAt: {event.occurred_at.isoformat()} is older than the program accepts "
            f"(maxEventAgeDays: {max_age.days})"
        )


def validate_external_id(value: str, field: str) -> str:
    if not value or not value.strip():
        raise Rejection(f"{field}: must not be empty")
    if len(value) > MAX_EXTERNAL_ID:
        raise Rejection(f"{field}: longer than {MAX_EXTERNAL_ID} characters")
    try:
        check_text(value, field)
    except UnsafeInput as unsafe:
        raise Rejection(str(unsafe)) from None
    return value


def validate_event(draft: EventDraft, now: datetime) -> ValidEvent:
    """Raise Rejection naming the field, or return the event in canonical form."""
    validate_external_id(draft.external_id, "externalId")
    validate_external_id(draft.member_external_id, "memberExternalId")
    if not draft.type:
        raise Rejection("type: must not be empty")
    if not EVENT_TYPE.match(draft.type):
        raise Rejection(f"type: {draft.type[:70]!r} does not match [a-z][a-z0-9_]{{0,63}}")
    occurred_at = draft.occurred_at
    if not isinstance(occurred_at, datetime):
        raise Rejection(not_a_datetime("occurredAt", occurred_at))
    try:
        check_datetime(occurred_at, "occurredAt")
    except UnsafeInput as unsafe:
        raise Rejection(str(unsafe)) from None
    if occurred_at > now + MAX_FUTURE:
        raise Rejection(f"occurredAt: {occurred_at.isoformat()} is more than 5 minutes in the future")
    amount = parse_amount(draft.amount)
    properties = draft.properties if draft.properties is not None else {}
    if not isinstance(properties, dict):
        raise Rejection(f"properties: must be a JSON object, got {json_kind(properties)}")
    try:
        check_json(properties, "properties")
    except UnsafeInput as unsafe:
        raise Rejection(str(unsafe)) from None
    encoded = orjson.dumps(properties, option=orjson.OPT_SORT_KEYS)
    if len(encoded) > MAX_PROPERTIES_BYTES:
        raise Rejection(f"properties: {len(encoded)} bytes exceeds the limit of {MAX_PROPERTIES_BYTES}")
    digest = hashlib.sha256()
    for part in (draft.member_external_id, draft.type, occurred_at.isoformat(), str(amount)):
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(encoded)
    return ValidEvent(
        external_id=draft.external_id,
        member_external_id=draft.member_external_id,
        type=draft.type,
        occurred_at=occurred_at,
        amount=amount,
        properties=properties,
        content_hash=digest.hexdigest(),
    )
