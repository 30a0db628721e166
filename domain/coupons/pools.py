"""Coupon pool definitions: an admin's input checked, and the pool as the audit log keeps it.

Pure: no I/O. The discount is structured so that a till can apply it: a kind (PERCENT off,
AMOUNT off, or OTHER, which only the description explains) and a value; the description is
free text for people. An issued code's expiry is the pool's fixed `expiresAt`, or `validDays`
after the code was issued, or none; an imported code's own expiry wins over both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from domain.errors import InvalidInput
from domain.models import CouponPool
from domain.programs.service import validate_key

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_VALID_DAYS = 3650
MAX_AMOUNT = Decimal("1000000000")


class DiscountKind(StrEnum):
    PERCENT = "PERCENT"
    AMOUNT = "AMOUNT"
    OTHER = "OTHER"


@dataclass(frozen=True)
class PoolDraft:
    key: str
    name: str
    description: str
    discount_kind: str
    discount_value: Decimal | None = None
    expires_at: datetime | None = None
    valid_days: int | None = None


def validate_pool(draft: PoolDraft) -> PoolDraft:
    """The draft with its text trimmed; BAD_USER_INPUT naming the first faulty field."""
    validate_key(draft.key, "key")
    name = draft.name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name: must be 1 to {MAX_NAME} characters")
    if len(draft.description) > MAX_DESCRIPTION:
        raise InvalidInput(f"description: longer than {MAX_DESCRIPTION} characters")
    if draft.discount_kind not in DiscountKind.__members__:
        raise InvalidInput(
            f"discountKind: {draft.discount_kind[:40]!r} is not one of {', '.join(DiscountKind)}"
        )
    kind = DiscountKind(draft.discount_kind)
    value: object = draft.discount_value  # the lenient Decimal scalar may hand over raw text
    if kind is DiscountKind.OTHER:
        if value is not None:
            raise InvalidInput(
                "discountValue: not used by OTHER (the description says what the coupon gives)"
            )
    elif not isinstance(value, Decimal) or not _fits(kind, value):
        top = "100" if kind is DiscountKind.PERCENT else str(MAX_AMOUNT)
        raise InvalidInput(
            f"discountValue: {kind} needs a value above 0 and at most {top}, with at most 4 decimals"
        )
    if draft.expires_at is not None and draft.valid_days is not None:
        raise InvalidInput("validDays: give expiresAt or validDays, not both")
    if draft.valid_days is not None and not 1 <= draft.valid_days <= MAX_VALID_DAYS:
        raise InvalidInput(f"validDays: must be between 1 and {MAX_VALID_DAYS}, got {draft.valid_days}")
    return PoolDraft(
        draft.key,
        name,
        draft.description.strip(),
        kind.value,
        draft.discount_value,
        draft.expires_at,
        draft.valid_days,
    )


def _fits(kind: DiscountKind, value: Decimal) -> bool:
    top = Decimal(100) if kind is DiscountKind.PERCENT else MAX_AMOUNT
    try:
        return value.is_finite() and 0 < value <= top and value == value.quantize(Decimal("0.0001"))
    except InvalidOperation:
        return False


def expiry_at_issue(pool: CouponPool, own: datetime | None, issued_at: datetime) -> datetime | None:
    """When a code issued now expires: its own (imported) expiry, else the pool's rule."""
    if own is not None:
        return own
    if pool.valid_days is not None:
        return issued_at + timedelta(days=pool.valid_days)
    return pool.expires_at


def audited_pool(pool: CouponPool) -> dict[str, Any]:
    """A pool's definition as the API shows it: what the audit log keeps before and after."""
    return {
        "key": pool.key,
        "name": pool.name,
        "description": pool.description,
        "discountKind": pool.discount_kind,
        "discountValue": None
        if pool.discount_value is None
        else format(pool.discount_value.normalize(), "f"),
        "expiresAt": None if pool.expires_at is None else pool.expires_at.isoformat(),
        "validDays": pool.valid_days,
    }
