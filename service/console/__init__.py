"""The built-in web console: static HTML, CSS and JavaScript modules served at ``/ui``.

No build step and nothing fetched from elsewhere: the files ship as package data and the page talks
only to the public ``/v1`` API, with the caller's API key when keys are configured.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Everything from this origin only: no CDN can be used, by accident or by an injected tag.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """Static files that a browser revalidates (ETag) on every load, so an upgrade is seen at once."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_PAGE_HEADERS)
        return response


def mount_console(app: FastAPI) -> None:
    """``GET /ui`` (the page; ``/ui/`` redirects there) and ``/ui/static/*`` (its files).

    The page lives at ``/ui`` without a trailing slash so that its relative URLs (``ui/static/...``,
    ``v1/...``) also resolve behind a reverse proxy that serves the API under a path prefix.
    """

    @app.get("/ui", include_in_schema=False)
    def console_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    app.mount("/ui/static", ConsoleFiles(directory=STATIC_DIR), name="console-static")
