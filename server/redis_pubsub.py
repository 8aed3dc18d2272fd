"""One resilient Redis subscription loop, shared by live fan-out (``server.fanout``) and the
session notices (``server.auth.notices``).

Subscribe, wait for Redis to confirm, run ``on_subscribed`` (the caller resyncs whatever it
may have missed while not subscribed), then hand messages to ``on_messages`` in drained
batches. Any failure closes the connection, clears ``subscribed``, waits with exponential
backoff and starts over, so a caller only ever deals with "subscribed again: resync".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

__all__ = ["subscribe_forever"]


async def subscribe_forever(make_client: Callable[[], Any], subscribe: Callable[[Any], Awaitable[Any]],
                            confirm_type: str, *, on_subscribed: Callable[[], Awaitable[None]],
                            on_messages: Callable[[list[dict[str, Any]]], Awaitable[None]],
                            subscribed: asyncio.Event, log: logging.Logger, lost: str,
                            confirm_timeout_s: float, read_timeout_s: float, max_backoff_s: float,
                            max_batch: int = 256) -> None:
    """Run until cancelled. ``subscribe(pubsub)`` issues the (p)subscribe whose confirmation
    message type is ``confirm_type``; ``lost`` is logged (with the error) when an established
    subscription breaks."""
    backoff = 0.05
    while True:
        client = make_client()
        pubsub = client.pubsub()
        try:
            await subscribe(pubsub)
            await _confirmed(pubsub, confirm_type, confirm_timeout_s)
            backoff = 0.05
            await on_subscribed()
            subscribed.set()
            while True:
                msg = await pubsub.get_message(timeout=read_timeout_s)
                if msg is None:
                    continue
                batch = [msg]
                while len(batch) < max_batch:
                    more = await pubsub.get_message(timeout=0)
                    if more is None:
                        break
                    batch.append(more)
                await on_messages(batch)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if subscribed.is_set():
                log.warning("%s (%s: %s)", lost, type(e).__name__, e)
            subscribed.clear()
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except Exception:  # the connection is already broken; nothing to release
                pass
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff_s)


async def _confirmed(pubsub: Any, confirm_type: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        msg = await pubsub.get_message(timeout=max(0.0, deadline - loop.time()))
        if msg is not None and msg.get("type") == confirm_type:
            return
    raise TimeoutError(f"no {confirm_type} confirmation from Redis")
