"""Who is calling: an admin, an integration (API key) or a member."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from domain.auth.scopes import Scope
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

    def require(self, scope: Scope) -> int:
        """The program the caller acts in, if it holds `scope`."""
        if scope not in self.scopes:
            raise Forbidden(
                f"this operation needs the {scope.value} scope, which the {self.kind.value} lacks"
            )
        return self.program_id

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

    def require_member(self) -> int:
        if self.kind != PrincipalKind.MEMBER:
            raise Forbidden("only a member token can read `me`")
        return self.subject_id
