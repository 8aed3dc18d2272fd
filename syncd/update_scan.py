"""Bounds-checked scanner for Yjs update v1 bytes, run before pycrdt sees them.

Why this module exists
----------------------
pycrdt 0.14 (yrs) must only be given updates that are well formed and
integrable:

* Applied out of order (a client's updates 0, 2, 3, 1), pycrdt silently
  loses content: what cannot integrate yet is parked as "pending", and in
  that sequence update 3's text never appears. So the server applies an
  update only when ``missing_dependencies(scan, doc_state_vector)`` is empty.
* Hostile bytes can make yrs allocate a lot before it fails: it reserves
  ``Vec::with_capacity(n)`` / ``HashMap::with_capacity(n)`` from length
  prefixes. Deeply nested ``Any`` values are decoded recursively (and
  converted to Python recursively), which can overflow the native stack.
  pycrdt's ``PanicException`` derives from ``BaseException``.

``scan_update`` reads the whole v1 update (header, structs, delete set) in
pure Python. It never applies anything. It checks every length against the
bytes that remain before it slices, checks every count against the bytes
that remain before it loops (so each loop step consumes input, time is linear
in the input, and nothing allocates more than a small multiple of the input),
and reads nested ``Any`` values with an explicit stack bounded by
``ScanLimits.max_depth``. Any malformation raises ``ScanError`` (a
``ValueError``) naming what was wrong and the byte offset; nothing else is
raised, whatever the input.

Format (Yjs ``src/utils/encoding.js`` readClientsStructRefs / writeStructs,
``UpdateDecoderV1``, ``Item.js`` content readers, ``DeleteSet.js``
readDeleteSet, lib0 ``decoding.js``)::

    update      = varuint numClients, clientSection*, deleteSet
    clientSection = varuint numStructs, varuint client, varuint startClock, struct*
    struct      = u8 info, then by info & 0x1f:
                    0  GC    varuint len
                    10 Skip  varuint len
                    else Item:
                      info & 0x80: origin       (varuint client, varuint clock)
                      info & 0x40: right origin (varuint client, varuint clock)
                      neither: varuint parentInfo; 1 -> varString root name,
                                                   0 -> parent id (client, clock)
                               then if info & 0x20: varString parentSub (map key)
                      content (clock length in brackets):
                      1 Deleted varuint len [len]        2 JSON  varuint n, varString*n [n]
                      3 Binary  varUint8Array   [1]      4 String varString [UTF-16 units]
                      5 Embed   varString JSON  [1]      6 Format varString key, varString JSON [1]
                      7 Type    varuint typeRef (3 XmlElement, 5 XmlHook: + varString) [1]
                      8 Any     varuint n, any*n [n]     9 Doc   varString guid, any opts [1]
    deleteSet   = varuint numClients, (varuint client, varuint numRanges, (varuint clock, varuint len)*)*
    any         = u8 tag: 127 undefined, 126 null, 125 varint, 124 f32 (4 bytes), 123 f64 (8),
                  122 bigint64 (8), 121 false, 120 true, 119 varString,
                  118 object (varuint n, (varString key, any)*n), 117 array (varuint n, any*n),
                  116 varUint8Array

Where the scanner is stricter than Yjs, on purpose (each is a place where
Yjs and yrs 0.14.13 read the same bytes differently, checked against pycrdt
0.14.13 in ``tests/syncd/test_update_scan.py``, so that what we scan is what
pycrdt applies):

* ContentJSON (ref 2) is rejected: yrs reads ``n + 1`` strings where Yjs
  reads ``n`` (``while remaining >= 0``). Modern Yjs never writes it
  (arrays and maps use ContentAny).
* Nested type XmlHook (typeRef 5) is rejected: Yjs reads a hook name after
  the type ref, yrs 0.14 does not. WeakLink (7, yrs-only, carries ids),
  SubDoc (9) and Undefined (15) type refs are rejected; Yjs only knows 0-6.
* Content refs other than 1-9 (e.g. yrs' experimental Move = 11) are
  rejected, and so is any info byte with bit 0x10 set: yrs masks the content
  ref with 0x0f, Yjs with 0x1f, so ``0x14`` is a String to yrs and an error
  to Yjs.
* GC and Skip must have an info byte of exactly 0 / 10: Yjs masks the flag
  bits off, yrs matches the whole byte and reads ``0x20`` as an Item.
* A client may appear only once among the struct sections and once in the
  delete set: for struct sections Yjs keeps the last, yrs merges them; for
  delete sets Yjs merges, yrs keeps the last.
* Every clock, length and clock + length must be <= 2**32 - 1: yrs keeps
  clocks in ``u32`` and ``read_var::<u32>`` *wraps* (a start clock of
  ``2**32 + 3`` is clock 3 to pycrdt). Other varuints may use 53 bits (JS
  safe integers, lib0); a varuint longer than 8 bytes is rejected.
* Zero-length structs (empty string, 0-element Any, len-0 GC/Deleted/Skip)
  are rejected: pycrdt silently drops the whole client section around them.
* An item may only reference ids of its own client that are below its own
  clock. (pycrdt itself emits an item whose right origin is its own id when
  ``Text.insert`` is given a UTF-8 byte offset inside a character; other
  replicas silently drop it.)
* A parent id that points into this same update must name a shared type
  (or a deleted / GC struct): otherwise pycrdt raises *after* integrating
  part of the update. (A parent id pointing into the document cannot be
  checked here; that failure mode remains, see missing_dependencies.)
* parentInfo must be 0 or 1; strings must be valid UTF-8; the JSON of Embed /
  Format content must parse (no NaN/Infinity) and nest at most ``max_depth``.

Performance (measured with ``timeit``, min of 25 x 20k runs, CPython 3.11 in
the dev container on a shared 2-core machine, so treat as rough):

* 63-byte pycrdt map update (``m["crew"] = {"lead": "Ana", "size": 4,
  "tags": ["rebar", "pour"]}``): ~10 µs;
* 23-73 byte map updates with a number or a string value (``m["a"] = 1``,
  a 50-character title): ~6-7 µs;
* ``missing_dependencies`` on such a scan: ~2-4 µs.

Varuints below 128 and the common Any scalars take inline fast paths; there is
no per-byte Python function call. Worst cases at the default 1 MB limit
(adversarial but valid: 500k one-byte Any strings or integers, Any values
nested 16 deep, 20k Embed structs with JSON) take ~0.1-0.2 s, linear in size.
Memory: a few Python objects per struct (bounded by ``max_structs``), string
slices while validating them, nothing sized by a length prefix.
"""

from __future__ import annotations

import bisect
import heapq
import json
from dataclasses import dataclass, field

__all__ = [
    "ScanError",
    "ScanLimits",
    "ScanResult",
    "scan_update",
    "decode_state_vector",
    "encode_state_vector",
    "missing_dependencies",
    "is_duplicate",
    "MAX_SAFE_INTEGER",
    "MAX_CLOCK",
]

#: Largest varuint accepted anywhere (JS ``Number.MAX_SAFE_INTEGER``).
MAX_SAFE_INTEGER = (1 << 53) - 1
#: Largest clock / length / clock end (yrs stores clocks as ``u32``).
MAX_CLOCK = (1 << 32) - 1


class ScanError(ValueError):
    """The bytes are not an acceptable Yjs v1 update; the message says why and where."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        if offset is not None:
            message = f"{message} (at byte {offset})"
        super().__init__(message)


@dataclass(frozen=True)
class ScanLimits:
    max_bytes: int = 1_048_576
    max_structs: int = 20_000
    max_clients: int = 1_000
    #: nesting of Any arrays/objects (and of the JSON in Embed/Format content)
    max_depth: int = 16
    #: any single length-prefixed string or binary blob (keys, names, values)
    max_string_bytes: int = 262_144
    max_delete_ranges: int = 100_000


_DEFAULT_LIMITS = ScanLimits()
#: for updates the server itself merged from accepted ones (a broadcast): bounded by what
#: was accepted, not by one client's limits
INTERNAL_LIMITS = ScanLimits(max_bytes=1 << 30, max_structs=1 << 30, max_clients=1 << 20,
                              max_delete_ranges=1 << 30)

Ref = tuple[int, int]


@dataclass(frozen=True)
class ScanResult:
    """What an update contains, without applying it.

    ``clients``: client -> (first clock, end clock exclusive) of the structs in
    the update (Skip structs excluded: a leading or trailing Skip does not
    widen the range); ``gaps``: client -> Skip ranges strictly inside it
    (content the update does not carry). ``refs``: every id referenced as
    origin / right origin / parent, deduplicated, in first-seen order.
    ``delete_set``: client -> (clock, len) ranges as encoded. ``struct_count``
    counts every struct read, Skips included. ``content_types``: names of the
    item contents seen ("deleted", "binary", "string", "embed", "format",
    "type", "any", "doc"), plus "gc" / "skip" for those structs.
    ``map_keys``: (root name, key) for items whose parent is a root and that
    have a key. ``is_empty``: no (non-Skip) structs and no delete ranges.
    ``items``: per client, (start, end, refs) of every non-Skip struct in
    clock order, and ``surrogate_splits``: per client, clocks that fall between
    the two UTF-16 halves of an astral character; both used by
    ``missing_dependencies``.
    """

    clients: dict[int, tuple[int, int]]
    roots: frozenset[str]
    refs: tuple[Ref, ...]
    delete_set: dict[int, tuple[tuple[int, int], ...]]
    struct_count: int
    content_types: frozenset[str]
    has_nested_types: bool
    map_keys: tuple[tuple[str, str], ...]
    is_empty: bool
    gaps: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    items: dict[int, tuple[tuple[int, int, tuple[Ref, ...]], ...]] = field(
        default_factory=dict, repr=False
    )
    #: client -> clocks k where k-1 and k are the two halves of one surrogate pair
    #: inside a string item (a document whose state ends at k would cut it)
    surrogate_splits: dict[int, frozenset[int]] = field(default_factory=dict, repr=False)
    #: client -> byte range [start, end) of its struct section (Skip-only sections too), and
    #: the byte offset of the delete set: what :func:`without_clients` slices
    sections: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)
    ds_offset: int = -1


# --------------------------------------------------------------------------- low level

_CONTENT_NAMES = {
    1: "deleted",
    2: "json",
    3: "binary",
    4: "string",
    5: "embed",
    6: "format",
    7: "type",
    8: "any",
    9: "doc",
}
# typeRef -> reads a name after it? (Yjs typeRefs 0..6 minus the XmlHook)
_TYPE_REFS = {0: False, 1: False, 2: False, 3: True, 4: False, 6: False}
_TYPE_NAMES = {
    0: "YArray",
    1: "YMap",
    2: "YText",
    3: "YXmlElement",
    4: "YXmlFragment",
    5: "YXmlHook",
    6: "YXmlText",
    7: "WeakLink",
    9: "SubDoc",
    15: "Undefined",
}
# every byte except the lead bytes of 4-byte UTF-8 sequences (F0..F4): deleting
# them from valid UTF-8 leaves one byte per astral code point (2 UTF-16 units)
_NOT_ASTRAL_LEAD = bytes(range(0xF0)) + bytes(range(0xF5, 0x100))


def _varuint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Slow path: a varuint of any length (max 8 bytes, value < 2**53)."""
    start = pos
    result = 0
    shift = 0
    ln = len(data)
    while True:
        if pos >= ln:
            raise ScanError(f"truncated varuint ({what})", start)
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift >= 56:
            raise ScanError(f"varuint ({what}) longer than 8 bytes", start)
    if result > MAX_SAFE_INTEGER:
        raise ScanError(f"varuint ({what}) exceeds 2**53-1", start)
    return result, pos


def _string(data: bytes, pos: int, maxlen: int, what: str) -> tuple[str, int]:
    """A varString: varuint byte length + UTF-8, checked before slicing."""
    n = data[pos] if pos < len(data) else 0x80
    if n < 0x80:
        pos += 1
    else:
        n, pos = _varuint(data, pos, what + " length")
    end = pos + n
    if n > maxlen:
        raise ScanError(
            f"{what} of {n} bytes exceeds limit max_string_bytes={maxlen}", pos
        )
    if end > len(data):
        raise ScanError(
            f"{what} claims {n} bytes but only {len(data) - pos} remain", pos
        )
    try:
        return data[pos:end].decode("utf-8"), end
    except UnicodeDecodeError as e:
        raise ScanError(f"{what} is not valid UTF-8 ({e.reason})", pos + e.start) from None


def _skip_blob(data: bytes, pos: int, maxlen: int, what: str) -> int:
    """A varUint8Array: length checked before skipping."""
    n, pos = _varuint(data, pos, what + " length")
    if n > maxlen:
        raise ScanError(
            f"{what} of {n} bytes exceeds limit max_string_bytes={maxlen}", pos
        )
    if pos + n > len(data):
        raise ScanError(
            f"{what} claims {n} bytes but only {len(data) - pos} remain", pos
        )
    return pos + n


def _skip_any(data: bytes, pos: int, limits: ScanLimits) -> int:
    """Skip one lib0 ``any`` value, iteratively; containers nest <= max_depth.

    Hot loop: strings (values and object keys) are read inline.
    """
    ln = len(data)
    max_depth = limits.max_depth
    maxlen = limits.max_string_bytes
    remaining: list[int] = []  # values still to read in each open container
    is_map: list[bool] = []
    in_map = False
    while True:
        if in_map:  # object key: a varString
            key_at = pos
            n = data[pos] if pos < ln else 0x80
            if n < 0x80:
                pos += 1
            else:
                n, pos = _varuint(data, pos, "Any object key length")
            end = pos + n
            if n > maxlen or end > ln:
                _string(data, key_at, maxlen, "Any object key")  # raises the precise error
            if n:
                try:
                    data[pos:end].decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ScanError(
                        f"Any object key is not valid UTF-8 ({e.reason})", pos + e.start
                    ) from None
            pos = end
        if pos >= ln:
            raise ScanError("truncated Any value", pos)
        tag = data[pos]
        pos += 1
        if tag == 124:  # float32 (pycrdt's small numbers)
            pos += 4
            if pos > ln:
                raise ScanError("truncated Any float32", pos - 4)
        elif tag == 119:  # string
            n = data[pos] if pos < ln else 0x80
            if n < 0x80:
                pos += 1
            else:
                n, pos = _varuint(data, pos, "Any string length")
            end = pos + n
            if n > maxlen:
                raise ScanError(
                    f"Any string of {n} bytes exceeds limit max_string_bytes={maxlen}", pos
                )
            if end > ln:
                raise ScanError(
                    f"Any string claims {n} bytes but only {ln - pos} remain", pos
                )
            if n:
                try:
                    data[pos:end].decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ScanError(
                        f"Any string is not valid UTF-8 ({e.reason})", pos + e.start
                    ) from None
            pos = end
        elif tag == 125:  # varint: 6 bits + sign in the first byte, then 7-bit groups
            if pos >= ln:
                raise ScanError("truncated Any integer", pos)
            b = data[pos]
            pos += 1
            if b & 0x80:
                start = pos - 1
                num = b & 0x3F
                shift = 6
                while True:
                    if pos >= ln:
                        raise ScanError("truncated Any integer", start)
                    b = data[pos]
                    pos += 1
                    num |= (b & 0x7F) << shift
                    if b < 0x80:
                        break
                    shift += 7
                    if shift >= 55:
                        raise ScanError("Any integer longer than 8 bytes", start)
                if num > MAX_SAFE_INTEGER:
                    raise ScanError("Any integer exceeds 2**53-1", start)
        elif tag >= 126 or tag == 120 or tag == 121:  # undefined, null, true, false
            if tag > 127:
                raise ScanError(f"unknown Any tag {tag}", pos - 1)
        elif tag == 117 or tag == 118:  # array, object
            if len(remaining) >= max_depth:
                raise ScanError(
                    f"Any value nests deeper than limit max_depth={max_depth}", pos - 1
                )
            n = data[pos] if pos < ln else 0x80
            if n < 0x80:
                pos += 1
            else:
                n, pos = _varuint(data, pos, "Any container length")
            need = n * 2 if tag == 118 else n  # every value / key takes >= 1 byte
            if need > ln - pos:
                raise ScanError(
                    f"Any container claims {n} entries but only {ln - pos} bytes remain",
                    pos,
                )
            if n:
                remaining.append(n)
                in_map = tag == 118
                is_map.append(in_map)
                continue
        elif tag == 123 or tag == 122:  # float64, bigint64
            pos += 8
            if pos > ln:
                raise ScanError("truncated Any 8-byte number", pos - 8)
        elif tag == 116:  # Uint8Array
            pos = _skip_blob(data, pos, maxlen, "Any buffer")
        else:
            raise ScanError(f"unknown Any tag {tag}", pos - 1)
        # one value complete: close every container it completes
        while remaining:
            remaining[-1] -= 1
            if remaining[-1]:
                in_map = is_map[-1]
                break
            remaining.pop()
            is_map.pop()
        else:
            return pos


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _check_json(text: str, offset: int, max_depth: int, what: str) -> None:
    """JSON of Embed/Format content must parse (as yrs' serde_json would) and nest <= max_depth.

    ``json.loads`` is linear and guards its own recursion (RecursionError, not
    a crash); the depth of the result is then measured with an explicit stack.
    """
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ScanError(f"{what} JSON nests deeper than limit max_depth={max_depth}", offset) from None
    except ValueError as e:
        raise ScanError(f"{what} is not valid JSON ({e})", offset) from None
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        if depth > max_depth:
            raise ScanError(
                f"{what} JSON nests deeper than limit max_depth={max_depth}", offset
            )
        stack.extend((child, depth + 1) for child in v if isinstance(child, (dict, list)))


# --------------------------------------------------------------------------- scanner


def scan_update(data: bytes, limits: ScanLimits = _DEFAULT_LIMITS) -> ScanResult:
    """Scan (never apply) a Yjs v1 update; raise ScanError on any malformation."""
    if not isinstance(data, bytes):
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise ScanError(f"update must be bytes, not {type(data).__name__}")
    ln = len(data)
    if ln > limits.max_bytes:
        raise ScanError(f"update of {ln} bytes exceeds limit max_bytes={limits.max_bytes}")
    try:
        return _scan(data, ln, limits)
    except IndexError:  # pragma: no cover - every read is checked; belt and braces
        raise ScanError("truncated update", ln) from None
    except RecursionError:  # pragma: no cover - nothing recurses; belt and braces
        raise ScanError("update too deeply nested") from None


def _scan(data: bytes, ln: int, limits: ScanLimits) -> ScanResult:
    maxstr = limits.max_string_bytes
    max_structs = limits.max_structs
    pos = 0

    if ln == 0:
        raise ScanError("empty input: an update has at least 2 bytes", 0)
    n_clients = data[0]
    pos = 1
    if n_clients >= 0x80:
        n_clients, pos = _varuint(data, 0, "client count")
    if n_clients > limits.max_clients:
        raise ScanError(
            f"{n_clients} client sections exceed limit max_clients={limits.max_clients}", 0
        )
    if n_clients * 3 > ln - pos:
        raise ScanError(
            f"update claims {n_clients} client sections but only {ln - pos} bytes remain", 0
        )

    clients: dict[int, tuple[int, int]] = {}
    gaps: dict[int, list[tuple[int, int]]] = {}
    items: dict[int, tuple[tuple[int, int, tuple[Ref, ...]], ...]] = {}
    seen_clients: set[int] = set()
    roots: set[str] = set()
    refs: dict[Ref, None] = {}
    content_types: set[str] = set()
    map_keys: dict[tuple[str, str], None] = {}
    has_nested = False
    struct_count = 0
    parent_ids: list[tuple[int, int, int]] = []  # (client, clock, byte offset)
    splits: dict[int, set[int]] = {}  # clocks inside a surrogate pair, per client
    kinds: dict[int, list[int]] = {}  # content ref of every non-Skip struct, per client
    sections: dict[int, tuple[int, int]] = {}

    for _ in range(n_clients):
        section_at = pos
        # numStructs, client, startClock
        if pos >= ln:
            raise ScanError("truncated client section", pos)
        n_structs = data[pos]
        pos += 1
        if n_structs >= 0x80:
            n_structs, pos = _varuint(data, pos - 1, "struct count")
        if pos >= ln:
            raise ScanError("truncated client section", pos)
        client = data[pos]
        pos += 1
        if client >= 0x80:
            client, pos = _varuint(data, pos - 1, "client id")
        if pos >= ln:
            raise ScanError("truncated client section", pos)
        clock = data[pos]
        pos += 1
        if clock >= 0x80:
            clock, pos = _varuint(data, pos - 1, "start clock")
        if client in seen_clients:
            raise ScanError(f"client {client} has two struct sections", section_at)
        seen_clients.add(client)
        if clock > MAX_CLOCK:
            raise ScanError(f"start clock {clock} of client {client} exceeds 2**32-1", pos)
        struct_count += n_structs
        if struct_count > max_structs:
            raise ScanError(
                f"{struct_count} structs exceed limit max_structs={max_structs}", section_at
            )
        if n_structs * 2 > ln - pos:  # every struct is >= 2 bytes
            raise ScanError(
                f"client {client} claims {n_structs} structs but only {ln - pos} bytes remain",
                section_at,
            )

        first = -1  # start of the first non-Skip struct
        last_end = -1  # end of the last non-Skip struct
        pending_skip: tuple[int, int] | None = None
        client_gaps: list[tuple[int, int]] = []
        client_items: list[tuple[int, int, tuple[Ref, ...]]] = []
        client_kinds: list[int] = []

        for _ in range(n_structs):
            struct_at = pos
            if pos >= ln:
                raise ScanError(f"truncated struct of client {client}", pos)
            info = data[pos]
            pos += 1
            ref = info & 0x1F
            item_refs: tuple[Ref, ...] = ()
            if ref == 0 or ref == 10:
                if info != ref:
                    raise ScanError(
                        f"{'GC' if ref == 0 else 'Skip'} struct with flag bits set "
                        f"(info byte {info:#04x})",
                        struct_at,
                    )
                if pos >= ln:
                    raise ScanError("truncated struct length", pos)
                length = data[pos]
                pos += 1
                if length >= 0x80:
                    length, pos = _varuint(data, pos - 1, "struct length")
                if ref == 10:
                    content_types.add("skip")
                    if length == 0:
                        raise ScanError("Skip struct of length 0", struct_at)
                    end = clock + length
                    if end > MAX_CLOCK:
                        raise ScanError(
                            f"clock range of client {client} ends at {end} > 2**32-1", struct_at
                        )
                    if first >= 0 and pending_skip is None:
                        pending_skip = (clock, end)
                    elif pending_skip is not None:
                        pending_skip = (pending_skip[0], end)
                    clock = end
                    continue
                content_types.add("gc")
            else:
                # ---- item header
                r: list[Ref] = []
                if info & 0x80:  # origin
                    c = data[pos] if pos < ln else 0x80
                    if c < 0x80:
                        pos += 1
                    else:
                        c, pos = _varuint(data, pos, "origin client")
                    k = data[pos] if pos < ln else 0x80
                    if k < 0x80:
                        pos += 1
                    else:
                        k, pos = _varuint(data, pos, "origin clock")
                    r.append((c, k))
                if info & 0x40:  # right origin
                    c = data[pos] if pos < ln else 0x80
                    if c < 0x80:
                        pos += 1
                    else:
                        c, pos = _varuint(data, pos, "right origin client")
                    k = data[pos] if pos < ln else 0x80
                    if k < 0x80:
                        pos += 1
                    else:
                        k, pos = _varuint(data, pos, "right origin clock")
                    r.append((c, k))
                if not info & 0xC0:
                    parent_info = data[pos] if pos < ln else 0x80
                    if parent_info < 0x80:
                        pos += 1
                    else:
                        parent_info, pos = _varuint(data, pos, "parent info")
                    if parent_info == 1:
                        root, pos = _string(data, pos, maxstr, "root type name")
                        roots.add(root)
                        if info & 0x20:
                            key, pos = _string(data, pos, maxstr, "map key")
                            map_keys[(root, key)] = None
                    elif parent_info == 0:
                        c = data[pos] if pos < ln else 0x80
                        if c < 0x80:
                            pos += 1
                        else:
                            c, pos = _varuint(data, pos, "parent client")
                        k = data[pos] if pos < ln else 0x80
                        if k < 0x80:
                            pos += 1
                        else:
                            k, pos = _varuint(data, pos, "parent clock")
                        r.append((c, k))
                        parent_ids.append((c, k, struct_at))
                        if info & 0x20:
                            pos = _string(data, pos, maxstr, "map key")[1]
                    else:
                        raise ScanError(f"parent info {parent_info} is neither 0 nor 1", pos)
                for c, k in r:
                    if k > MAX_CLOCK:
                        raise ScanError(f"referenced clock {k} exceeds 2**32-1", struct_at)
                    if c == client and k >= clock:
                        raise ScanError(
                            f"item ({client}, {clock}) references ({c}, {k}), "
                            "which is not before it",
                            struct_at,
                        )
                    refs[(c, k)] = None
                item_refs = tuple(r)

                # ---- content
                if ref == 8:  # Any
                    n = data[pos] if pos < ln else 0x80
                    if n < 0x80:
                        pos += 1
                    else:
                        n, pos = _varuint(data, pos, "Any count")
                    if n > ln - pos:
                        raise ScanError(
                            f"Any content claims {n} values but only {ln - pos} bytes remain",
                            pos,
                        )
                    for _ in range(n):
                        tag = data[pos] if pos < ln else 0
                        if tag == 124 and pos + 5 <= ln:  # float32: pycrdt's small numbers
                            pos += 5
                        elif (tag == 126 or tag == 120 or tag == 121) and pos < ln:
                            pos += 1
                        elif tag == 125 and pos + 1 < ln and data[pos + 1] < 0x80:
                            pos += 2  # small integer
                        else:
                            pos = _skip_any(data, pos, limits)
                    length = n
                elif ref == 4:  # String
                    n = data[pos] if pos < ln else 0x80
                    if n < 0x80:
                        pos += 1
                    else:
                        n, pos = _varuint(data, pos, "string content length")
                    end = pos + n
                    if n > maxstr:
                        raise ScanError(
                            f"string content of {n} bytes exceeds limit "
                            f"max_string_bytes={maxstr}",
                            pos,
                        )
                    if end > ln:
                        raise ScanError(
                            f"string content claims {n} bytes but only {ln - pos} remain", pos
                        )
                    raw = data[pos:end]
                    try:
                        length = len(raw.decode("utf-8"))
                    except UnicodeDecodeError as e:
                        raise ScanError(
                            f"string content is not valid UTF-8 ({e.reason})", pos + e.start
                        ) from None
                    if length != n:
                        # not ASCII: JS counts UTF-16 code units, astral chars count twice
                        astral = len(raw.translate(None, _NOT_ASTRAL_LEAD))
                        if astral:
                            k = clock
                            cuts = splits.setdefault(client, set())
                            for ch in raw.decode("utf-8"):
                                if ord(ch) > 0xFFFF:
                                    cuts.add(k + 1)
                                    k += 2
                                else:
                                    k += 1
                            length += astral
                    pos = end
                elif ref == 1:  # Deleted
                    length = data[pos] if pos < ln else 0x80
                    if length < 0x80:
                        pos += 1
                    else:
                        length, pos = _varuint(data, pos, "deleted length")
                elif ref == 7:  # Type
                    type_at = pos
                    tref = data[pos] if pos < ln else 0x80
                    if tref < 0x80:
                        pos += 1
                    else:
                        tref, pos = _varuint(data, pos, "type ref")
                    named = _TYPE_REFS.get(tref)
                    if named is None:
                        name = _TYPE_NAMES.get(tref, "unknown")
                        raise ScanError(
                            f"nested type ref {tref} ({name}) is not accepted", type_at
                        )
                    if named:
                        pos = _string(data, pos, maxstr, "XML element name")[1]
                    has_nested = True
                    length = 1
                elif ref == 3:  # Binary
                    pos = _skip_blob(data, pos, maxstr, "binary content")
                    length = 1
                elif ref == 5:  # Embed
                    at = pos
                    s, pos = _string(data, pos, maxstr, "embed content")
                    _check_json(s, at, limits.max_depth, "embed content")
                    length = 1
                elif ref == 6:  # Format
                    pos = _string(data, pos, maxstr, "format key")[1]
                    at = pos
                    s, pos = _string(data, pos, maxstr, "format value")
                    _check_json(s, at, limits.max_depth, "format value")
                    length = 1
                elif ref == 9:  # Doc
                    pos = _string(data, pos, maxstr, "subdocument guid")[1]
                    pos = _skip_any(data, pos, limits)
                    length = 1
                elif ref == 2:
                    raise ScanError(
                        "ContentJSON (ref 2) is not accepted: yrs and Yjs decode it "
                        "differently",
                        struct_at,
                    )
                else:
                    raise ScanError(f"unknown content ref {ref} (info byte {info:#04x})", struct_at)
                content_types.add(_CONTENT_NAMES[ref])

            # ---- common to GC and items
            if length == 0:
                raise ScanError(f"struct ({client}, {clock}) has length 0", struct_at)
            end = clock + length
            if end > MAX_CLOCK:
                raise ScanError(
                    f"clock range of client {client} ends at {end} > 2**32-1", struct_at
                )
            if pending_skip is not None:
                client_gaps.append(pending_skip)
                pending_skip = None
            if first < 0:
                first = clock
            last_end = end
            client_items.append((clock, end, item_refs))
            client_kinds.append(ref)
            clock = end

        sections[client] = (section_at, pos)
        if first >= 0:
            clients[client] = (first, last_end)
            items[client] = tuple(client_items)
            kinds[client] = client_kinds
            if client_gaps:
                gaps[client] = client_gaps

    # ---- a parent id carried by this update must be a shared type (or deleted)
    for c, k, at in parent_ids:
        its = items.get(c)
        if its:
            i = bisect.bisect_right(its, (k, MAX_CLOCK + 1)) - 1
            if i >= 0 and its[i][0] <= k < its[i][1] and kinds[c][i] not in (0, 1, 7):
                raise ScanError(
                    f"an item's parent {c}:{k} is {_CONTENT_NAMES[kinds[c][i]]} content "
                    "in this update, not a shared type",
                    at,
                )

    # ---- delete set
    ds_at = pos
    if pos >= ln:
        raise ScanError("truncated update: delete set missing", pos)
    n_ds = data[pos]
    pos += 1
    if n_ds >= 0x80:
        n_ds, pos = _varuint(data, pos - 1, "delete set client count")
    if n_ds > limits.max_clients:
        raise ScanError(
            f"delete set has {n_ds} clients, exceeding limit max_clients={limits.max_clients}",
            ds_at,
        )
    if n_ds * 2 > ln - pos:
        raise ScanError(
            f"delete set claims {n_ds} clients but only {ln - pos} bytes remain", ds_at
        )
    delete_set: dict[int, tuple[tuple[int, int], ...]] = {}
    ds_seen: set[int] = set()
    total_ranges = 0
    max_ranges = limits.max_delete_ranges
    for _ in range(n_ds):
        at = pos
        client, pos = _varuint(data, pos, "delete set client")
        n_ranges, pos = _varuint(data, pos, "delete range count")
        if client in ds_seen:
            raise ScanError(f"client {client} appears twice in the delete set", at)
        ds_seen.add(client)
        total_ranges += n_ranges
        if total_ranges > max_ranges:
            raise ScanError(
                f"{total_ranges} delete ranges exceed limit max_delete_ranges={max_ranges}", at
            )
        if n_ranges * 2 > ln - pos:
            raise ScanError(
                f"delete set of client {client} claims {n_ranges} ranges but only "
                f"{ln - pos} bytes remain",
                at,
            )
        ranges = []
        for _ in range(n_ranges):
            rat = pos
            k = data[pos] if pos < ln else 0x80
            if k < 0x80:
                pos += 1
            else:
                k, pos = _varuint(data, pos, "delete clock")
            n = data[pos] if pos < ln else 0x80
            if n < 0x80:
                pos += 1
            else:
                n, pos = _varuint(data, pos, "delete length")
            if n == 0:
                raise ScanError(f"delete range of client {client} has length 0", rat)
            if k + n > MAX_CLOCK:
                raise ScanError(
                    f"delete range of client {client} ends at {k + n} > 2**32-1", rat
                )
            ranges.append((k, n))
        if ranges:
            delete_set[client] = tuple(ranges)

    if pos != ln:
        raise ScanError(f"{ln - pos} bytes of trailing garbage after the delete set", pos)

    # a frozen dataclass __init__ costs ~2.5 µs (object.__setattr__ per field);
    # filling __dict__ directly builds the same object in a fraction of that
    result = object.__new__(ScanResult)
    result.__dict__.update(
        clients=clients,
        roots=frozenset(roots),
        refs=tuple(refs),
        delete_set=delete_set,
        struct_count=struct_count,
        content_types=frozenset(content_types),
        has_nested_types=has_nested,
        map_keys=tuple(map_keys),
        is_empty=not clients and not delete_set,
        gaps=gaps,
        items=items,
        surrogate_splits={c: frozenset(v) for c, v in splits.items()},
        sections=sections,
        ds_offset=ds_at,
    )
    return result


def without_clients(update: bytes, scan: ScanResult, drop: set[int] | frozenset[int]) -> bytes:
    """``update`` (scanned as ``scan``) without the struct sections of the clients in ``drop``.

    What ``get_update(update, state vector {c: MAX_CLOCK for c in drop})`` answers, by
    slicing the encoding instead of integrating it into a document: the other clients'
    sections byte for byte, then the delete set whole (deletions of dropped clients' content
    stay: a receiver that has that content applies them, one that does not ignores them).
    """
    secs = scan.sections
    cut = sorted(secs[c] for c in drop if c in secs)
    if not cut:
        return update
    head = bytearray()
    _put_varuint(head, len(secs) - len(cut))
    pieces = [bytes(head)]
    pos = next(iter(secs.values()))[0]  # the sections follow the client count, in order
    for a, b in cut:  # the kept sections between the cut ones, as runs of bytes
        pieces.append(update[pos:a])
        pos = b
    pieces.append(update[pos:])
    return b"".join(pieces)


def update_client_ids(update: bytes) -> frozenset[int]:
    """The client ids with a struct section in ``update`` (a valid update: one already
    accepted). An update with one section, what a live edit is, is read from its first
    three numbers; anything else is scanned."""
    try:
        n, pos = _varuint(update, 0, "client count")
        if n == 1:
            _n_structs, pos = _varuint(update, pos, "struct count")
            client, _ = _varuint(update, pos, "client id")
            return frozenset((client,))
    except (ScanError, IndexError):
        pass  # scanned below, which names the problem
    return frozenset(scan_update(update, INTERNAL_LIMITS).sections)


# --------------------------------------------------------------------------- state vectors


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Decode ``Doc.get_state()`` bytes: varuint count, then (client, clock) pairs."""
    if not isinstance(sv, (bytes, bytearray, memoryview)):
        raise ScanError(f"state vector must be bytes, not {type(sv).__name__}")
    data = bytes(sv)
    ln = len(data)
    if ln > _DEFAULT_LIMITS.max_bytes:
        raise ScanError(f"state vector of {ln} bytes is too large")
    n, pos = _varuint(data, 0, "state vector entry count")
    if n * 2 > ln - pos:
        raise ScanError(
            f"state vector claims {n} entries but only {ln - pos} bytes remain", 0
        )
    out: dict[int, int] = {}
    for _ in range(n):
        at = pos
        client, pos = _varuint(data, pos, "state vector client")
        clock, pos = _varuint(data, pos, "state vector clock")
        if client in out:
            raise ScanError(f"client {client} appears twice in the state vector", at)
        if clock > MAX_CLOCK:
            raise ScanError(f"state vector clock {clock} exceeds 2**32-1", at)
        out[client] = clock
    if pos != ln:
        raise ScanError(f"{ln - pos} bytes of trailing garbage after the state vector", pos)
    return out


def _put_varuint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def encode_state_vector(d: dict[int, int]) -> bytes:
    """Encode a state vector as ``Doc.get_state()`` does (clients in ascending order).

    Entries with clock 0 are kept (pycrdt omits them; both mean "nothing").
    """
    out = bytearray()
    _put_varuint(out, len(d))
    for client in sorted(d):
        clock = d[client]
        if not (0 <= client <= MAX_SAFE_INTEGER) or not (0 <= clock <= MAX_CLOCK):
            raise ValueError(f"state vector entry {client}: {clock} out of range")
        _put_varuint(out, client)
        _put_varuint(out, clock)
    return bytes(out)


# --------------------------------------------------------------------------- dependencies


def _present(scan: ScanResult, client: int, clock: int) -> bool:
    """Is (client, clock) inside a struct the update carries?"""
    its = scan.items.get(client)
    if not its:
        return False
    i = bisect.bisect_right(its, (clock, MAX_CLOCK + 1)) - 1
    return i >= 0 and its[i][0] <= clock < its[i][1]


def missing_dependencies(scan: ScanResult, state_vector: dict[int, int]) -> list[str]:
    """What the update needs that a document at ``state_vector`` lacks; [] iff it integrates fully.

    Simulates the integration order of Yjs/yrs (each client's structs in clock
    order, a struct waits until everything it references is integrated):

    * a client's structs must continue the document: the first struct must
      start at or below ``state_vector[client]`` and every Skip gap inside the
      update must already be known to the document;
    * every referenced id (origin, right origin, parent) must be in the
      document (``clock < state_vector[client]``) or be carried by the update
      *and* be integrable before the item that needs it (a dependency cycle
      between clients inside one update is reported);
    * the document's state must not end between the two UTF-16 halves of an
      astral character of a string item the update carries across that state
      (yrs silently drops such an item: its content disagrees with the
      document's, which only a hostile or broken client produces);
    * every delete range must end at or below what the document knows after
      the update's structs are integrated (so it deletes only known content;
      anything else would be parked as a pending delete set).

    Structs the document already has are checked too (Yjs checks their
    references before skipping them); for honest updates those always pass.

    Not covered (needs the document, not just its state vector): an item whose
    parent id names document content that is not a shared type makes pycrdt
    raise after integrating part of the update, so apply to a copy or treat a
    raising apply as having changed the document.
    """
    # the update's own clients advance as the simulation integrates their structs; every other
    # client is read from ``state_vector`` (not copied: a shared document has one per editor)
    state = {c: state_vector.get(c, 0) for c in scan.items}

    def known(c: int) -> int:
        return state[c] if c in state else state_vector.get(c, 0)

    problems: list[str] = []
    # per client: next struct index; clients blocked waiting on another client
    idx = {c: 0 for c in scan.items}
    waiting: dict[int, list[tuple[int, int]]] = {}  # client -> heap of (clock needed, waiter)
    blocked_on: dict[int, tuple[int, int, Ref]] = {}  # waiter -> (struct start, end, ref)
    dead: dict[int, str] = {}
    work = sorted(scan.items, reverse=True)

    while work:
        c = work.pop()
        its = scan.items[c]
        i = idx[c]
        st = state[c]
        blocked_on.pop(c, None)
        while i < len(its):
            start, end, refs = its[i]
            if start > st:
                gap_msg = (
                    f"client {c}: update starts at clock {start} but the document has only "
                    f"clocks below {st} (missing {c}:{st}..{start - 1})"
                    if i == 0
                    else f"client {c}: update skips clocks {st}..{start - 1} "
                    f"(not in the document, which has clocks below {state_vector.get(c, 0)})"
                )
                dead[c] = gap_msg
                break
            for rc, rk in refs:
                if rc != c and rk >= known(rc):
                    blocked_on[c] = (start, end, (rc, rk))
                    heapq.heappush(waiting.setdefault(rc, []), (rk, c))
                    break
            else:
                if end > st:
                    st = end
                i += 1
                continue
            break
        idx[c] = i
        state[c] = st
        heap = waiting.get(c)
        while heap and heap[0][0] < st:
            work.append(heapq.heappop(heap)[1])

    for c, cuts in sorted(scan.surrogate_splits.items()):
        k = state_vector.get(c, 0)
        if k in cuts:
            problems.append(
                f"client {c}: the document's state {k} falls inside a surrogate pair of a "
                "string in this update (content inconsistent with the document)"
            )
    for c in sorted(scan.items):
        if c in dead:
            problems.append(dead[c])
        elif c in blocked_on:
            start, _end, (rc, rk) = blocked_on[c]
            if _present(scan, rc, rk):
                problems.append(
                    f"client {c}: item {c}:{start} needs {rc}:{rk}, which this update carries "
                    "but cannot integrate first (dependency cycle or blocked chain)"
                )
            else:
                problems.append(
                    f"client {c}: item {c}:{start} needs {rc}:{rk}, which is neither in the "
                    f"document (has {rc}: clocks below {state_vector.get(rc, 0)}) nor in "
                    "this update"
                )
    for c in sorted(scan.delete_set):
        have = known(c)
        for k, n in scan.delete_set[c]:
            if k + n > have:
                problems.append(
                    f"delete set: client {c} range {k}..{k + n - 1} reaches beyond known "
                    f"content (clocks below {have})"
                )
                break
    return problems


def is_duplicate(scan: ScanResult, state_vector: dict[int, int]) -> bool:
    """True iff every struct range in the update is already covered by ``state_vector``.

    Only structs are compared: the delete set may still carry new deletions
    (a state vector says nothing about deletes), and an update with no structs
    at all (delete-only, or empty) is vacuously a duplicate. Never drop such an
    update unapplied on this basis alone; check ``scan.delete_set`` too.
    """
    return all(end <= state_vector.get(c, 0) for c, (_s, end) in scan.clients.items())
