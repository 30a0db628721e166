"""The admin console (/admin) in a browser: an admin of its own to sign in as, and the page
steps every console test starts with."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from playwright.async_api import Page, expect
from sqlalchemy import select, update

from api.runtime import Services
from domain.auth import secrets as crypto
from domain.enums import AdminRole
from domain.models import AdminSession, AdminUser
from tests.support.graphql import ProgramFixture
from tests.support.servers import Server

PASSWORD = "correct horse battery"
TOKEN_KEY = "loyalty.console.token"


@dataclass(frozen=True)
class ConsoleAdmin:
    """An admin created for one test, so its TOTP codes are not spent by the `admin` fixture's logins."""

    email: str
    totp_secret: str

    #: TOTP steps ahead of now its codes are for: a code is accepted once (and the server takes the
    #: step before and after now too), so a second check within 30 s takes the next step's code.
    steps_ahead: int = 0

    def code(self) -> str:
        """The code of the current real-time TOTP step (the server runs on the system clock), or of
        the step `steps_ahead`."""
        return crypto.code_at(self.totp_secret, time.time() + self.steps_ahead * crypto.TOTP_STEP_S)

    def ahead(self, steps: int) -> ConsoleAdmin:
        """The same admin, its codes `steps` TOTP steps ahead."""
        return ConsoleAdmin(self.email, self.totp_secret, steps)


async def console_admin(
    services: Services, program: ProgramFixture, role: AdminRole = AdminRole.OWNER
) -> ConsoleAdmin:
    email = f"{role.value.lower()}-console-{program.key}@example.com"
    created = await services.auth.create_admin(program.key, email, PASSWORD, role)
    return ConsoleAdmin(created.email, created.totp_secret)


async def sign_in(page: Page, server: Server, admin: ConsoleAdmin) -> None:
    """Open /admin, sign in with e-mail, password and TOTP, and wait for the console and its stream."""
    await page.goto(f"{server.http}/admin")
    await page.get_by_role("form", name="Sign in").get_by_label("E-mail").fill(admin.email)
    await page.get_by_role("form", name="Sign in").get_by_label("Password").fill(PASSWORD)
    await (
        page.get_by_role("form", name="Sign in").get_by_label("Authenticator code (TOTP)").fill(admin.code())
    )
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live")


async def age_sessions(
    services: Services, email: str, *, verified_ago: timedelta | None = None, expired: bool = False
) -> None:
    """Move the admin's sessions back in time, as the server's clock would: their last TOTP check
    `verified_ago`, or their expiry into the past (the server process runs on the system clock)."""
    now = datetime.now(UTC)
    values: dict[str, datetime] = {}
    if verified_ago is not None:
        values["totp_verified_at"] = now - verified_ago
    if expired:
        values["expires_at"] = now - timedelta(seconds=1)
    admin_ids = select(AdminUser.id).where(AdminUser.email == email)
    async with services.db.unit_of_work() as uow:
        await uow.session.execute(
            update(AdminSession).where(AdminSession.admin_id.in_(admin_ids)).values(**values)
        )
