"""Who a replica is: device, Yjs client id, user and role."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from schema.documents import is_valid_device_id

__all__ = ["Identity", "ROLES", "MAX_CLIENT_ID", "new_device_id", "new_client_id"]

ROLES = ("owner", "office", "crew")
#: Yjs client ids must stay exact in a JavaScript number.
MAX_CLIENT_ID = 2**53


def new_device_id() -> str:
    """A random device id over ``[A-Za-z0-9_-]`` (16 characters)."""
    return secrets.token_urlsafe(12)


def new_client_id() -> int:
    """A random Yjs client id in ``[1, 2**53)``, fixed for the life of an install."""
    return 1 + secrets.randbelow(MAX_CLIENT_ID - 1)


@dataclass(frozen=True, slots=True)
class Identity:
    """The replica's identity; the server verifies user and role on every push anyway."""

    device_id: str
    client_id: int
    user_id: str
    role: str

    def __post_init__(self) -> None:
        if not is_valid_device_id(self.device_id):
            raise ValueError(f"invalid device id {self.device_id!r}")
        if not (0 < self.client_id < MAX_CLIENT_ID):
            raise ValueError(f"Yjs client id out of range: {self.client_id}")
        if not isinstance(self.user_id, str) or not self.user_id:
            raise ValueError("user_id must be a non-empty string")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {self.role!r}")
