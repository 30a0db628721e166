"""The live admin dashboard (docs/dashboard.md): a page, its script and its stylesheet.

The files hold no data and need no build step; the page reads everything over
/graphql with the token the admin pastes in. Every response carries a
Content-Security-Policy that allows only this origin's script, style and
WebSocket, so data from the server can never run as code on the page.
"""

from __future__ import annotations

import re
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

_TYPES = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
#: A Host header that may be named in the policy (anything else: 'self' alone).
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def content_security_policy(host: str | None, extra: str = "") -> str:
    """'self' only; the WebSocket to this host named too, for browsers whose 'self' omits ws:/wss:.

    `extra`: more directives a page needs (GraphiQL's embedded fonts).
    """
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"connect-src {connect}; {extra + '; ' if extra else ''}"
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def page_headers(request: Request, extra_policy: str = "") -> dict[str, str]:
    """The headers of every page and file the app serves to browsers."""
    return {
        "Content-Security-Policy": content_security_policy(request.headers.get("host"), extra_policy),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def dashboard_routes() -> list[BaseRoute]:
    """GET /dashboard and the two files it loads, read from the package once."""

    def serve(name: str) -> Route:
        body = (files(__name__) / name).read_bytes()

        async def endpoint(request: Request) -> Response:
            return Response(body, media_type=_TYPES[name], headers=page_headers(request))

        path = "/dashboard" if name == "dashboard.html" else f"/dashboard/{name}"
        return Route(path, endpoint, methods=["GET"])

    return [serve(name) for name in _TYPES]
