"""What each admin role may do: one table of role -> scopes (DESIGN.md, "Privacy and governance").

OWNER and ADMIN hold every scope; only an OWNER manages OWNERs (domain/governance/admins.py).
MARKETER defines segments, triggers, tiers, boards, challenges, rewards and experiments; REVIEWER
decides held accruals; VIEWER reads. Everything else (earning and fraud rules, program settings,
point adjustments and reversals, erasure, webhooks, admins, the audit log) is OWNER/ADMIN.
"""

from __future__ import annotations

from domain.auth.scopes import ALL_SCOPES, Scope
from domain.enums import AdminRole

#: What every role may read.
READ_SCOPES = frozenset(
    {Scope.PROGRAM_READ, Scope.MEMBERS_READ, Scope.SEGMENTS_READ, Scope.LEADERBOARDS_READ}
)

ROLE_SCOPES: dict[AdminRole, frozenset[Scope]] = {
    AdminRole.OWNER: ALL_SCOPES,
    AdminRole.ADMIN: ALL_SCOPES,
    AdminRole.MARKETER: READ_SCOPES | {Scope.SEGMENTS_WRITE, Scope.MARKETING_WRITE},
    AdminRole.REVIEWER: READ_SCOPES | {Scope.FRAUD_REVIEW},
    AdminRole.VIEWER: READ_SCOPES,
}


def roles_holding(scope: Scope) -> list[AdminRole]:
    """The roles that hold `scope`, strongest first."""
    return [role for role in AdminRole if scope in ROLE_SCOPES[role]]


def parse_role(text: str) -> AdminRole:
    """A role by name (any case); InvalidInput-style ValueError listing the roles otherwise."""
    try:
        return AdminRole(text.strip().upper())
    except ValueError:
        known = ", ".join(AdminRole)
        raise ValueError(f"unknown role {text!r}; roles: {known}") from None
