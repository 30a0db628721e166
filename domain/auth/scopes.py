"""What a caller may do. Admins hold their role's scopes (domain/auth/roles.py); API keys the ones
they were given. domain/auth/policy.py says which scope each operation needs."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    PROGRAM_READ = "program:read"
    #: Program settings and earning rules (timezone, expiry, event age, step-up, lifecycle).
    PROGRAM_WRITE = "program:write"
    #: Boards, challenges and rewards: what a marketer runs (migration 0017 gave it to program:write keys).
    MARKETING_WRITE = "marketing:write"
    #: Webhook endpoints, their secrets and delivery retries (0017 gave it to segments:write keys).
    WEBHOOKS_MANAGE = "webhooks:manage"
    MEMBERS_READ = "members:read"
    MEMBERS_WRITE = "members:write"
    EVENTS_WRITE = "events:write"
    POINTS_REDEEM = "points:redeem"
    #: The till's validateCoupon and redeemCoupon (a default integration key scope)
    COUPONS_REDEEM = "coupons:redeem"
    POINTS_ADJUST = "points:adjust"
    TOKENS_ISSUE = "tokens:issue"
    SEGMENTS_READ = "segments:read"
    SEGMENTS_WRITE = "segments:write"
    LEADERBOARDS_READ = "leaderboards:read"
    FRAUD_REVIEW = "fraud:review"
    FRAUD_CONFIGURE = "fraud:configure"
    MEMBERS_ERASE = "members:erase"
    #: exportMember: everything held about a member (OWNER/ADMIN among admins)
    MEMBERS_EXPORT = "members:export"
    AUDIT_READ = "audit:read"
    ADMINS_MANAGE = "admins:manage"


ALL_SCOPES = frozenset(Scope)

#: What `loyalty apikey create` grants when no --scopes are given: a POS/ERP integration.
DEFAULT_API_KEY_SCOPES = frozenset(
    {
        Scope.PROGRAM_READ,
        Scope.MEMBERS_READ,
        Scope.MEMBERS_WRITE,
        Scope.EVENTS_WRITE,
        Scope.POINTS_REDEEM,
        Scope.COUPONS_REDEEM,
        Scope.TOKENS_ISSUE,
        Scope.LEADERBOARDS_READ,
    }
)


def parse_scopes(text: str) -> frozenset[Scope]:
    scopes: set[Scope] = set()
    for raw in text.replace(",", " ").split():
        try:
            scopes.add(Scope(raw))
        except ValueError:
            known = ", ".join(sorted(ALL_SCOPES))
            raise ValueError(f"unknown scope {raw!r}; known scopes: {known}") from None
    return frozenset(scopes)
