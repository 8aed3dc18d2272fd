"""server/pwa_static.py: the built PWA served at / without shadowing any route."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
import httpx
from starlette.websockets import WebSocket

from server import pwa_static


async def api_ok(request):  # noqa: ANN001
    return JSONResponse({"data": "api"})


async def ws_echo(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text("hello")
    await ws.close()


class Client:
    """Synchronous-looking calls through httpx's ASGI transport (no server, no network)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t") as c:
            return await c.get(path, headers=headers)

    async def post(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t") as c:
            return await c.post(path)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Client:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>app</title>")
    (tmp_path / "sw.js").write_text("self.addEventListener('fetch', () => {})")
    (tmp_path / "manifest.webmanifest").write_text("{}")
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    (tmp_path / "assets" / "app-def456.js").write_text("export const words = '" + "crew " * 2000 + "';\n")
    (tmp_path.parent / "secret.txt").write_text("nope")
    monkeypatch.setenv("SYNCD_PWA_DIST", str(tmp_path))
    app = pwa_static.install(Starlette(routes=[Route("/api/thing", api_ok), Route("/healthz", api_ok),
                                               WebSocketRoute("/ws/{doc_id}", ws_echo)]))
    return Client(app)


async def test_index_and_spa_fallback(client: Client) -> None:
    for path in ("/", "/jobs/1b7c0c7e-5f0b-4c55-9d7e-7a3f1f3b2a10", "/customers"):
        r = await client.get(path)
        assert r.status_code == 200 and "<title>app</title>" in r.text
        assert r.headers["cache-control"] == "no-cache"


async def test_service_worker_scope_and_no_cache(client: Client) -> None:
    r = await client.get("/sw.js")
    assert r.status_code == 200
    assert r.headers["service-worker-allowed"] == "/"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["content-type"].startswith("text/javascript")
    assert (await client.get("/manifest.webmanifest")).headers["content-type"].startswith("application/manifest+json")


async def test_hashed_assets_are_immutable(client: Client) -> None:
    r = await client.get("/assets/index-abc123.js")
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert (await client.get("/assets/missing-123.js")).status_code == 404


async def test_text_assets_are_gzipped_for_clients_that_accept_it(client: Client) -> None:
    raw = await client.get("/assets/app-def456.js", headers={"Accept-Encoding": "identity"})
    assert raw.status_code == 200 and "content-encoding" not in raw.headers
    assert raw.headers["vary"] == "Accept-Encoding"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://t") as c:
        r = await c.get("/assets/app-def456.js", headers={"Accept-Encoding": "gzip, br"})
        body = await r.aread()  # httpx decodes it; content-length is what went over the wire
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["content-type"].startswith("text/javascript")
    assert "immutable" in r.headers["cache-control"]
    assert body == raw.content  # decoded by the client: the very same file
    assert int(r.headers["content-length"]) < len(raw.content) // 10  # 10 KB of words compress well
    # small files are not worth it
    small = await client.get("/assets/index-abc123.js", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers and small.text == "console.log(1)"


async def test_routes_are_never_shadowed(client: Client) -> None:
    assert (await client.get("/api/thing")).json() == {"data": "api"}
    assert (await client.get("/healthz")).json() == {"data": "api"}
    assert (await client.get("/api/unknown")).status_code == 404
    assert (await client.get("/ws")).status_code == 404
    assert (await client.post("/jobs/x")).status_code == 404
    # a WebSocket scope nothing matched gets the router's normal refusal (closed), not a file
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(msg: dict) -> None:
        sent.append(msg)

    await client.app.router.default({"type": "websocket", "path": "/nowhere", "headers": []}, receive, send)
    assert sent and sent[0]["type"] == "websocket.close"


async def test_no_path_traversal(client: Client) -> None:
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt", "/.hidden"):
        r = await client.get(path)
        assert "nope" not in r.text


async def test_without_a_build_pages_say_how_to_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_PWA_DIST", str(tmp_path / "absent"))
    c = Client(pwa_static.install(Starlette()))
    r = await c.get("/")
    assert r.status_code == 503 and "npm run build" in r.text
