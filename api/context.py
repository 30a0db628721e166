"""The typed per-request context: services, the caller and the request's DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from api.client_ip import UNKNOWN
from api.loaders import Loaders, build_loaders
from api.runtime import Services
from domain.auth.principal import Principal
from domain.errors import DomainError, Unauthenticated


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    services: Services
    loaders: Loaders
    client_ip: str
    _principal: Principal | None = None
    _auth_error: DomainError | None = None
    #: The graphql-transport-ws connection_init payload (set by strawberry on WebSocket connections).
    connection_params: dict[str, object] | None = None

    @property
    def caller(self) -> Principal | None:
        """The authenticated caller, or None (no token, or an invalid one)."""
        return self._principal

    @property
    def principal(self) -> Principal:
        """The authenticated caller; UNAUTHENTICATED when the request carried no valid token."""
        if self._principal is not None:
            return self._principal
        raise self._auth_error or Unauthenticated("send `Authorization: Bearer <token>`")


Info = StrawberryInfo[Context, None]


async def build_context(
    services: Services,
    request: Request | WebSocket,
    response: Response | WebSocket | None,
    bearer: str | None,
) -> Context:
    client = request.client  # the client's address, resolved by api/request_id.py
    context = Context(
        request=request,
        response=response,
        services=services,
        loaders=build_loaders(
            services.db,
            services.members,
            services.ledger,
            services.segments,
            services.tags,
            services.tiers,
            services.coupons,
        ),
        client_ip=client.host if client else UNKNOWN,
    )
    if bearer:
        try:
            context._principal = await services.auth.authenticate(bearer)
        except DomainError as error:
            context._auth_error = error
    return context


def bearer_from_header(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
