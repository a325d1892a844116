"""The dashboard: one HTML page and its static files at ``<prefix>/ui``.

The page is static: its JavaScript reads and steers the scheduler through the REST API,
so what it shows and what it may do are exactly what the API allows the same user. The
routes go through the API's guard (auth, cross-site refusal), passed in by
:func:`quart_sched.api.register_api`. Every answer carries a Content-Security-Policy that
allows nothing but this origin's files: no inline script or style, no CDN.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from html import escape
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from quart import Response, request

if TYPE_CHECKING:
    from quart import Quart

    from ._extension import APScheduler

View = Callable[..., Awaitable[Response]]

#: The files under ``quart_sched/dashboard/`` the page may load, with their types.
STATIC_FILES = {
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
#: The dashboard's view names (endpoint names without the prefix): pages, not REST API
#: routes, so the OpenAPI document leaves them out.
VIEW_NAMES = ("dashboard", "dashboard_static")
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files, and an upgrade must show at once: revalidate every time.
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return files("quart_sched").joinpath("dashboard").joinpath(name).read_bytes()


def _page(api_prefix: str) -> bytes:
    # The prefix goes into attributes, HTML-escaped: the page holds no script of its own.
    return _read("index.html").replace(b"{{api}}", escape(api_prefix, quote=True).encode())


def _response(body: bytes, mimetype: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers.update(_SECURITY_HEADERS)
    return response


async def dashboard(ext: APScheduler) -> Response:
    # root_path: an app mounted under a path (hypercorn --root-path, a proxy's prefix)
    # serves the API there too.
    return _response(_page(request.root_path + ext.api_prefix), "text/html")


async def dashboard_static(ext: APScheduler, filename: str) -> Response:
    mimetype = STATIC_FILES.get(filename)
    if mimetype is None:
        return Response("Not Found", status=404)
    return _response(_read(filename), mimetype)


def register_dashboard(
    ext: APScheduler, app: Quart, guard: Callable[[APScheduler, View], Any]
) -> None:
    """Add the page (``<prefix>/ui``) and its files (``<prefix>/ui/static/<name>``)."""
    app.add_url_rule(
        ext.api_prefix + "/ui",
        ext.endpoint_prefix + "dashboard",
        guard(ext, dashboard),
        methods=["GET"],
    )
    app.add_url_rule(
        ext.api_prefix + "/ui/static/<filename>",
        ext.endpoint_prefix + "dashboard_static",
        guard(ext, dashboard_static),
        methods=["GET"],
    )
