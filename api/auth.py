"""Admin login and logout, member tokens."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.context import Info


@strawberry.type
class LoginPayload:
    token: str
    expires_at: datetime


@strawberry.type
class MemberTokenPayload:
    token: str
    expires_at: datetime


@strawberry.type
class AuthMutations:
    @strawberry.mutation(description="Password + TOTP; returns an admin session token")
    async def login(self, info: Info, email: str, password: str, totp_code: str) -> LoginPayload:
        issued = await info.context.services.auth.login(email, password, totp_code, info.context.client_ip)
        return LoginPayload(token=issued.token, expires_at=issued.expires_at)

    @strawberry.mutation(description="Revokes the admin session token used for this request")
    async def logout(self, info: Info) -> bool:
        await info.context.services.auth.logout(info.context.principal)
        return True

    @strawberry.mutation(description="Integration key: a 1-hour token bound to one member")
    async def issue_member_token(self, info: Info, member_external_id: str) -> MemberTokenPayload:
        principal = info.context.principal
        program_id = principal.program_id
        issued = await info.context.services.auth.issue_member_token(
            program_id, principal, member_external_id
        )
        return MemberTokenPayload(token=issued.token, expires_at=issued.expires_at)
