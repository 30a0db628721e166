"""The admin console (docs/console.md): GET /admin and the ES modules and stylesheet it loads.

Plain files, no build step: `admin.html`, `admin.css` and the `admin-*.js` modules beside this
file, read once when the routes are built. The console holds no data and reaches the engine only
through the public GraphQL API; every response carries the dashboard's strict headers
(`page_headers`), so server text can never run as code on the page.
"""

from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.static import page_headers

_MEDIA = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
PAGE = "admin.html"


def console_files() -> dict[str, bytes]:
    """The console's files by name: its page, stylesheet and modules."""
    folder = files("api.static")
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.name == PAGE
        or entry.name == "admin.css"
        or (entry.name.startswith("admin-") and entry.name.endswith(".js"))
    }


def console_routes() -> list[BaseRoute]:
    """GET /admin (the page) and GET /admin/<file> for each of its files; anything else is a 404."""
    bodies = console_files()

    def route(path: str, name: str) -> Route:
        body = bodies[name]
        media = _MEDIA[name[name.rindex(".") :]]

        async def endpoint(request: Request) -> Response:
            return Response(body, media_type=media, headers=page_headers(request))

        return Route(path, endpoint, methods=["GET"])

    return [
        route("/admin", PAGE),
        *(route(f"/admin/{name}", name) for name in sorted(bodies) if name != PAGE),
    ]
