"""Replay the op log and compare it with the projection (``syncd verify``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .livedoc import LiveDoc
from .projection import rows_for_view
from .store import Store

__all__ = ["Difference", "VerifyReport", "verify"]


@dataclass(frozen=True)
class Difference:
    doc_id: str
    table: str
    key: str
    expected: Any
    actual: Any

    def to_json(self) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "table": self.table, "key": self.key,
                "expected": self.expected, "actual": self.actual}


@dataclass
class VerifyReport:
    documents: int = 0
    log_entries: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "documents": self.documents, "log_entries": self.log_entries,
                "differences": [d.to_json() for d in self.differences]}


def _norm(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) and k in ("quantity", "cost", "estimate")
                else v) for k, v in row.items() if k != "last_seq"}


async def verify(db: AsyncEngine, progress: Any = None) -> VerifyReport:
    """Rebuild every document from snapshot + log and compare its rows with the tables."""
    store = Store(db.dialect.name)
    report = VerifyReport()
    async with db.connect() as conn:
        heads = await store.heads(conn)
        for head in heads:
            doc_id = head["doc_id"]
            snap = await store.snapshot(conn, doc_id)
            entries = await store.entries(conn, doc_id, after_seq=snap[1] if snap else 0)
            report.documents += 1
            report.log_entries += len(entries)
            last = max([snap[1] if snap else 0] + [e.seq for e in entries])
            if head["last_seq"] != last or head["projected_seq"] != last:
                report.differences.append(Difference(doc_id, "doc_heads", "seq", {"last_seq": last, "projected_seq": last},
                                                     {"last_seq": head["last_seq"], "projected_seq": head["projected_seq"]}))
            live = LiveDoc.build(doc_id, snap[0] if snap else None, [e.update for e in entries])
            expected = rows_for_view(live.kind, live.record_id, live.view)
            actual = await store.projected_rows(conn, live.kind, live.record_id)
            for table in actual:
                exp = getattr(expected, table)
                act = actual[table]
                if table == "job_assignments":
                    if set(exp) != set(act):
                        report.differences.append(Difference(doc_id, table, live.record_id, sorted(exp), sorted(act)))
                    continue
                for key in sorted(set(exp) | set(act)):
                    e, a = _norm(exp.get(key)), _norm(act.get(key))
                    if e != a:
                        report.differences.append(Difference(doc_id, table, key, e, a))
            if progress is not None:
                progress()
    return report
