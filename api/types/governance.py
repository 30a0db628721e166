"""Governance types: admins, their roles and their one-time credentials."""

from __future__ import annotations

from datetime import datetime

import strawberry

from domain.enums import AdminRole
from domain.governance.admins import AdminCredentials as Credentials
from domain.governance.admins import AdminView

strawberry.enum(AdminRole, description="What an admin may do: docs/security.md, Roles")


@strawberry.type(description="An admin of the program")
class AdminUser:
    email: str
    role: AdminRole
    created_at: datetime

    @staticmethod
    def of(view: AdminView) -> AdminUser:
        return AdminUser(email=view.email, role=view.role, created_at=view.created_at)


@strawberry.type(description="A new admin's sign-in, shown once: the password is never shown again")
class AdminCredentials:
    email: str
    role: AdminRole
    password: str
    totp_provisioning_uri: str = strawberry.field(
        description="otpauth:// URI for an authenticator app (scan it as a QR code)"
    )

    @staticmethod
    def of(created: Credentials) -> AdminCredentials:
        return AdminCredentials(
            email=created.email,
            role=created.role,
            password=created.password,
            totp_provisioning_uri=created.totp_provisioning_uri,
        )
