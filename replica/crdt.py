"""pycrdt plumbing of the replica: building documents, capturing updates, safe remote apply.

pycrdt 0.14 can silently lose content when one client's updates are applied out of order,
so this module only ever applies (a) the merge of every stored update at once, or (b) a
remote update that ``syncd.update_scan`` says is fully integrable, and then checks that
nothing stayed pending.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from pycrdt import Doc, get_state, merge_updates

from schema.documents import parse_key
from syncd.update_scan import ScanLimits, ScanResult, decode_state_vector, missing_dependencies, scan_update

__all__ = [
    "LOCAL_ORIGIN",
    "REMOTE_ORIGIN",
    "RESTORE_ORIGIN",
    "new_doc",
    "rebuild",
    "captured_update",
    "PULL_LIMITS",
    "RemoteCheck",
    "check_remote",
    "unintegrated",
]

#: Transaction origins: every writer tags its transactions so observers can tell them apart.
LOCAL_ORIGIN = "replica.local"
REMOTE_ORIGIN = "replica.remote"
RESTORE_ORIGIN = "replica.restore"


def new_doc(client_id: int) -> Doc:
    """An empty document that writes as this install's Yjs client."""
    return Doc(client_id=client_id)


def rebuild(client_id: int, updates: list[bytes]) -> Doc:
    """A document holding ``updates``, merged first and applied once (order-safe)."""
    doc = new_doc(client_id)
    if updates:
        with doc.transaction(origin=RESTORE_ORIGIN):
            doc.apply_update(updates[0] if len(updates) == 1 else merge_updates(*updates))
    return doc


@contextmanager
def captured_update(doc: Doc) -> Iterator[list[bytes]]:
    """Collect the update(s) emitted by the transactions run inside the block.

    Transactions are synchronous, so whatever the doc emits inside the block is exactly the
    block's own change. The list holds one update per committed transaction (none when a
    transaction changed nothing).
    """
    out: list[bytes] = []
    sub = doc.observe(lambda e: out.append(e.update))
    try:
        yield out
    finally:
        doc.unobserve(sub)


#: Pulled updates were validated by the server; the device scans them for integrability only,
#: so its size bounds are those of a whole document rather than of one pushed edit.
PULL_LIMITS = ScanLimits(max_bytes=1 << 30, max_structs=1 << 26, max_clients=1 << 20,
                         max_delete_ranges=1 << 26)


@dataclass(frozen=True, slots=True)
class RemoteCheck:
    """What a received update needs and carries, from ``syncd.update_scan``."""

    scan: ScanResult
    missing: list[str]  # dependencies the doc lacks (empty iff the update integrates)

    @property
    def write_times(self) -> list[str]:
        """Timestamps of the root-map writes the update carries (malformed keys skipped)."""
        out = []
        for root, key in self.scan.map_keys:
            try:
                out.append(parse_key(root, key).ts)
            except ValueError:
                pass  # refused by the server, skipped by readers
        return out


def check_remote(doc: Doc, update: bytes) -> RemoteCheck:
    """Scan ``update`` and list what it depends on that ``doc`` lacks.

    Raises ``syncd.update_scan.ScanError`` for a malformed update.
    """
    scan = scan_update(update, PULL_LIMITS)
    return RemoteCheck(scan, missing_dependencies(scan, decode_state_vector(doc.get_state())))


def unintegrated(doc: Doc, update: bytes, scan: ScanResult) -> list[int]:
    """Clients whose content in ``update`` is not (all) in ``doc``: it stayed pending or was lost.

    The doc's state vector must cover both ``pycrdt.get_state(update)`` and the end of every
    client range the scan found (``get_state`` of an update that does not start at clock 0 is
    empty, so it alone is blind to diffs).
    """
    have = decode_state_vector(doc.get_state())
    need = {c: end for c, (_, end) in scan.clients.items()}
    for c, clock in decode_state_vector(get_state(update)).items():
        need[c] = max(need.get(c, 0), clock)
    return sorted(c for c, clock in need.items() if have.get(c, 0) < clock)
