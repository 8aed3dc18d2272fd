"""Push and pull over any ``syncd.protocol.SyncTransport``.

Push: the outbox is sent one document at a time, **merged into one update per document**
(``pycrdt.merge_updates`` of the doc's unacked updates, oldest first): one round trip and one
server commit per document, and a merge never has the out-of-order hazard. The PushAck marks
exactly the rows that were merged as acknowledged, in one SQLite commit (edits made while the
push was in flight stay in the outbox). Fallbacks:

- ``MissingDependencies``: the merged outbox builds on content the server lacks (it lost or
  never stored an update this device counts as delivered). The doc is re-sent as everything
  the server lacks: ``doc.get_update(server state vector)`` when the error carries one, else
  the full state. Either is a superset of the merged outbox and always integrable.
- ``UpdateTooLarge`` with several rows: the rows are sent one by one, in order, each acked
  as it goes.
- ``ClockSkew`` (writes stamped too far ahead of the server's clock: the device's clock ran
  fast, typically while offline): the edits are kept and their times fixed. The clock is set
  to the server's time, the device's writes stamped after it are written again with fresh
  stamps (``ReplicaCore._restamp``), and the document's outbox, now holding the old writes and
  their replacement, is sent again as one merged update in which the old keys are inserted
  and deleted: the server stores the same values at acceptable times.
- any other ``SyncError``: that document stops, its updates stay in the outbox (an
  unacknowledged update is never dropped) and the error is reported; other documents go on.

Pull: for each document, the state vector and the stored cursor are sent. The answer is
applied only if ``syncd.update_scan`` says it integrates completely; otherwise (a log tail
with a gap) a state-vector pull (``since_seq=None``) is requested and applied instead. After
an apply the state vector must cover the update (else ``IntegrityError``, nothing stored).
The update, the cursor and the clock are stored in one commit. Documents the server no longer
lists are dropped unless they still have unacknowledged local updates (then kept and reported).

Batch pull: when the transport offers it (:class:`BatchPullTransport`, e.g.
``replica.http.HttpTransport`` or ``syncd.local_transport.LocalTransport``), the requests
are batched: a full pull is one ``pull_listed`` (the listing and every listed document's
answer together: one HTTP request per page instead of a status walk plus one request per
document), a pull of given documents one ``pull_many``; the documents whose log tail has a
gap are then re-pulled by state vector in one more ``pull_many``. Answers are applied one
document at a time exactly as above, and stored in one device commit for the whole batch
(one fsync instead of one per document). A transport without these methods is used one
document at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pycrdt import merge_updates

from syncd.errors import ClockSkew, MissingDependencies, SyncError, UpdateTooLarge
from syncd.protocol import PullResult, SyncTransport
from syncd.update_scan import ScanError

from .errors import NotIntegrable, ReplicaError
from .store import OutboxRow

if TYPE_CHECKING:
    from .core import ReplicaCore

__all__ = ["PushReport", "PullReport", "SyncReport", "BatchPullTransport", "push", "pull", "sync"]

#: ``(doc_id, state_vector, since_seq)`` of one pull
PullRequest = tuple[str, "bytes | None", "int | None"]


@runtime_checkable
class BatchPullTransport(Protocol):
    """What a transport offers to pull many documents at once (optional; see the docstring)."""

    async def pull_many(self, requests: list[PullRequest]) -> list[PullResult | SyncError]:
        """One answer per request, in order: a PullResult or that document's SyncError."""
        ...

    async def pull_listed(self, known: dict[str, tuple[bytes | None, int | None]]
                          ) -> tuple[list[str], list[PullResult | SyncError]]:
        """Every document listed for this device, pulled (with ``known``'s state vector and
        cursor where the device holds it): ``(listed doc ids, answers in the same order)``."""
        ...


class _Report:
    errors: dict[str, Exception]

    @property
    def ok(self) -> bool:
        """True when no document failed."""
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise the failures as one ExceptionGroup (nothing if all went well)."""
        if self.errors:
            raise ExceptionGroup(f"{len(self.errors)} document(s) failed to sync", list(self.errors.values()))


@dataclass
class PushReport(_Report):
    """What a push did: acknowledged update counts, duplicates and errors, by document."""

    pushed: dict[str, int] = field(default_factory=dict)  # doc_id -> outbox updates acknowledged
    duplicates: list[str] = field(default_factory=list)  # docs the server already had
    resent_full: list[str] = field(default_factory=list)  # docs re-sent after MissingDependencies
    restamped: list[str] = field(default_factory=list)  # docs whose writes were re-stamped (CLOCK_SKEW)
    errors: dict[str, Exception] = field(default_factory=dict)


@dataclass
class PullReport(_Report):
    """What a pull did, by document."""

    changed: list[str] = field(default_factory=list)  # new content applied
    unchanged: list[str] = field(default_factory=list)
    full_pulls: list[str] = field(default_factory=list)  # re-pulled by state vector after a gap
    dropped: list[str] = field(default_factory=list)  # no longer listed: removed from the device
    kept: list[str] = field(default_factory=list)  # no longer listed, but local updates wait
    errors: dict[str, Exception] = field(default_factory=dict)


@dataclass
class SyncReport:
    """A push report and a pull report."""

    push: PushReport
    pull: PullReport

    @property
    def ok(self) -> bool:
        return self.push.ok and self.pull.ok

    def raise_for_errors(self) -> None:
        """Raise every failure of both phases as one ExceptionGroup."""
        errors = [*self.push.errors.values(), *self.pull.errors.values()]
        if errors:
            raise ExceptionGroup(f"{len(errors)} document sync(s) failed", errors)


def _merged(rows: list[OutboxRow]) -> bytes:
    return rows[0][2] if len(rows) == 1 else merge_updates(*(r[2] for r in rows))


def _server_state_vector(details: Any) -> bytes:
    """The server's state vector from MissingDependencies details; the empty one if absent."""
    sv = details.get("state_vector") if isinstance(details, dict) else None
    if isinstance(sv, (bytes, bytearray)):
        return bytes(sv)
    if isinstance(sv, str):
        try:
            return bytes.fromhex(sv)
        except ValueError:
            pass
    return b"\x00"


def _server_ms(details: Any) -> int | None:
    """The server's wall clock (ms) from ClockSkew details; None if absent or malformed."""
    ms = details.get("server_time_ms") if isinstance(details, dict) else None
    return ms if isinstance(ms, int) and not isinstance(ms, bool) and 0 < ms < 10**13 else None


async def _push_doc(replica: ReplicaCore, transport: SyncTransport, doc_id: str, rows: list[OutboxRow],
                    report: PushReport) -> None:
    try:
        ack = await transport.push(doc_id, _merged(rows))
    except ClockSkew as e:
        # This device's clock ran fast: its writes are written again at the server's time
        # and the document's outbox (old writes, their replacement) is sent as one update.
        server_ms = _server_ms(e.details)
        if server_ms is None or not await replica._restamp(doc_id, server_ms):
            raise
        rows = await replica.pending(doc_id)
        ack = await transport.push(doc_id, _merged(rows))
        report.restamped.append(doc_id)
    except MissingDependencies as e:
        rows = await replica.pending(doc_id)
        update = replica.doc(doc_id).get_update(_server_state_vector(e.details))
        ack = await transport.push(doc_id, update)
        report.resent_full.append(doc_id)
    except UpdateTooLarge:
        if len(rows) == 1:
            raise
        for row in rows:
            ack = await transport.push(doc_id, row[2])
            await replica._acknowledge(doc_id, [row[0]], ack.server_time)
            report.pushed[doc_id] = report.pushed.get(doc_id, 0) + 1
        return
    await replica._acknowledge(doc_id, [r[0] for r in rows], ack.server_time)
    report.pushed[doc_id] = len(rows)
    if ack.duplicate:
        report.duplicates.append(doc_id)


async def push(replica: ReplicaCore, transport: SyncTransport) -> PushReport:
    """Send the outbox, one merged update per document (see the module docstring)."""
    report = PushReport()
    by_doc: dict[str, list[OutboxRow]] = {}
    for row in await replica.pending():
        by_doc.setdefault(row[1], []).append(row)
    for doc_id, rows in by_doc.items():
        try:
            await _push_doc(replica, transport, doc_id, rows, report)
        except SyncError as e:
            report.errors[doc_id] = e
    return report


async def _pull_doc(replica: ReplicaCore, transport: SyncTransport, doc_id: str, report: PullReport) -> None:
    known = replica.has_doc(doc_id)
    sv = replica.doc(doc_id).get_state() if known else b"\x00"
    cursor = await replica.cursor(doc_id) if known else None
    res = await transport.pull(doc_id, sv, cursor)
    try:
        changed = await replica._apply_remote(doc_id, res.update, res.seq, res.server_time)
    except NotIntegrable:
        # A gap (e.g. a log tail past what we hold): never apply piecemeal; ask for everything
        # we lack relative to our state vector instead.
        sv = replica.doc(doc_id).get_state() if replica.has_doc(doc_id) else b"\x00"
        res = await transport.pull(doc_id, sv, None)
        changed = await replica._apply_remote(doc_id, res.update, res.seq, res.server_time)
        report.full_pulls.append(doc_id)
    (report.changed if changed else report.unchanged).append(doc_id)


async def _apply_answers(replica: ReplicaCore, doc_ids: list[str], answers: list[PullResult | SyncError],
                         report: PullReport, gaps: list[str] | None) -> None:
    """Apply batch answers, stored in one device commit; a log tail with a gap goes to
    ``gaps`` (None: that is an error, and what was applied is a full pull)."""
    todo: list[tuple[str, bytes, int | None, str | None]] = []
    for doc_id, res in zip(doc_ids, answers):
        if isinstance(res, BaseException):
            report.errors[doc_id] = res
        else:
            todo.append((doc_id, res.update, res.seq, res.server_time))
    outcomes = await replica._apply_remote_many(todo)  # a failed device commit propagates (as one by one)
    for (doc_id, *_), outcome in zip(todo, outcomes):
        if isinstance(outcome, NotIntegrable) and gaps is not None:
            gaps.append(doc_id)
        elif isinstance(outcome, BaseException):
            report.errors[doc_id] = outcome
        else:
            if gaps is None:
                report.full_pulls.append(doc_id)
            (report.changed if outcome else report.unchanged).append(doc_id)


async def _known(replica: ReplicaCore, doc_ids: list[str]) -> dict[str, tuple[bytes | None, int | None]]:
    """State vector and cursor of the given documents this device holds."""
    held = [d for d in doc_ids if replica.has_doc(d)]
    cursors = await replica.cursors(held)
    return {d: (replica.doc(d).get_state(), cursors.get(d)) for d in held}


async def _pull_batched(replica: ReplicaCore, transport: Any, doc_ids: list[str] | None,
                        report: PullReport) -> list[str] | None:
    """Pull through ``pull_listed`` / ``pull_many``; returns the listing of a full pull."""
    listed: list[str] | None = None
    if doc_ids is None:
        listed, answers = await transport.pull_listed(await _known(replica, replica.doc_ids()))
        doc_ids = listed
    else:
        known = await _known(replica, doc_ids)
        requests = [(d, *known.get(d, (b"\x00", None))) for d in doc_ids]
        try:
            answers = await transport.pull_many(requests)
        except SyncError as e:
            answers = [e] * len(doc_ids)
    gaps: list[str] = []
    await _apply_answers(replica, doc_ids, answers, report, gaps)
    if gaps:
        # A gap (e.g. a log tail past what we hold): never apply piecemeal; ask for everything
        # we lack relative to our state vector instead.
        requests = [(d, replica.doc(d).get_state() if replica.has_doc(d) else b"\x00", None) for d in gaps]
        try:
            answers = await transport.pull_many(requests)
        except SyncError as e:
            answers = [e] * len(gaps)
        await _apply_answers(replica, gaps, answers, report, None)
    return listed


def _batches(transport: Any) -> bool:
    return callable(getattr(transport, "pull_many", None)) and callable(getattr(transport, "pull_listed", None))


async def pull(replica: ReplicaCore, transport: SyncTransport, doc_ids: list[str] | None = None) -> PullReport:
    """Fetch and apply what this device lacks of ``doc_ids`` (default: every listed doc).

    With the default list, local documents the server no longer lists are dropped (kept and
    reported in ``kept`` while they have unacknowledged local updates). Batched when the
    transport offers it (:class:`BatchPullTransport`).
    """
    report = PullReport()
    listed = None
    if _batches(transport):
        listed = await _pull_batched(replica, transport, doc_ids, report)
    else:
        if doc_ids is None:
            listed = list(await transport.list_docs())
            doc_ids = listed
        for doc_id in doc_ids:
            try:
                await _pull_doc(replica, transport, doc_id, report)
            except (SyncError, ReplicaError, ScanError, ValueError) as e:
                report.errors[doc_id] = e
    if listed is not None:
        for doc_id in sorted(set(replica.doc_ids()) - set(listed)):
            (report.dropped if await replica._drop(doc_id) else report.kept).append(doc_id)
    return report


async def sync(replica: ReplicaCore, transport: SyncTransport) -> SyncReport:
    """Push the outbox, then pull."""
    pushed = await push(replica, transport)
    return SyncReport(pushed, await pull(replica, transport))
