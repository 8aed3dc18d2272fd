"""Errors a caller of the sync engine can act on.

    SyncError                      (base: code, HTTP status, message, details)
    ├── MalformedUpdate      400   not a valid Yjs v1 update, or structurally hostile
    ├── UpdateTooLarge       413   over the size or decoding-cost bounds
    ├── SchemaViolation      422   a write that fails the domain schema
    ├── ClockSkew            422   a timestamp too far ahead of the server clock
    ├── Forbidden            403   the principal may not write this document or field
    ├── ClientIdConflict     409   the Yjs client id is bound to another device
    ├── MissingDependencies  409   the update builds on content the server lacks; re-send the
    │                              outbox in order (details carry the server's state vector)
    ├── UnknownDocument      404   no such document (pull of a doc never written)
    └── Unavailable          503   storage failed; nothing was acknowledged, retry
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SyncError",
    "MalformedUpdate",
    "UpdateTooLarge",
    "SchemaViolation",
    "ClockSkew",
    "Forbidden",
    "ClientIdConflict",
    "MissingDependencies",
    "UnknownDocument",
    "Unavailable",
]


class SyncError(Exception):
    code = "SYNC_ERROR"
    status = 400

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else []

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class MalformedUpdate(SyncError):
    code, status = "MALFORMED_UPDATE", 400


class UpdateTooLarge(SyncError):
    code, status = "UPDATE_TOO_LARGE", 413


class SchemaViolation(SyncError):
    code, status = "SCHEMA_VIOLATION", 422


class ClockSkew(SyncError):
    code, status = "CLOCK_SKEW", 422


class Forbidden(SyncError):
    code, status = "FORBIDDEN", 403


class ClientIdConflict(SyncError):
    code, status = "CLIENT_ID_CONFLICT", 409


class MissingDependencies(SyncError):
    code, status = "MISSING_DEPENDENCIES", 409


class UnknownDocument(SyncError):
    code, status = "UNKNOWN_DOCUMENT", 404


class Unavailable(SyncError):
    code, status = "UNAVAILABLE", 503
