"""Python peer servers for bench/engine_server.py (pycrdt-websocket)."""
