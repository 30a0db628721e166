"""Queries and mutations on the program's admins and their roles (docs/security.md, Roles)."""

from __future__ import annotations

import strawberry

from api.context import Info
from api.types.governance import AdminCredentials, AdminUser
from domain.enums import AdminRole


@strawberry.type
class GovernanceQueries:
    @strawberry.field(description="Beyond the contract: the admin of this session, any role")
    async def current_admin(self, info: Info) -> AdminUser:
        return AdminUser.of(await info.context.services.admins.current(info.context.principal))

    @strawberry.field(description="The program's admins by e-mail (OWNER/ADMIN)")
    async def admins(self, info: Info) -> list[AdminUser]:
        return [AdminUser.of(a) for a in await info.context.services.admins.admins(info.context.principal)]


@strawberry.type
class GovernanceMutations:
    @strawberry.mutation(
        description="A new admin of the program with a generated password and TOTP secret, shown once "
        "(OWNER/ADMIN; only an OWNER creates an OWNER)"
    )
    async def create_admin(self, info: Info, email: str, role: AdminRole) -> AdminCredentials:
        created = await info.context.services.admins.create_admin(
            info.context.principal, email, AdminRole(role)
        )
        return AdminCredentials.of(created)

    @strawberry.mutation(
        description="Change an admin's role (OWNER/ADMIN; only an OWNER changes an OWNER or makes one); "
        "demoting the last OWNER is CONFLICT (reason LAST_OWNER)"
    )
    async def set_admin_role(self, info: Info, email: str, role: AdminRole) -> AdminUser:
        view = await info.context.services.admins.set_role(info.context.principal, email, AdminRole(role))
        return AdminUser.of(view)
