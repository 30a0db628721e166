"""The Starlette application: /graphql (GraphiQL, graphql-transport-ws), /healthz, /readyz, /metrics."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from cross_web import HTTPException
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from api.context import Context, bearer_from_header, build_context
from api.errors import classify
from api.http_errors import Guard, http_exception, json_error, transport_code
from api.metrics import CONTENT_TYPE, exposition, process_exited, refusal
from api.request_id import RequestId
from api.runtime import Services, build_services
from api.schema import build_schema
from api.static import dashboard_routes
from api.static.console import console_routes
from api.static.graphiql import graphiql_page, graphiql_routes
from domain.auth.policy import authorize
from domain.errors import DomainError
from domain.inputs import json_kind
from domain.settings import Settings


class TextWebSocket(ASGIWebSocketAdapter):
    """graphql-transport-ws in text frames (browsers' clients expect text), and rejections that say why."""

    async def send_json(self, message: object) -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return  # we closed it (e.g. 4008): strawberry's closing "complete" has nowhere to go
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

        Closed with 4403 and the reason when the token is missing or invalid, or when the policy
        (domain/auth/policy.py, segmentChanges) refuses the caller.
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
                authorize("segmentChanges", principal)  # domain/auth/policy.py, as every operation
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """strawberry's view, with its transport errors (bad JSON, no query, wrong content type, a GET
        query) answered as JSON with a code instead of plain text."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope, receive))
        except HTTPException as error:
            response = json_error(error.status_code, transport_code(error.status_code), error.reason)
        await response(scope, receive, send)

    def parse_json(self, data: str | bytes) -> object:
        parsed = super().parse_json(data)
        if not isinstance(parsed, dict | list):
            example = '{"query": "{ program { key } }"}'
            raise HTTPException(400, f"expected a JSON object such as {example}, got {json_kind(parsed)}")
        return parsed

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)  # its JSONDecodeError subclasses the stdlib's: bad JSON is still a 400

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


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
            process_exited()

    async def readyz(_: Request) -> Response:
        assert graphql.services is not None
        checks = await _readiness(graphql.services)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {
                "status": "ok" if ok else "unavailable",
                "checks": checks,
                "warnings": await graphql.services.statistics.warnings() if ok else [],
            },
            status_code=200 if ok else 503,
        )

    async def metrics(request: Request) -> Response:
        assert graphql.services is not None
        refused = refusal(graphql.services.settings, request.headers.get("authorization"))
        if refused is not None:
            return json_error(*refused)
        return Response(await exposition(graphql.services), media_type=CONTENT_TYPE)

    settings = services.settings if services else Settings.from_env()
    graphql = LoyaltyGraphQL(settings)
    graphql.services = services

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            *dashboard_routes(),
            *console_routes(),
            *graphiql_routes(),
        ],
        lifespan=lifespan,
        # Inside Starlette's ServerErrorMiddleware, so that the Guard answers before it can send a 500.
        middleware=[Middleware(Guard, settings.max_body_bytes, settings.body_timeout_s)],
        exception_handlers={StarletteHTTPException: http_exception},
    )
    return RequestId(app, settings.trusted_proxies)


async def _readiness(services: Services) -> dict[str, str]:
    async def database() -> str:
        async with services.db.read() as session:  # on SQLite, without waiting for a writer
            await session.execute(text("SELECT 1"))
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
