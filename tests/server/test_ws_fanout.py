"""Rooms: broadcast once-encoded, merged per loop turn, never echoed; slow consumers are cut."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from pycrdt import Doc, Map, merge_updates, read_message

from server.fanout import RESYNC_SEQ, Fanout, Room, decode_notice, encode_notice
from server.ws import LiveConnection, WsSettings, origin_allowed
from server.ws_protocol import AwarenessEntry, update_message
from syncd.protocol import Principal, PullResult

P = Principal("u1", "office", "dev1")


@dataclass(eq=False)
class FakeMember:
    principal: Principal = P
    got: list[tuple[bytes, int]] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    closed: tuple[int, str] | None = None

    def deliver(self, message: bytes, seq: int) -> None:
        self.got.append((message, seq))

    def send(self, message: bytes) -> None:
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def updates(n: int, *, one_client: bool = True) -> list[bytes]:
    d = Doc()
    out = []
    for i in range(n):
        if not one_client:
            d = Doc()
        before = d.get_state()
        with d.transaction():
            d.get("fields", type=Map)[f"f{i}/0000000000001.00000/dev"] = {"v": i, "a": "u", "r": "office"}
        out.append(d.get_update(before))
    return out


def keys(*ups: bytes) -> list[str]:
    d = Doc()
    d.apply_update(merge_updates(*ups))
    return sorted(d.get("fields", type=Map).keys())


def content(message: bytes) -> list[str]:
    assert message[:2] == b"\x00\x02"
    return keys(read_message(message[2:]))


async def test_one_commit_is_encoded_once_and_not_echoed():
    room = Room("job:x")
    a, b, c = FakeMember(), FakeMember(), FakeMember()
    for m in (a, b, c):
        room.members[m] = None
    [u] = updates(1)
    room.pushing(u, a)
    room.committed(u, 5, local=True)
    room.push_settled(u, a, committed=True)
    await asyncio.sleep(0)  # the flush runs at the end of this loop turn
    assert a.got == []
    assert b.got == [(update_message(u), 5)] and c.got == b.got
    assert b.got[0][0] is c.got[0][0]  # the very same bytes object: encoded once
    assert room._pushes == {}


async def test_updates_of_one_turn_are_merged_and_senders_get_the_others():
    room = Room("job:x")
    a, b, c = FakeMember(), FakeMember(), FakeMember()
    for m in (a, b, c):
        room.members[m] = None
    u1, u2, u3 = updates(3, one_client=False)  # three devices
    room.pushing(u1, a)
    room.pushing(u2, b)
    room.committed(u1, 1, local=True)
    room.committed(u2, 2, local=True)
    room.committed(u3, 3, local=True)  # e.g. a REST edit: no connection pushed it
    await asyncio.sleep(0)
    assert [(content(m), s) for m, s in c.got] == [(keys(u1, u2, u3), 3)]
    assert [(content(m), s) for m, s in a.got] == [(keys(u2, u3), 3)]
    assert [(content(m), s) for m, s in b.got] == [(keys(u1, u3), 3)]


async def test_a_sender_gets_the_newest_seq_of_what_others_wrote_and_nothing_when_all_is_its_own():
    room = Room("job:x")
    a, b, c = FakeMember(), FakeMember(), FakeMember()
    for m in (a, b, c):
        room.members[m] = None
    u1, u2, u3 = updates(3, one_client=False)
    room.pushing(u1, b)
    room.pushing(u3, a)
    room.committed(u1, 1, local=True)
    room.committed(u2, 2, local=True)
    room.committed(u3, 3, local=True)
    await asyncio.sleep(0)
    assert [(content(m), s) for m, s in a.got] == [(keys(u1, u2), 2)]  # its own u3 is the newest
    assert [(content(m), s) for m, s in b.got] == [(keys(u2, u3), 3)]
    assert [(content(m), s) for m, s in c.got] == [(keys(u1, u2, u3), 3)]
    v1, v2 = updates(2)  # one device, two edits in one turn: nothing for it, both for the others
    room.pushing(v1, a)
    room.pushing(v2, a)
    room.committed(v1, 4, local=True)
    room.committed(v2, 5, local=True)
    await asyncio.sleep(0)
    assert len(a.got) == 1
    assert [(content(m), s) for m, s in b.got[1:]] == [(keys(v1, v2), 5)]


async def test_refused_or_duplicate_push_drops_its_mark():
    room = Room("job:x")
    a, b = FakeMember(), FakeMember()
    room.members[a] = room.members[b] = None
    [u] = updates(1)
    room.pushing(u, a)
    room.push_settled(u, a, committed=False)
    room.committed(u, 1, local=True)  # the same bytes committed later through another path
    await asyncio.sleep(0)
    assert a.got and b.got


async def test_remote_commits_go_to_everyone_and_resync_state():
    room = Room("job:x")
    a = FakeMember()
    room.members[a] = None
    [u] = updates(1)
    room.committed(u, 9, local=False)
    await asyncio.sleep(0)
    room.broadcast_state(b"state")
    assert a.got == [(update_message(u), 9), (update_message(b"state"), RESYNC_SEQ)]


async def test_awareness_relay_and_removal_on_leave():
    fan = Fanout(FakeEngine())
    a, b = FakeMember(), FakeMember()
    room = fan.join("job:x", a)
    fan.join("job:x", b)
    room.relay_awareness(a, [AwarenessEntry(1, 1, "{}")])
    assert a.sent == [] and len(b.sent) == 1
    fan.leave(room, a)
    assert len(b.sent) == 2 and b"null" in b.sent[1]
    fan.leave(room, b)
    assert fan.rooms == {}


def test_notice_codec():
    n = decode_notice(encode_notice("inst1", "job:abc", 42, b"\x00\x00"))
    assert (n.origin, n.doc_id, n.seq, n.update) == ("inst1", "job:abc", 42, b"\x00\x00")
    r = decode_notice(encode_notice("inst1", "job:abc", 0, None))
    assert r.update is None
    for bad in (b"", b"X", b"C\x05ab"):
        with pytest.raises(ValueError):
            decode_notice(bad)


def test_origin_rules():
    allowed = frozenset({"https://app.example.com"})
    assert origin_allowed(None, "h:1", allowed)
    assert origin_allowed("http://h:1", "h:1", allowed)
    assert origin_allowed("https://APP.example.com/", "h:1", allowed)
    assert not origin_allowed("https://evil.example", "h:1", allowed)
    assert not origin_allowed("null", "h:1", allowed)
    assert not origin_allowed("http://h:2", "h:1", allowed)


# --- a connection whose client stopped reading ------------------------------------------------

class FakeEngine:
    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def add_listener(self, fn: Any) -> None:
        self.listeners.append(fn)

    async def refresh(self, doc_id: str) -> bool:
        return False

    async def pull(self, principal: Principal, doc_id: str, sv: bytes | None = None, since: int | None = None):
        return PullResult(doc_id, b"\x00\x00", 0, "0")


class StuckSocket:
    """Accepts nothing: every send blocks, like a client whose TCP window is full."""

    def __init__(self) -> None:
        self.closed_with: tuple[int, str] | None = None
        self.forever = asyncio.Event()

    async def send_bytes(self, data: bytes) -> None:
        await self.forever.wait()

    async def receive(self) -> dict[str, Any]:
        await self.forever.wait()
        return {"type": "websocket.disconnect"}

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


@dataclass
class FakeAuth:
    principal: Principal = P


@dataclass
class FakeServices:
    engine: Any


async def test_slow_consumer_is_closed_instead_of_buffering_forever():
    engine = FakeEngine()
    fan = Fanout(engine)
    settings = WsSettings(send_queue_bytes=10_000, send_queue_messages=50)
    ws = StuckSocket()
    conn = LiveConnection(ws, FakeServices(engine), fan, settings, FakeAuth(), "job:x", False, None)  # type: ignore[arg-type]
    task = asyncio.create_task(conn.run())
    while "job:x" not in fan.rooms:
        await asyncio.sleep(0)
    for _ in range(100):
        conn.send(b"x" * 500)
    await asyncio.wait_for(task, 5)
    assert ws.closed_with is not None and ws.closed_with[0] == 1013
    assert fan.rooms == {}
