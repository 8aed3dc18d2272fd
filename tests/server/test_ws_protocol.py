"""The pure y-protocols codec and session state machine (no sockets)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st
from pycrdt import Doc, Map, create_awareness_message, create_sync_message, create_update_message, handle_sync_message

from syncd.errors import Forbidden, MalformedUpdate, MissingDependencies, SchemaViolation, Unavailable, UpdateTooLarge
from server.ws_protocol import (
    AnswerAwarenessQuery, AnswerStep1, Awareness, AwarenessEntry, AwarenessTable, Close, Limits, ProtocolError, Push,
    QueryAwareness, RelayAwareness, Send, SyncSession, SyncStep1, SyncStep2, SyncUpdate, TokenBucket, close_code_for,
    close_reason, decode_awareness, decode_message, encode_awareness, sync_step1, sync_step2, update_message,
)


def an_update() -> tuple[Doc, bytes]:
    d = Doc()
    with d.transaction():
        d.get("fields", type=Map)["title/0000000000001.00000/dev"] = {"v": "x", "a": "u", "r": "office"}
    return d, d.get_update()


def test_decodes_what_pycrdt_encodes():
    d, update = an_update()
    assert decode_message(create_sync_message(d)) == SyncStep1(d.get_state())
    assert decode_message(create_update_message(update)) == SyncUpdate(update)
    assert decode_message(sync_step2(update)) == SyncStep2(update)
    assert decode_message(b"\x03") == QueryAwareness()
    payload = encode_awareness([AwarenessEntry(7, 1, '{"a":1}')])
    assert decode_message(create_awareness_message(payload)) == Awareness((AwarenessEntry(7, 1, '{"a":1}'),))


def test_pycrdt_reads_what_we_encode():
    d, update = an_update()
    other = Doc()
    assert handle_sync_message(update_message(update)[1:], other) is None
    assert other.get("fields", type=Map).to_py() == d.get("fields", type=Map).to_py()
    reply = handle_sync_message(sync_step1(other.get_state())[1:], d)
    assert reply is not None and reply[:2] == b"\x00\x01"


@pytest.mark.parametrize("frame", [
    b"", b"\x80", b"\x04", b"\x02\x00", b"\x00", b"\x00\x03\x00", b"\x00\x00\x05\x01", b"\x00\x02\x05\x01\x02",
    b"\x00\x02\x00\x00", b"\x03\x00", b"\x01\x01", b"\x01\x02\x01\x00", b"\x00\x00\x02\x01\x01",
    b"\x00\x02" + b"\xff" * 12,
])
def test_malformed_frames_are_protocol_errors(frame):
    with pytest.raises(ProtocolError):
        decode_message(frame)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_decode_or_raise_protocol_error(data):
    try:
        decode_message(data)
    except ProtocolError:
        pass


def test_awareness_states_must_be_json():
    with pytest.raises(ProtocolError):
        decode_awareness(encode_awareness([AwarenessEntry(1, 1, "{oops")]))
    with pytest.raises(ProtocolError):
        decode_awareness(b"\x05\x01")  # claims 5 entries in 1 byte


def test_session_handshake_and_updates():
    s = SyncSession(writable=True)
    assert s.open(b"\x00") == [Send(sync_step1(b"\x00"))]
    d, update = an_update()
    assert s.receive(create_sync_message(Doc()), 0.0) == [AnswerStep1(b"\x00")]
    assert s.receive(create_update_message(update), 0.0) == [Push(update)]
    assert s.receive(sync_step2(update), 0.0) == [Push(update)]
    assert s.receive(sync_step2(b"\x00\x00"), 0.0) == []  # nothing to store
    assert s.receive(b"\x03", 0.0) == [AnswerAwarenessQuery()]
    entries = (AwarenessEntry(1, 1, "{}"),)
    assert s.receive(create_awareness_message(encode_awareness(entries)), 0.0) == [RelayAwareness(entries)]


def test_read_only_session_is_not_asked_and_refuses_writes():
    s = SyncSession(writable=False)
    assert s.open(b"\x00") == []
    assert s.receive(sync_step2(b"\x00\x00"), 0.0) == []
    _, update = an_update()
    assert s.receive(create_update_message(update), 0.0) == [Close(4403, "read-only: you may not write this document")]
    assert s.closed and s.receive(create_update_message(update), 0.0) == []


def test_frame_limits_and_text():
    s = SyncSession(writable=True, limits=Limits(max_frame_bytes=100))
    assert s.receive(b"\x00\x02" + b"\x00" * 200, 0.0)[0].code == 1009
    assert SyncSession(writable=True).receive_text()[0].code == 1003
    big = create_awareness_message(encode_awareness([AwarenessEntry(1, 1, '"' + "x" * 40_000 + '"')]))
    assert SyncSession(writable=True).receive(big, 0.0)[0].code == 4413
    assert SyncSession(writable=True).receive(b"\x09", 0.0)[0].code == 4400


def test_missing_dependencies_ask_for_a_resend_once_until_answered():
    s = SyncSession(writable=True)
    err = MissingDependencies("x", {"state_vector": "0101"})
    assert s.push_refused(err) == [Send(sync_step1(bytes.fromhex("0101")))]
    assert s.push_refused(err) == []  # one request in flight is enough
    s.receive(sync_step2(b"\x00\x00"), 0.0)  # the client answered
    assert s.push_refused(err) == [Send(sync_step1(bytes.fromhex("0101")))]
    assert SyncSession(writable=True).push_refused(MissingDependencies("x"))[0].code == 1013


@pytest.mark.parametrize("error, code", [
    (Forbidden("no"), 4403), (SchemaViolation("bad"), 4422), (MalformedUpdate("bad"), 4400),
    (UpdateTooLarge("big"), 4413), (Unavailable("later"), 1013),
])
def test_refusals_close_with_the_errors_code(error, code):
    s = SyncSession(writable=True)
    [close] = s.push_refused(error)
    assert close.code == code == close_code_for(error)
    assert close.reason.startswith(error.code)


def test_close_reason_fits_a_close_frame():
    text = "é" * 200
    r = close_reason(text)
    assert len(r.encode()) <= 123 and r.endswith("...")
    assert close_reason("short") == "short"


def test_step1_and_awareness_floods():
    s = SyncSession(writable=True, limits=Limits(step1_rate=1, step1_burst=3))
    step1 = create_sync_message(Doc())
    assert [type(s.receive(step1, 0.0)[0]) for _ in range(3)] == [AnswerStep1] * 3
    assert s.receive(step1, 0.0)[0].code == 4429
    s = SyncSession(writable=True, limits=Limits(awareness_rate=1, awareness_burst=2, awareness_flood=5))
    msg = create_awareness_message(encode_awareness([AwarenessEntry(1, 1, "{}")]))
    out = [s.receive(msg, 0.0) for _ in range(7)]
    assert [len(o) for o in out[:2]] == [1, 1] and out[2:7] == [[]] * 5
    assert s.receive(msg, 0.0)[0].code == 4429
    s = SyncSession(writable=True, limits=Limits(awareness_rate=1, awareness_burst=1, awareness_flood=5))
    assert s.receive(msg, 0.0) and not s.receive(msg, 0.1) and s.receive(msg, 1.2)  # refills with time


def test_token_bucket():
    b = TokenBucket(rate=2, burst=2)
    assert b.take(0) and b.take(0) and not b.take(0) and b.take(0.5) and not b.take(0.5)


def test_awareness_table_ownership_clocks_and_removal():
    t = AwarenessTable(max_clients=2, max_states=3)
    a, b = object(), object()
    assert decode_awareness(t.apply(a, [AwarenessEntry(1, 1, '{"n":1}')])) == (AwarenessEntry(1, 1, '{"n":1}'),)
    assert t.apply(b, [AwarenessEntry(1, 2, '"spoof"')]) is None  # owned by a
    assert t.apply(a, [AwarenessEntry(1, 1, '{"n":0}')]) is None  # stale clock
    assert t.apply(a, [AwarenessEntry(2, 1, "{}"), AwarenessEntry(3, 1, "{}")]) is not None
    assert len(t) == 2  # a may hold 2 client ids
    assert t.apply(b, [AwarenessEntry(4, 1, "{}")]) is not None
    assert t.apply(b, [AwarenessEntry(5, 1, "{}")]) is None  # room full (3)
    snap = decode_awareness(t.snapshot())
    assert [e.client for e in snap] == [1, 2, 4]
    gone = decode_awareness(t.drop(a))
    assert gone == (AwarenessEntry(1, 2, "null"), AwarenessEntry(2, 2, "null"))
    assert [e.client for e in decode_awareness(t.snapshot())] == [4]
    assert t.drop(a) is None


def test_random_session_inputs_never_raise():
    rng = random.Random(7)
    s = SyncSession(writable=True)
    for i in range(2000):
        frame = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        for a in s.receive(frame, i * 0.01):
            assert isinstance(a, (Send, AnswerStep1, Push, RelayAwareness, AnswerAwarenessQuery, Close))
        s.closed = False
