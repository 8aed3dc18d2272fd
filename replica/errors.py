"""Errors raised by the device replica.

    ReplicaError                 base
    ├── UnknownRecord            no such customer, job or material on this device (LookupError)
    ├── NotAllowed               the signed-in role may not make this change (the server would
    │                            refuse it and block the outbox behind it)
    └── IntegrityError           a received update could not be integrated completely; the
                                 document was rebuilt from the store and nothing was stored
        └── NotIntegrable        it depends on content this device lacks: not applied at all

Invalid field values raise ``schema.models.FieldError`` (a ValueError) before anything is
written; transport failures are ``syncd.errors.SyncError`` and are reported, not raised, by
``push``/``pull``.
"""

from __future__ import annotations

__all__ = ["ReplicaError", "UnknownRecord", "NotAllowed", "IntegrityError", "NotIntegrable"]


class ReplicaError(Exception):
    """Base of the replica's own errors."""


class UnknownRecord(ReplicaError, LookupError):
    """The record (or document) is not on this device."""


class NotAllowed(ReplicaError, PermissionError):
    """The signed-in user's role may not make this change."""


class IntegrityError(ReplicaError):
    """A remote update would leave (or left) the document short of content."""


class NotIntegrable(IntegrityError):
    """A remote update depends on content this device lacks; it was not applied at all."""

    def __init__(self, doc_id: str, missing: list[str]) -> None:
        self.doc_id = doc_id
        self.missing = missing
        super().__init__(f"{doc_id}: the update depends on content this device lacks ({', '.join(missing[:5])})")
