"""Admin logins (password + single-use TOTP), sessions, API keys and member tokens."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.auth import secrets as crypto
from domain.auth.principal import Principal, PrincipalKind
from domain.auth.ratelimit import RateLimiter
from domain.auth.roles import ROLE_SCOPES
from domain.auth.scopes import DEFAULT_API_KEY_SCOPES, Scope
from domain.auth.throttle import ACCOUNT, LoginThrottle, Throttle
from domain.clock import Clock
from domain.db.engine import Database, UnitOfWork
from domain.enums import AdminRole
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from domain.members.service import members_by_external_id
from domain.models import AdminSession, AdminUser, ApiKey, Member, Program
from domain.programs.service import program_by_key
from domain.redis_store import RedisStore

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+\Z")
API_KEY_PREFIX = "lk_"
MEMBER_TOKENS_PER_MINUTE = 600
#: The one answer to every failed login, so that it never tells which part was right.
WRONG_LOGIN = "email, password or TOTP code is wrong"


@dataclass(frozen=True)
class AdminCreated:
    id: int
    email: str
    program_key: str
    totp_secret: str
    provisioning_uri: str


@dataclass(frozen=True)
class ApiKeyCreated:
    id: int
    name: str
    program_key: str
    key: str
    scopes: list[str]


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime


class AuthService:
    def __init__(
        self,
        db: Database,
        store: RedisStore,
        clock: Clock,
        secret_key: str,
        admin_session_ttl: timedelta = timedelta(hours=12),
        member_token_ttl: timedelta = timedelta(hours=1),
    ) -> None:
        self.db = db
        self.clock = clock
        self.secret_key = secret_key
        self.admin_session_ttl = admin_session_ttl
        self.member_token_ttl = member_token_ttl
        self.login_throttle = LoginThrottle(store, clock)
        self.totp_throttle = Throttle(store, clock, "totp")
        self.token_limiter = RateLimiter(store, "member-tokens", MEMBER_TOKENS_PER_MINUTE, 60)

    # ---- provisioning (CLI) ----

    async def create_admin(
        self, program_key: str, email: str, password: str, role: AdminRole = AdminRole.OWNER
    ) -> AdminCreated:
        email = email.strip().lower()
        try:
            async with self.db.unit_of_work() as uow:
                program = await _program(uow.session, program_key)
                admin = new_admin(program.id, email, password, role, self.clock.now())
                uow.session.add(admin)
                await uow.session.flush()
        except IntegrityError:
            raise Conflict(f"email: an admin {email!r} already exists") from None
        uri = crypto.provisioning_uri(admin.totp_secret, email, f"Loyalty {program_key}")
        return AdminCreated(admin.id, email, program_key, admin.totp_secret, uri)

    async def create_api_key(
        self, program_key: str, name: str, scopes: frozenset[Scope] | None
    ) -> ApiKeyCreated:
        if not name.strip():
            raise InvalidInput("name: must not be empty")
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        granted = sorted(scopes if scopes else DEFAULT_API_KEY_SCOPES)
        async with self.db.unit_of_work() as uow:
            program = await _program(uow.session, program_key)
            row = ApiKey(
                program_id=program.id,
                name=name.strip(),
                prefix=key[:11],
                key_hash=crypto.sha256_hex(key),
                scopes=[s.value for s in granted],
                created_at=self.clock.now(),
            )
            uow.session.add(row)
            await uow.session.flush()
        return ApiKeyCreated(row.id, row.name, program_key, key, row.scopes)

    # ---- login ----

    async def login(self, email: str, password: str, totp_code: str, client_ip: str) -> IssuedToken:
        """Password + TOTP, throttled per account and per client IP (domain/auth/throttle.py)."""
        email = email.strip().lower()
        attempt = await self.login_throttle.reserve(email, client_ip)
        async with self.db.read() as session:
            admin = (
                await session.execute(select(AdminUser).where(AdminUser.email == email))
            ).scalar_one_or_none()
        if not crypto.verify_password(admin.password_hash if admin else None, password) or admin is None:
            raise Unauthenticated(WRONG_LOGIN)
        now = self.clock.now()
        step = crypto.matching_timecode(admin.totp_secret, totp_code.strip(), now.timestamp())
        async with self.db.unit_of_work() as uow:
            accepted = step is not None and await _claim_totp_step(uow, admin.id, step)
            if accepted:
                sid = secrets.token_urlsafe(32)
                expires = now + self.admin_session_ttl
                uow.session.add(
                    AdminSession(
                        id=sid, admin_id=admin.id, created_at=now, expires_at=expires, totp_verified_at=now
                    )
                )
        if not accepted:
            raise Unauthenticated(WRONG_LOGIN)
        await self.login_throttle.succeeded(email, client_ip, attempt)
        token = crypto.sign({"typ": "admin", "sid": sid, "exp": int(expires.timestamp())}, self.secret_key)
        return IssuedToken(token, expires)

    async def verify_totp(self, principal: Principal, totp_code: str) -> datetime:
        """Step-up: a fresh (single-use) TOTP code marks the admin's session as just verified.

        Throttled per admin like a login account (5 free failures, then growing delays)."""
        if principal.kind != PrincipalKind.ADMIN or principal.session_id is None:
            raise Forbidden("only an admin session can verify a TOTP code")
        subject = f"admin:{principal.subject_id}"
        await self.totp_throttle.reserve([(subject, ACCOUNT)], "failed TOTP checks")
        async with self.db.read() as session:
            admin = await session.get(AdminUser, principal.subject_id)
        if admin is None:
            raise Unauthenticated("the admin of this session no longer exists")
        now = self.clock.now()
        step = crypto.matching_timecode(admin.totp_secret, totp_code.strip(), now.timestamp())
        async with self.db.unit_of_work() as uow:
            accepted = step is not None and await _claim_totp_step(uow, admin.id, step)
            if accepted:
                await uow.session.execute(
                    update(AdminSession)
                    .where(AdminSession.id == principal.session_id)
                    .values(totp_verified_at=now)
                )
        if not accepted:
            raise Forbidden("totpCode: wrong (a TOTP code works only once)", reason="TOTP_INVALID")
        await self.totp_throttle.forget(subject)
        return now

    async def logout(self, principal: Principal) -> None:
        if principal.session_id is None:
            raise InvalidInput("only an admin session can be logged out")
        async with self.db.unit_of_work() as uow:
            await uow.session.execute(
                update(AdminSession)
                .where(AdminSession.id == principal.session_id)
                .values(revoked_at=self.clock.now())
            )

    # ---- member tokens ----

    async def issue_member_token(
        self, program_id: int, caller: Principal, member_external_id: str
    ) -> IssuedToken:
        await self.token_limiter.consume(f"{caller.kind}:{caller.subject_id}", "member tokens")
        async with self.db.read() as session:
            member = (await members_by_external_id(session, program_id, [member_external_id])).get(
                member_external_id
            )
        if member is None:
            raise NotFound(f"memberExternalId: no member {member_external_id!r} in this program")
        expires = self.clock.now() + self.member_token_ttl
        payload = {"typ": "member", "pid": program_id, "mid": member.id, "exp": int(expires.timestamp())}
        return IssuedToken(crypto.sign(payload, self.secret_key), expires)

    # ---- every request ----

    async def authenticate(self, bearer: str) -> Principal:
        """The principal behind an `Authorization: Bearer` value; UNAUTHENTICATED when none."""
        if bearer.startswith(API_KEY_PREFIX):
            return await self._api_key(bearer)
        payload = crypto.unsign(bearer, self.secret_key)
        if payload is None:
            raise Unauthenticated("the bearer token is malformed or its signature is wrong")
        if not isinstance(payload.get("exp"), int) or payload["exp"] <= self.clock.now().timestamp():
            raise Unauthenticated("the token has expired")
        if payload.get("typ") == "admin":
            return await self._admin_session(str(payload.get("sid")))
        if payload.get("typ") == "member":
            return await self._member(payload)
        raise Unauthenticated("unknown token type")

    async def _api_key(self, key: str) -> Principal:
        async with self.db.read() as session:
            row = (
                await session.execute(select(ApiKey).where(ApiKey.key_hash == crypto.sha256_hex(key)))
            ).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("unknown or revoked API key")
        scopes = frozenset(Scope(s) for s in row.scopes if s in Scope.__members__.values())
        return Principal(PrincipalKind.API_KEY, row.program_id, row.id, f"apikey:{row.name}", scopes)

    async def _admin_session(self, sid: str) -> Principal:
        async with self.db.read() as session:
            found = (
                await session.execute(
                    select(AdminSession, AdminUser)
                    .join(AdminUser, AdminUser.id == AdminSession.admin_id)
                    .where(AdminSession.id == sid)
                )
            ).first()
        if found is None:
            raise Unauthenticated("unknown session")
        admin_session, admin = found
        role = AdminRole(admin.role)
        if admin_session.revoked_at is not None or admin_session.expires_at <= self.clock.now():
            raise Unauthenticated("the session has ended; log in again")
        return Principal(
            PrincipalKind.ADMIN,
            admin.program_id,
            admin.id,
            f"admin:{admin.email}",
            ROLE_SCOPES[role],
            session_id=sid,
            totp_verified_at=admin_session.totp_verified_at,
            role=role,
        )

    async def _member(self, payload: dict[str, object]) -> Principal:
        program_id, member_id = payload.get("pid"), payload.get("mid")
        if not isinstance(program_id, int) or not isinstance(member_id, int):
            raise Unauthenticated("malformed member token")
        async with self.db.read() as session:
            member = await session.get(Member, member_id)
        if member is None or member.program_id != program_id or member.erased_at is not None:
            raise Unauthenticated("the member of this token no longer exists")
        return Principal(PrincipalKind.MEMBER, program_id, member_id, f"member:{member.external_id}")


def new_admin(program_id: int, email: str, password: str, role: AdminRole, now: datetime) -> AdminUser:
    """An admin row with a fresh TOTP secret, its e-mail and password checked (not yet added)."""
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise InvalidInput(f"email: {email!r} is not an email address")
    if len(password) < crypto.MIN_PASSWORD:
        raise InvalidInput(f"password: at least {crypto.MIN_PASSWORD} characters")
    return AdminUser(
        program_id=program_id,
        email=email,
        password_hash=crypto.hash_password(password),
        totp_secret=crypto.new_totp_secret(),
        role=role.value,
        created_at=now,
    )


async def _claim_totp_step(uow: UnitOfWork, admin_id: int, step: int) -> bool:
    """Record `step` as used, atomically; False when it (or a later one) was used already."""
    result = await uow.session.execute(
        update(AdminUser)
        .where(
            AdminUser.id == admin_id,
            or_(AdminUser.last_totp_timecode.is_(None), AdminUser.last_totp_timecode < step),
        )
        .values(last_totp_timecode=step)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


async def _program(session: AsyncSession, key: str) -> Program:
    program = await program_by_key(session, key)
    if program is None:
        raise NotFound(f"program: no program with key {key!r}")
    return program
