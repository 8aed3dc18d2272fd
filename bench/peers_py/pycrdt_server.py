"""pycrdt-websocket 0.16 served by uvicorn (its documented ASGI setup), in memory, no store.

``python -m bench.peers_py.pycrdt_server PORT`` prints ``{"event": "listening", "port": N}``
once it accepts connections. The room is the URL path (``/{doc}``); every connection runs
y-protocols sync. uvicorn is configured like ``syncd serve`` (no per-message deflate,
default WebSocket implementation) so both Python servers share the same transport.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer


async def main(port: int) -> None:
    websocket_server = WebsocketServer()
    app = ASGIServer(websocket_server)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_per_message_deflate=False,
                                           ws_max_size=2 * 1024 * 1024))
    async with websocket_server:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.02)
        print(json.dumps({"event": "listening", "port": sock.getsockname()[1]}), flush=True)
        await task


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
