"""Serve the built PWA (``pwa/dist``) at ``/``: static files plus the single-page-app fallback.

Installed as the router's *default* (what runs when no route matched), so it can never shadow
an API, WebSocket or health route, whatever order routes are registered in:

* ``/api/...``, ``/ws/...``, non-GET/HEAD requests and WebSocket scopes get the normal 404;
* an existing file of ``pwa/dist`` is served; hashed ``/assets/*`` are cached for a year,
  everything else (``index.html``, ``sw.js``, the manifest) is ``no-cache`` so a new build is
  picked up; ``sw.js`` carries ``Service-Worker-Allowed: /`` (scope = the whole app);
* any other path that looks like a page (no file extension) gets ``index.html`` (client routes
  like ``/jobs/<id>``).

Text files (scripts, styles, HTML, manifest, SVG, JSON) above 1 KB go out gzip-compressed to
clients that accept it: compressed once per file version (path, size, mtime) and kept in memory
(a build is a few hundred KB), with ``Vary: Accept-Encoding``. On a slow link that is most of
the first load (the app script is 355 KB, 110 KB compressed).

The directory is ``$SYNCD_PWA_DIST`` or ``<repo>/pwa/dist`` (build it with
``cd pwa && npm ci && npm run build``). Without a build, pages answer 503 with that hint.
"""

from __future__ import annotations

import gzip
import mimetypes
import os
from pathlib import Path, PurePosixPath

from starlette.applications import Starlette
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["install", "dist_dir"]

_RESERVED = ("/api/", "/ws/", "/api", "/ws")
_NO_CACHE = {"Cache-Control": "no-cache"}
_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
_TYPES = {".webmanifest": "application/manifest+json", ".js": "text/javascript", ".mjs": "text/javascript",
          ".svg": "image/svg+xml"}


def dist_dir() -> Path:
    env = os.environ.get("SYNCD_PWA_DIST")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "pwa" / "dist"


def _file(root: Path, url_path: str) -> Path | None:
    rel = PurePosixPath(url_path.lstrip("/"))
    if any(p in ("..", "") or p.startswith(".") for p in rel.parts):
        return None
    candidate = root.joinpath(*rel.parts)
    try:
        candidate.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return candidate if candidate.is_file() else None


_COMPRESSIBLE = frozenset({".js", ".mjs", ".css", ".html", ".webmanifest", ".json", ".svg", ".txt", ".map"})
_MIN_GZIP_BYTES = 1024
#: path -> ((size, mtime_ns), gzip bytes); bounded by the build's text files
_gzipped: dict[Path, tuple[tuple[int, int], bytes]] = {}


def _accepts_gzip(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"accept-encoding":
            return any(part.split(b";")[0].strip() == b"gzip" for part in value.lower().split(b","))
    return False


def _gzip_of(path: Path) -> bytes | None:
    st = path.stat()
    if path.suffix not in _COMPRESSIBLE or st.st_size < _MIN_GZIP_BYTES:
        return None
    version = (st.st_size, st.st_mtime_ns)
    cached = _gzipped.get(path)
    if cached is None or cached[0] != version:
        cached = (version, gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
        _gzipped[path] = cached
    return cached[1]


def _serve(path: Path, url_path: str, scope: Scope | None = None) -> Response:
    headers = dict(_IMMUTABLE if url_path.startswith("/assets/") else _NO_CACHE)
    if path.name == "sw.js":
        headers["Service-Worker-Allowed"] = "/"
    media_type = _TYPES.get(path.suffix)
    if scope is not None and path.suffix in _COMPRESSIBLE:
        headers["Vary"] = "Accept-Encoding"
        body = _gzip_of(path) if _accepts_gzip(scope) else None
        if body is not None:
            headers["Content-Encoding"] = "gzip"
            return Response(body, headers=headers,
                            media_type=media_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream")
    return FileResponse(path, headers=headers, media_type=media_type)


def install(app: Starlette) -> Starlette:
    """Make ``app`` serve the PWA for requests no route matched; returns ``app``."""
    not_found: ASGIApp = app.router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD")
                or path.startswith(_RESERVED[:2]) or path in _RESERVED[2:]):
            await not_found(scope, receive, send)
            return
        root = dist_dir()
        index = root / "index.html"
        found = _file(root, path) if path != "/" else None
        if found is not None:
            response = _serve(found, path, scope)
        elif PurePosixPath(path).suffix and path != "/":
            await not_found(scope, receive, send)  # a missing asset is a 404, not the app shell
            return
        elif index.is_file():
            response = _serve(index, "/index.html", scope)
        else:
            response = PlainTextResponse("The PWA is not built: run `cd pwa && npm ci && npm run build`.\n",
                                         status_code=503, headers=_NO_CACHE)
        await response(scope, receive, send)

    app.router.default = default
    return app
