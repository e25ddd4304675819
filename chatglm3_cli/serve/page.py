"""The web chat page at ``/``: static files shipped in the package (serve/web/), no CDN.

The page is only a client: it calls the same endpoints with the same key as any other client
(/api/show for the model's card and defaults, /v1/chat/completions to answer). Its files are
public, like any page's; what they call asks for the key. Only the files that ship are served:
the request's name is looked up in the list made at start, never joined onto a path. Every file
goes out with a Content-Security-Policy that allows scripts from this origin only, so Markdown
from the model (sanitized by DOMPurify before it is shown) has a second fence.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import protocol as P

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
         ".json": "application/json", ".md": "text/markdown; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=1)
def web_files() -> dict[str, Any]:
    """Every file of the page by its name under web/ ("index.html", "vendor/marked.min.js")."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif any(child.name.endswith(ext) for ext in TYPES):
                out[prefix + child.name] = child

    walk(resources.files(__package__).joinpath("web"), "")
    return out


def _file(name: str) -> Response:
    node = web_files().get(name)
    if node is None:
        raise P.APIError(404, f"Invalid URL (GET /web/{name})", code="not_found")
    ext = name[name.rfind("."):]
    return Response(node.read_bytes(), media_type=TYPES[ext], headers=HEADERS)


async def index(request: Request) -> Response:
    return _file("index.html")


async def asset(request: Request) -> Response:
    return _file(request.path_params["name"])


def web_routes() -> list[Route]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/web/{name:path}", asset, methods=["GET"]),
    ]
