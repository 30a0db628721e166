"""What a caller may do. Admins hold every scope of their program; API keys the ones they were given."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    PROGRAM_READ = "program:read"
    PROGRAM_WRITE = "program:write"
    MEMBERS_READ = "members:read"
    MEMBERS_WRITE = "members:write"
    EVENTS_WRITE = "events:write"
    POINTS_REDEEM = "points:redeem"
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
