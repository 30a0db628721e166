"""The expected failures of the domain, each with a machine-readable code.

The API maps `code` to the GraphQL error's `extensions.code`; anything that is
not a `DomainError` is unexpected, logged and masked.
"""

from __future__ import annotations


class DomainError(Exception):
    code = "BAD_USER_INPUT"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(DomainError):
    code = "BAD_USER_INPUT"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"


class Forbidden(DomainError):
    code = "FORBIDDEN"


class NotFound(DomainError):
    code = "NOT_FOUND"


class Conflict(DomainError):
    code = "CONFLICT"


class RateLimited(DomainError):
    code = "RATE_LIMITED"


class CouponRefused(DomainError):
    """A coupon the till or the issuer cannot use; `code` says why: COUPON_USED, COUPON_EXPIRED,
    COUPON_UNKNOWN, COUPON_FOREIGN, COUPON_BLOCKED or COUPON_POOL_EXHAUSTED (docs/promotions.md)."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message, **details)
        self.code = code
