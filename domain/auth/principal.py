"""Who is calling: an admin, an integration (API key) or a member."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from domain.auth.roles import roles_holding
from domain.auth.scopes import Scope
from domain.enums import AdminRole
from domain.errors import Forbidden


class PrincipalKind(StrEnum):
    ADMIN = "admin"
    API_KEY = "api_key"
    MEMBER = "member"


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    program_id: int
    subject_id: int  # the admin's, the key's or the member's id
    label: str  # recorded in audit trails, e.g. "admin:ana@example.com"
    scopes: frozenset[Scope] = field(default_factory=frozenset)
    session_id: str | None = None
    totp_verified_at: datetime | None = None
    #: An admin's role (its scopes are the role's, domain/auth/roles.py); None for keys and members.
    role: AdminRole | None = None

    def require(self, scope: Scope, what: str = "this operation") -> int:
        """The program the caller acts in, if it holds `scope`; else FORBIDDEN naming the scope and
        the roles that hold it (extensions `scope` and `roles`)."""
        if scope not in self.scopes:
            roles = roles_holding(scope)
            raise Forbidden(
                f"{what} needs the {scope.value} scope (roles {', '.join(roles)}); {self.lacking()}",
                scope=scope.value,
                roles=",".join(roles),
            )
        return self.program_id

    def lacking(self) -> str:
        """How a refusal describes this caller."""
        if self.kind == PrincipalKind.ADMIN and self.role is not None:
            article = "an" if self.role.value[0] in "AEIOU" else "a"
            return f"this admin is {article} {self.role.value}"
        if self.kind == PrincipalKind.ADMIN:
            return "this admin lacks it"
        if self.kind == PrincipalKind.API_KEY:
            return "this API key lacks it"
        return "a member token holds no scopes"

    @property
    def actor(self) -> str | None:
        """Who posted a manual ledger entry: an admin's e-mail, "key:<api key name>", or None for a
        member token (a member spending its own points is not an operator)."""
        if self.kind == PrincipalKind.ADMIN:
            return self.label.removeprefix("admin:")
        if self.kind == PrincipalKind.API_KEY:
            return "key:" + self.label.removeprefix("apikey:")
        return None

    @property
    def operator(self) -> str:
        """Who the audit log names for a change this caller makes; a member token changes no
        configuration or balance on an operator's behalf, so it has none."""
        actor = self.actor
        if actor is None:
            raise Forbidden("a member token cannot make this change")
        return actor
