"""The Starlette application: /graphql (GraphiQL, graphql-transport-ws), /healthz, /readyz."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from api.context import Context, bearer_from_header, build_context
from api.errors import classify
from api.runtime import Services, build_services
from api.schema import build_schema
from api.static import dashboard_routes
from api.static.graphiql import graphiql_page, graphiql_routes
from domain.auth.principal import PrincipalKind
from domain.auth.scopes import Scope as AuthScope
from domain.errors import DomainError
from domain.settings import Settings

log = logging.getLogger("api")


class TextWebSocket(ASGIWebSocketAdapter):
    """graphql-transport-ws in text frames (browsers' clients expect text), and rejections that say why."""

    async def send_json(self, message: object) -> None:
        await self.ws.send_text(orjson.dumps(message).decode())

    async def close(self, code: int, reason: str) -> None:
        if code == 4403:
            reason = getattr(self.ws.state, "rejection", reason)
        await self.ws.close(code=code, reason=reason)


class LoyaltyGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context; `services` is set when the app starts."""

    services: Services | None = None
    websocket_adapter_class = TextWebSocket

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            build_schema(settings),
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            allow_queries_via_get=False,
        )

    async def render_graphql_ide(self, request: Request) -> Response:
        """Our GraphiQL page, whose scripts this app serves (strawberry's loads them from a CDN)."""
        return graphiql_page(request)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        assert self.services is not None, "the app's lifespan has not started"
        bearer = bearer_from_header(request.headers.get("authorization"))
        return await build_context(self.services, request, response, bearer)

    async def on_ws_connect(self, context: Context) -> None:
        """A subscription authenticates in connection_init: {"authorization": "Bearer <token>"}.

        Closed with 4403 and the reason when the token is missing, invalid, a member's,
        or lacks segments:read.
        """
        params = getattr(context, "connection_params", None) or {}
        token = params.get("token") or bearer_from_header(
            params.get("authorization") or params.get("Authorization")
        )
        reason = None
        if not isinstance(token, str) or not token:
            reason = 'connection_init needs a payload {"authorization": "Bearer <admin token or API key>"}'
        else:
            try:
                principal = await context.services.auth.authenticate(token)
                if principal.kind == PrincipalKind.MEMBER:
                    reason = "member tokens cannot subscribe to segment changes"
                else:
                    principal.require(AuthScope.SEGMENTS_READ)
                    context._principal, context._auth_error = principal, None
            except DomainError as error:
                reason = error.message
        if reason is not None:
            context.request.state.rejection = reason[:120]  # a close reason is at most 123 bytes
            raise ConnectionRejectionError

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        """Parse errors skip the extensions' result hook: give them their code here too."""
        if result.errors:
            result.errors = [classify(e) for e in result.errors]
        return await super().process_result(request, result)

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)  # its JSONDecodeError subclasses the stdlib's: bad JSON is still a 400

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


def _error(status: int, code: str, message: str) -> Response:
    return Response(
        orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]}),
        status_code=status,
        media_type="application/json",
    )


class Guard:
    """Outermost ASGI layer: caps request bodies and turns any escaped exception into a JSON 503."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _error(413, "BAD_USER_INPUT", f"request body exceeds {self.max_body_bytes} bytes")(
                scope, receive, send
            )
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _error(413, "BAD_USER_INPUT", f"request body exceeds {self.max_body_bytes} bytes")(
                    scope, receive, send
                )
        except Exception:
            log.exception("request failed outside GraphQL error handling")
            if not started:
                await _error(503, "UNAVAILABLE", "the service could not handle the request; retry shortly")(
                    scope, receive, send
                )


class _BodyTooLarge(Exception):
    pass


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(services: Services | None = None) -> ASGIApp:
    """The ASGI app; without `services` they are built from the environment at start-up."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if services is not None:
            yield
            return
        graphql.services = build_services(settings)
        try:
            await graphql.services.start()
            # what start-up built lives as long as the process: keep it out of every full collection
            gc.freeze()
            yield
        finally:
            await graphql.services.close()

    async def readyz(_: Request) -> Response:
        assert graphql.services is not None
        checks = await _readiness(graphql.services)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
        )

    settings = services.settings if services else Settings.from_env()
    graphql = LoyaltyGraphQL(settings)
    graphql.services = services

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            *dashboard_routes(),
            *graphiql_routes(),
        ],
        lifespan=lifespan,
    )
    return Guard(app, settings.max_body_bytes)


async def _readiness(services: Services) -> dict[str, str]:
    async def database() -> str:
        async with services.db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return "ok"

    async def redis() -> str:
        await services.redis.client.ping()
        return "ok"

    results: dict[str, str] = {}
    for name, check in (("database", database), ("redis", redis)):
        try:
            results[name] = await asyncio.wait_for(check(), timeout=2)
        except Exception as error:
            results[name] = f"unavailable: {type(error).__name__}"
    return results
