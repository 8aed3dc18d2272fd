"""The Yjs sync protocol (y-protocols) as a pure state machine: bytes in, actions out.

No sockets, no engine, no clock of its own: :mod:`server.ws` feeds frames and push outcomes
in and carries the actions out, so everything here is testable with plain bytes.

Wire format (lib0 encoding; one message per WebSocket binary frame)::

    sync        varuint 0, varuint step, varUint8Array payload
                    step 0  SyncStep1   payload = state vector ("what I have")
                    step 1  SyncStep2   payload = update ("what you lacked")
                    step 2  Update      payload = update
    awareness   varuint 1, varUint8Array (varuint n, (varuint client, varuint clock,
                                                     varString state JSON)*n)
    auth        varuint 2, ...             server -> client only: refused here
    query aw.   varuint 3                  "send me every awareness state"

Decoding is bounds-checked (every length against the bytes that remain, no trailing bytes):
a hostile frame is a :class:`ProtocolError` (close 4400), never an exception elsewhere.

Close codes the server uses (y-websocket 3 does not reconnect after 4400-4499)::

    1003  a text frame (the protocol is binary)
    1009  a frame over the size limit
    1011  internal error                      1013  try again later (engine unavailable,
    4400  malformed frame or update                 send queue overflow): reconnect + resync
    4401  not authenticated / token expired   4403  forbidden (read, write, origin, revoked)
    4409  client id bound to another device   4413  update or awareness state too large
    4422  schema violation / clock skew       4429  flood (awareness, sync step 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable, Union

import orjson
from pycrdt import YMessageType, YSyncMessageType, create_awareness_message, create_update_message, write_message

from syncd.errors import MissingDependencies, SyncError
from syncd.update_scan import ScanError, decode_state_vector

__all__ = [
    "CLOSE_UNSUPPORTED_DATA", "CLOSE_TOO_BIG", "CLOSE_INTERNAL", "CLOSE_TRY_AGAIN_LATER", "CLOSE_BAD_REQUEST",
    "CLOSE_UNAUTHORIZED", "CLOSE_FORBIDDEN", "CLOSE_CONFLICT", "CLOSE_PAYLOAD_TOO_LARGE", "CLOSE_UNPROCESSABLE",
    "CLOSE_RATE_LIMITED", "MSG_QUERY_AWARENESS", "EMPTY_UPDATE",
    "ProtocolError", "Limits", "SyncStep1", "SyncStep2", "SyncUpdate", "Awareness", "QueryAwareness",
    "Message", "AwarenessEntry", "decode_message", "decode_awareness", "encode_awareness",
    "sync_step1", "sync_step2", "update_message", "awareness_message", "close_reason", "close_code_for",
    "Send", "AnswerStep1", "Push", "RelayAwareness", "AnswerAwarenessQuery", "Close", "Action",
    "TokenBucket", "AwarenessTable", "SyncSession",
]

CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_CONFLICT = 4409
CLOSE_PAYLOAD_TOO_LARGE = 4413
CLOSE_UNPROCESSABLE = 4422
CLOSE_RATE_LIMITED = 4429

MSG_SYNC = int(YMessageType.SYNC)
MSG_AWARENESS = int(YMessageType.AWARENESS)
MSG_QUERY_AWARENESS = 3
STEP1, STEP2, UPDATE = (int(YSyncMessageType.SYNC_STEP1), int(YSyncMessageType.SYNC_STEP2),
                        int(YSyncMessageType.SYNC_UPDATE))
#: an update that changes nothing (no structs, empty delete set)
EMPTY_UPDATE = b"\x00\x00"
_MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes


class ProtocolError(ValueError):
    """A frame that is not a well-formed y-protocols message."""


@dataclass(frozen=True)
class Limits:
    """Per-connection bounds. Defaults suit a stock Yjs client."""

    #: largest frame accepted: the engine's update limit plus the message header
    max_frame_bytes: int = (1 << 20) + 16
    max_awareness_bytes: int = 32 * 1024
    #: awareness client ids one connection may speak for (a tab has one; a few for reloads)
    max_awareness_clients: int = 8
    #: awareness states one room keeps (new client ids beyond this are ignored)
    max_room_awareness: int = 1000
    #: awareness messages relayed per second, sustained, and the burst allowed
    awareness_rate: float = 30.0
    awareness_burst: int = 60
    #: over-rate awareness messages dropped in a row before the connection is closed (4429)
    awareness_flood: int = 300
    #: sync step 1 requests answered per second, and burst (each costs a document diff)
    step1_rate: float = 2.0
    step1_burst: int = 20


# --- messages ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class Awareness:
    entries: tuple["AwarenessEntry", ...]


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


Message = Union[SyncStep1, SyncStep2, SyncUpdate, Awareness, QueryAwareness]


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client: int
    clock: int
    state: str  # JSON text; "null" removes the client's state


def _varuint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise ProtocolError("truncated number")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 49:  # lib0 numbers are JS safe integers: at most 8 bytes
            raise ProtocolError("number too long")


def _var_bytes(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _varuint(data, pos)
    if n > len(data) - pos:
        raise ProtocolError(f"length {n} exceeds the {len(data) - pos} bytes that remain")
    return data[pos:pos + n], pos + n


def decode_message(frame: bytes, limits: Limits = Limits()) -> Message:
    """Decode one frame; raise ProtocolError if it is not exactly one well-formed message."""
    kind, pos = _varuint(frame, 0)
    if kind == MSG_SYNC:
        step, pos = _varuint(frame, pos)
        payload, pos = _var_bytes(frame, pos)
        msg: Message
        if step == STEP1:
            try:
                decode_state_vector(payload)
            except ScanError as e:
                raise ProtocolError(f"invalid state vector: {e}") from None
            msg = SyncStep1(payload)
        elif step == STEP2:
            msg = SyncStep2(payload)
        elif step == UPDATE:
            msg = SyncUpdate(payload)
        else:
            raise ProtocolError(f"unknown sync message type {step}")
    elif kind == MSG_AWARENESS:
        payload, pos = _var_bytes(frame, pos)
        if len(payload) > limits.max_awareness_bytes:
            raise _TooLarge(f"awareness update of {len(payload)} bytes exceeds {limits.max_awareness_bytes}")
        msg = Awareness(decode_awareness(payload))
    elif kind == MSG_QUERY_AWARENESS:
        msg = QueryAwareness()
    else:
        raise ProtocolError(f"unknown message type {kind}")
    if pos != len(frame):
        raise ProtocolError(f"{len(frame) - pos} trailing bytes after the message")
    return msg


class _TooLarge(ProtocolError):
    pass


def decode_awareness(payload: bytes) -> tuple[AwarenessEntry, ...]:
    """Decode an awareness update; every state must be JSON (other clients parse it)."""
    n, pos = _varuint(payload, 0)
    if n * 3 > len(payload) - pos:
        raise ProtocolError(f"awareness update claims {n} entries in {len(payload) - pos} bytes")
    out = []
    for _ in range(n):
        client, pos = _varuint(payload, pos)
        clock, pos = _varuint(payload, pos)
        raw, pos = _var_bytes(payload, pos)
        try:
            state = raw.decode("utf-8")
            orjson.loads(raw)
        except (UnicodeDecodeError, orjson.JSONDecodeError):
            raise ProtocolError(f"awareness state of client {client} is not JSON") from None
        out.append(AwarenessEntry(client, clock, state))
    if pos != len(payload):
        raise ProtocolError("trailing bytes after the awareness entries")
    return tuple(out)


def encode_awareness(entries: Iterable[AwarenessEntry]) -> bytes:
    """The awareness update payload of ``entries`` (as y-protocols encodes it)."""
    entries = list(entries)
    parts = [_uint(len(entries))]
    for e in entries:
        state = e.state.encode("utf-8")
        parts += [_uint(e.client), _uint(e.clock), _uint(len(state)), state]
    return b"".join(parts)


def _uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def sync_step1(state_vector: bytes) -> bytes:
    return bytes((MSG_SYNC, STEP1)) + write_message(state_vector)


def sync_step2(update: bytes) -> bytes:
    return bytes((MSG_SYNC, STEP2)) + write_message(update)


def update_message(update: bytes) -> bytes:
    return create_update_message(update)


def awareness_message(payload: bytes) -> bytes:
    return create_awareness_message(payload)


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame (123 UTF-8 bytes), never inside a character."""
    raw = text.encode("utf-8")
    if len(raw) <= _MAX_REASON_BYTES:
        return text
    return raw[:_MAX_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


def close_code_for(error: SyncError) -> int:
    """The close code telling a client why the engine refused its update."""
    if error.status == 503:
        return CLOSE_TRY_AGAIN_LATER
    if 400 <= error.status < 500:
        return 4000 + error.status
    return CLOSE_INTERNAL


# --- actions -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    """Send these bytes to the client."""
    data: bytes


@dataclass(frozen=True, slots=True)
class AnswerStep1:
    """Reply with sync step 2: what the client lacks relative to ``state_vector``."""
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class Push:
    """Hand the update to the engine; report the outcome with ``SyncSession.push_refused``."""
    update: bytes


@dataclass(frozen=True, slots=True)
class RelayAwareness:
    """Apply to the room's awareness table and relay what it accepts to the others."""
    entries: tuple[AwarenessEntry, ...]


@dataclass(frozen=True, slots=True)
class AnswerAwarenessQuery:
    """Send the room's current awareness states to this client."""


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Action = Union[Send, AnswerStep1, Push, RelayAwareness, AnswerAwarenessQuery, Close]


# --- state ---------------------------------------------------------------------------------

@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; time is passed in (seconds, monotonic)."""

    rate: float
    burst: int
    tokens: float = -1.0
    at: float | None = None

    def take(self, now: float) -> bool:
        if self.at is None:
            self.tokens, self.at = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class _State:
    clock: int
    state: str
    owner: Hashable


class AwarenessTable:
    """One room's awareness states, each client id owned by the connection that first set it.

    Awareness is never trusted and never persisted: a connection cannot change or remove
    another connection's client ids, holds at most ``max_clients`` of them, and its states
    are removed (and the removal relayed) when it leaves. Stale clocks are ignored, as
    y-protocols' ``applyAwarenessUpdate`` does.
    """

    def __init__(self, max_clients: int = 8, max_states: int = 1000) -> None:
        self.max_clients = max_clients
        self.max_states = max_states
        self._states: dict[int, _State] = {}
        self._owned: dict[Hashable, set[int]] = {}

    def __len__(self) -> int:
        return sum(1 for s in self._states.values() if s.state != "null")

    def apply(self, owner: Hashable, entries: Iterable[AwarenessEntry]) -> bytes | None:
        """Record what ``owner`` may set; the payload to relay (None if nothing changed)."""
        accepted = []
        owned = self._owned.setdefault(owner, set())
        for e in entries:
            cur = self._states.get(e.client)
            if cur is None:
                if len(owned) >= self.max_clients or len(self._states) >= self.max_states:
                    continue
            elif cur.owner != owner:
                continue
            elif not (cur.clock < e.clock or (cur.clock == e.clock and e.state == "null" and cur.state != "null")):
                continue
            self._states[e.client] = _State(e.clock, e.state, owner)
            owned.add(e.client)
            accepted.append(e)
        if not owned:
            self._owned.pop(owner, None)
        return encode_awareness(accepted) if accepted else None

    def drop(self, owner: Hashable) -> bytes | None:
        """Forget ``owner``'s clients; the payload announcing their removal (None if none)."""
        gone = []
        for client in sorted(self._owned.pop(owner, ())):
            s = self._states.pop(client)
            if s.state != "null":
                gone.append(AwarenessEntry(client, s.clock + 1, "null"))
        return encode_awareness(gone) if gone else None

    def snapshot(self) -> bytes | None:
        """Every live state, for a client that just joined or asked (None if empty)."""
        live = [AwarenessEntry(c, s.clock, s.state) for c, s in sorted(self._states.items()) if s.state != "null"]
        return encode_awareness(live) if live else None


@dataclass
class SyncSession:
    """One connection's side of the protocol.

    ``writable`` is decided at connect (``policy.can_push``). A read-only session never asks
    the client for its changes (no sync step 1 from the server) and closes 4403 when the
    client sends any. After a :class:`Close` the session ignores everything.
    """

    writable: bool
    limits: Limits = field(default_factory=Limits)
    closed: bool = False
    #: the server asked for a resend (sync step 1) and no step 2 has answered it yet
    resend_requested: bool = False

    def __post_init__(self) -> None:
        self._step1 = TokenBucket(self.limits.step1_rate, self.limits.step1_burst)
        self._awareness = TokenBucket(self.limits.awareness_rate, self.limits.awareness_burst)
        self._awareness_dropped = 0

    def open(self, server_state_vector: bytes) -> list[Action]:
        """Actions once authorized: ask the client for what the server lacks (sync step 1)."""
        return [Send(sync_step1(server_state_vector))] if self.writable else []

    def receive_text(self) -> list[Action]:
        return self._close(CLOSE_UNSUPPORTED_DATA, "text frames are not supported: send binary y-protocols messages")

    def receive(self, frame: bytes, now: float) -> list[Action]:
        """Actions for one binary frame (``now``: monotonic seconds, for rate limits)."""
        if self.closed:
            return []
        if len(frame) > self.limits.max_frame_bytes:
            return self._close(CLOSE_TOO_BIG, f"frame of {len(frame)} bytes exceeds {self.limits.max_frame_bytes}")
        try:
            msg = decode_message(frame, self.limits)
        except _TooLarge as e:
            return self._close(CLOSE_PAYLOAD_TOO_LARGE, str(e))
        except ProtocolError as e:
            return self._close(CLOSE_BAD_REQUEST, f"malformed message: {e}")
        if isinstance(msg, (SyncStep2, SyncUpdate)):
            if isinstance(msg, SyncStep2):
                self.resend_requested = False
            if msg.update == EMPTY_UPDATE:
                return []
            if not self.writable:
                return self._close(CLOSE_FORBIDDEN, "read-only: you may not write this document")
            return [Push(msg.update)]
        if isinstance(msg, SyncStep1):
            if not self._step1.take(now):
                return self._close(CLOSE_RATE_LIMITED, "too many sync step 1 messages")
            return [AnswerStep1(msg.state_vector)]
        if isinstance(msg, Awareness):
            if not self._awareness.take(now):
                self._awareness_dropped += 1
                if self._awareness_dropped > self.limits.awareness_flood:
                    return self._close(CLOSE_RATE_LIMITED, "awareness flood")
                return []
            self._awareness_dropped = 0
            return [RelayAwareness(msg.entries)] if msg.entries else []
        return [AnswerAwarenessQuery()]

    def push_refused(self, error: SyncError) -> list[Action]:
        """Actions after the engine refused an update this session pushed."""
        if self.closed:
            return []
        if isinstance(error, MissingDependencies):
            # The standard y-protocols answer: tell the client what the server has, and it
            # replies with sync step 2 holding everything the server lacks, in order.
            if self.resend_requested:
                return []
            sv = error.details.get("state_vector") if isinstance(error.details, dict) else None
            try:
                state_vector = bytes.fromhex(sv) if isinstance(sv, str) else None
            except ValueError:
                state_vector = None
            if state_vector is None:
                return self._close(CLOSE_TRY_AGAIN_LATER, "resync needed: reconnect")
            self.resend_requested = True
            return [Send(sync_step1(state_vector))]
        return self._close(close_code_for(error), f"{error.code}: {error.message}")

    def _close(self, code: int, reason: str) -> list[Action]:
        self.closed = True
        return [Close(code, close_reason(reason))]
