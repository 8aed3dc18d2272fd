"""The Python device replica: pycrdt documents persisted in SQLite, edited offline first.

    replica = await Replica.open("device.db", user_id=..., role="crew")
    job_id = await replica.create_job(customer_id, "Kitchen remodel")
    await replica.add_material(job_id, "2x4 studs", quantity=20)
    report = await replica.sync(transport)      # any syncd.protocol.SyncTransport

Modules: ``store`` (SQLite), ``crdt`` (pycrdt plumbing), ``clock`` (HLC persistence),
``identity``, ``core`` (documents + store + clock), ``replica`` (domain API), ``views``
(resolved dicts), ``sync`` (push/pull, batched when the transport offers it), ``http`` (the
HTTP transport: ``replica.http.HttpTransport``), ``errors``.
"""

from .core import COMPACT_AFTER
from .crdt import LOCAL_ORIGIN, REMOTE_ORIGIN, RESTORE_ORIGIN
from .errors import IntegrityError, NotAllowed, NotIntegrable, ReplicaError, UnknownRecord
from .identity import Identity
from .replica import Replica
from .store import Store
from .sync import PullReport, PushReport, SyncReport

__all__ = [
    "Replica",
    "Identity",
    "Store",
    "PushReport",
    "PullReport",
    "SyncReport",
    "ReplicaError",
    "UnknownRecord",
    "NotAllowed",
    "IntegrityError",
    "NotIntegrable",
    "LOCAL_ORIGIN",
    "REMOTE_ORIGIN",
    "RESTORE_ORIGIN",
    "COMPACT_AFTER",
]
