"""GraphiQL on GET /graphql, served entirely by this app, so it works with no internet.

React, ReactDOM and GraphiQL are vendored, unmodified, in `vendor/` (versions, sources,
hashes and licences: vendor/README.md); `graphiql.html` loads them with subresource
integrity and `graphiql.js` starts the editor. The page gets a Content-Security-Policy like
the dashboard's: scripts, styles and connections to this origin only, plus the `data:` fonts
GraphiQL's stylesheet embeds.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.static import page_headers

#: Our files at /graphiql/<name>, the vendored ones at /graphiql/vendor/<name>.
_FILES = {
    "graphiql.js": "text/javascript; charset=utf-8",
    "graphiql.css": "text/css; charset=utf-8",
    "vendor/react.production.min.js": "text/javascript; charset=utf-8",
    "vendor/react-dom.production.min.js": "text/javascript; charset=utf-8",
    "vendor/graphiql.min.js": "text/javascript; charset=utf-8",
    "vendor/graphiql.min.css": "text/css; charset=utf-8",
}
#: What GraphiQL needs beyond the dashboard's policy: the fonts embedded in its stylesheet.
EXTRA_POLICY = "font-src data:; img-src 'self' data:"


def _read(name: str) -> bytes:
    return files("api.static").joinpath(*name.split("/")).read_bytes()


_PAGE = _read("graphiql.html")


def graphiql_page(request: Request) -> Response:
    """The GraphiQL page (what GET /graphql answers a browser)."""
    return Response(_PAGE, media_type="text/html; charset=utf-8", headers=_headers(request))


def graphiql_routes() -> list[BaseRoute]:
    """GET /graphiql/... : the page's scripts and stylesheets, read from the package once."""

    def serve(name: str) -> Route:
        body = _read(name)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

        async def endpoint(request: Request) -> Response:
            headers = _headers(request) | {"ETag": etag}
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers=headers)
            return Response(body, media_type=_FILES[name], headers=headers)

        return Route(f"/graphiql/{name}", endpoint, methods=["GET"])

    return [serve(name) for name in _FILES]


def _headers(request: Request) -> dict[str, str]:
    return page_headers(request, extra_policy=EXTRA_POLICY)
