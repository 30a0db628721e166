"""Calling the API as a client does: programs with their admin and API key, GraphQL over HTTP."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from starlette.types import ASGIApp

from domain.auth import secrets as crypto
from tests.support import ShiftableClock, move_to
from tests.support.backends import RUN_ID

if TYPE_CHECKING:
    from api.runtime import Services

_programs = itertools.count(1)
LOGIN = "mutation($e: String!, $p: String!, $c: String!) { login(email: $e, password: $p, totpCode: $c) { token } }"


def http_client(app: ASGIApp, ip: str) -> httpx.AsyncClient:
    """An HTTP client for the app, calling from `ip` (use it with `async with`)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 5555)), base_url="http://testserver"
    )


@dataclass
class ProgramFixture:
    id: int
    key: str
    api_key: str
    admin_email: str
    admin_password: str
    totp_secret: str


class GraphQLClient:
    """Posts operations to /graphql as one caller."""

    def __init__(self, http: httpx.AsyncClient, token: str | None) -> None:
        self.http = http
        self.token = token

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, (response.status_code, response.text)
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await self.execute(query, variables)
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    async def error(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The single error of an operation that must fail."""
        body = await self.execute(query, variables)
        assert body.get("errors"), body
        error: dict[str, Any] = body["errors"][0]
        return error


async def new_program(services: Services, *, kind: str = "B2C", auto_create: bool = False) -> ProgramFixture:
    from domain.programs.service import ProgramSettings

    key = f"p{next(_programs)}-{RUN_ID}"
    program = await services.programs.create_program(
        key, f"Program {key}", kind, ProgramSettings(auto_create_members=auto_create)
    )
    email = f"admin-{key}@example.com"
    password = "correct horse battery"
    admin = await services.auth.create_admin(key, email, password)
    api_key = await services.auth.create_api_key(key, "pos", None)
    return ProgramFixture(program.id, key, api_key.key, email, password, admin.totp_secret)


async def admin_token(client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock) -> str:
    """Log the program's admin in; moves the clock a TOTP step on so each call gets a fresh code."""
    return await log_in(client, program.admin_email, program.admin_password, program.totp_secret, clock)


async def log_in(
    client: httpx.AsyncClient, email: str, password: str, totp_secret: str, clock: ShiftableClock
) -> str:
    """Any admin's session token; moves the clock a TOTP step on so each call gets a fresh code."""
    clock.shift(timedelta(seconds=crypto.TOTP_STEP_S))
    code = crypto.code_at(totp_secret, clock.now().timestamp())
    data = await GraphQLClient(client, None).data(LOGIN, {"e": email, "p": password, "c": code})
    token: str = data["login"]["token"]
    return token


async def admin_at(
    client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock, instant: datetime
) -> GraphQLClient:
    """The admin, logged in at `instant` (the login moves the clock one TOTP step on: 30 s)."""
    move_to(clock, instant - timedelta(seconds=30))
    return GraphQLClient(client, await admin_token(client, program, clock))
