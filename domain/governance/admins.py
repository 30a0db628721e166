"""A program's admins: who they are, creating them and changing their roles.

Policy declared here, so every caller gets it: an admin manages only its own program's admins; only
an OWNER creates an OWNER, promotes to OWNER or changes an OWNER's role; the last OWNER cannot be
demoted. Role changes serialize on the program's row, so two concurrent demotions cannot both pass
the last-OWNER check. createAdmin and setAdminRole are audited (domain/governance/audit_log.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.auth import secrets as crypto
from domain.auth.principal import Principal, PrincipalKind
from domain.auth.service import new_admin
from domain.clock import Clock
from domain.db.engine import Database
from domain.enums import AdminRole
from domain.errors import Conflict, Forbidden, NotFound, Unauthenticated
from domain.governance.audit_log import record_change
from domain.models import AdminUser, Program

#: Bytes of randomness in a generated password (32 URL-safe characters).
PASSWORD_BYTES = 24


@dataclass(frozen=True)
class AdminView:
    email: str
    role: AdminRole
    created_at: datetime

    @staticmethod
    def of(row: AdminUser) -> AdminView:
        return AdminView(row.email, AdminRole(row.role), row.created_at)


@dataclass(frozen=True)
class AdminCredentials:
    """A new admin's sign-in: shown once, never stored in the clear."""

    email: str
    role: AdminRole
    password: str
    totp_provisioning_uri: str


class AdminService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def current(self, principal: Principal) -> AdminView:
        """The admin of the session (any role)."""
        async with self.db.read() as session:
            return AdminView.of(await _caller(session, principal))

    async def admins(self, principal: Principal) -> list[AdminView]:
        """The caller's program's admins, by e-mail."""
        async with self.db.read() as session:
            rows = await session.scalars(
                select(AdminUser)
                .where(AdminUser.program_id == principal.program_id)
                .order_by(AdminUser.email)
            )
            return [AdminView.of(row) for row in rows]

    async def create_admin(self, principal: Principal, email: str, role: AdminRole) -> AdminCredentials:
        """A new admin of the caller's program with a generated password and TOTP secret."""
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        now = self.clock.now()
        try:
            async with self.db.unit_of_work() as uow:
                program = await _lock_program(uow.session, principal.program_id)
                caller = await _caller(uow.session, principal)
                if role == AdminRole.OWNER:
                    _require_owner(caller, f"creating an OWNER ({email.strip().lower()!r})")
                admin = new_admin(program.id, email, password, role, now)
                uow.session.add(admin)
                await uow.session.flush()
                await record_change(
                    uow,
                    program_id=program.id,
                    actor=_actor(principal),
                    action="createAdmin",
                    at=now,
                    target=admin.email,
                    after={"role": role.value},
                )
        except IntegrityError:
            raise Conflict(f"email: an admin {email.strip().lower()!r} already exists") from None
        uri = crypto.provisioning_uri(admin.totp_secret, admin.email, f"Loyalty {program.key}")
        return AdminCredentials(admin.email, role, password, uri)

    async def set_role(self, principal: Principal, email: str, role: AdminRole) -> AdminView:
        """Change an admin's role; CONFLICT when it would leave the program without an OWNER."""
        email = email.strip().lower()
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            await _lock_program(session, principal.program_id)
            caller = await _caller(session, principal)
            target = await session.scalar(
                select(AdminUser).where(
                    AdminUser.program_id == principal.program_id, AdminUser.email == email
                )
            )
            if target is None:
                raise NotFound(f"email: no admin {email!r} in this program")
            before = AdminRole(target.role)
            if before == role:
                return AdminView.of(target)
            if AdminRole.OWNER in (before, role):
                _require_owner(caller, f"changing {email!r} from {before.value} to {role.value}")
            if before == AdminRole.OWNER and await _owners(session, principal.program_id) <= 1:
                raise Conflict(
                    f"email: {email!r} is the program's last OWNER; make another admin an OWNER first",
                    reason="LAST_OWNER",
                )
            target.role = role.value
            await session.flush()
            await record_change(
                uow,
                program_id=principal.program_id,
                actor=_actor(principal),
                action="setAdminRole",
                at=now,
                target=email,
                before={"role": before.value},
                after={"role": role.value},
            )
            return AdminView.of(target)


def _require_owner(caller: AdminUser, what: str) -> None:
    if caller.role != AdminRole.OWNER.value:
        article = "an" if caller.role[0] in "AEIOU" else "a"
        raise Forbidden(f"{what} needs an OWNER; this admin is {article} {caller.role}", roles="OWNER")


async def _caller(session: AsyncSession, principal: Principal) -> AdminUser:
    """The calling admin's row as it is now (its role may have changed since it logged in)."""
    if principal.kind != PrincipalKind.ADMIN:
        raise Forbidden("only an admin session manages admins")
    row = await session.get(AdminUser, principal.subject_id)
    if row is None or row.program_id != principal.program_id:
        raise Unauthenticated("the admin of this session no longer exists")
    return row


async def _lock_program(session: AsyncSession, program_id: int) -> Program:
    """Serialize the program's admin changes (PostgreSQL row lock; SQLite has one writer)."""
    program = await session.get(Program, program_id, with_for_update=True)
    if program is None:
        raise NotFound("program: this program no longer exists")
    return program


async def _owners(session: AsyncSession, program_id: int) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(AdminUser)
        .where(AdminUser.program_id == program_id, AdminUser.role == AdminRole.OWNER.value)
    )
    return int(count or 0)


def _actor(principal: Principal) -> str:
    return principal.actor or principal.label
