"""The browser chat page: static files served by the API itself (same origin, no CORS).

`/` is `static/index.html`; `/static/<name>` serves the page's own files (.html, .js,
.css, .svg) from that folder and nothing else. The page refers to its files and to
the API by relative URLs, so it works at `/` locally and under API Gateway's stage
path (`/prod/`) when deployed.

Every answer carries a strict Content-Security-Policy: scripts, styles, images and
requests may come from this origin only (no inline script or style, no third-party
host), and the page cannot be framed. It is what keeps untrusted text from ever
running as code even if a rendering bug let markup through.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from core.errors import not_found
from handler.parsing import path_param

STATIC_DIR = Path(__file__).resolve().parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False)
_ASSET_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


@router.get("/", response_model=None)
async def index(request: Request) -> Response:
    # Deployed, API Gateway serves the page at `.../prod/`; opened as `.../prod` (the
    # stage URL without its slash) the page's relative URLs would miss the stage, so
    # send the browser to the URL with the slash. The app sees `/` either way; only
    # the REST API event's own path tells them apart.
    context = (request.scope.get("aws.event") or {}).get("requestContext") or {}
    public_path = context.get("path")
    if isinstance(public_path, str) and public_path and not public_path.endswith("/"):
        return RedirectResponse(public_path + "/", status_code=308)
    return FileResponse(STATIC_DIR / "index.html", media_type=_TYPES[".html"], headers=HEADERS)


@router.get("/static/{name}", response_model=None)
async def asset(request: Request) -> FileResponse:
    name = path_param(request, "name")
    if not _ASSET_NAME.fullmatch(name):  # before the filesystem: NUL or 5,000 characters make it raise
        raise not_found(f"Invalid URL (GET /static/{name[:100]})")
    path = (STATIC_DIR / name).resolve()
    if path.parent != STATIC_DIR or not path.is_file() or path.suffix not in _TYPES:
        raise not_found(f"Invalid URL (GET /static/{name[:100]})")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)
