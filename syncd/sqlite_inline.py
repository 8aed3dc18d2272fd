"""SQLite statements of the batch transaction run on the event loop's thread.

aiosqlite runs every call of a connection on that connection's own thread and hands the
result back through the event loop: a queue put, a thread wake-up, a ``call_soon_threadsafe``
and a loop turn per statement. A batch commit runs about eight statements, so on a busy
server each batch waited eight times for the loop to come back to it, and the loop sat idle
while the thread worked (about a third of the loop thread's time in
``engine.accept_sqlite``, py-spy).

Inside the batcher's write transaction nothing can wait on a lock: ``BEGIN IMMEDIATE``
already holds SQLite's write lock, and in WAL mode readers never block the writer. So
between ``BEGIN`` and ``COMMIT`` the statements (reads of the heads and of the log, the op
log, projection, event and watermark writes) are plain in-memory page work and run inline,
on the loop's thread, through the same SQLAlchemy connection. What can wait stays on
aiosqlite's thread: ``BEGIN IMMEDIATE`` (it waits up to ``busy_timeout`` for another
connection's transaction, which needs the loop to finish) and ``COMMIT`` (the fsync of
``synchronous=FULL``), as do connecting and closing.

This relies on aiosqlite's ``Connection._execute`` (the one door every call goes through,
pinned at aiosqlite 0.22.1). If a future aiosqlite has no such door, :func:`inline_calls`
does nothing and the connection keeps its thread: slower, never wrong.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

__all__ = ["inline_calls"]


@contextlib.contextmanager
def inline_calls(raw: Any) -> Iterator[None]:
    """While active, the calls of this connection run on the calling (loop) thread.

    ``raw``: the pooled DBAPI connection (``await conn.get_raw_connection()``), or None (then
    nothing changes). The caller must own the connection and hold the write lock (inside a
    ``BEGIN IMMEDIATE`` transaction), and leave before ``COMMIT``/``ROLLBACK``.
    """
    driver = getattr(raw, "driver_connection", None)
    if not (callable(getattr(type(driver), "_execute", None))
            and hasattr(driver, "_connection") and hasattr(driver, "_running")):
        yield
        return

    async def _execute(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not driver._running or not driver._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    driver._execute = _execute  # an instance attribute shadows the threaded method
    try:
        yield
    finally:
        del driver._execute
