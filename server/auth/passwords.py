"""Password hashing: argon2id with the OWASP minimum parameters (m=19 MiB, t=2, p=1).

Hashes are self-describing (``$argon2id$v=19$m=19456,t=2,p=1$...``), so stronger parameters
can be introduced later: :func:`needs_rehash` tells the login route to re-hash on success.
"""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["HASHER", "MAX_PASSWORD_CHARS", "MIN_PASSWORD_CHARS", "hash_password", "verify_password",
           "needs_rehash", "verify_dummy"]

HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)
MIN_PASSWORD_CHARS = 8
#: bounds the work one login request can cause
MAX_PASSWORD_CHARS = 1024


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (random salt)."""
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches; False (never an exception) for a wrong or corrupt hash."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with other parameters than :data:`HASHER`'s."""
    try:
        return HASHER.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return HASHER.hash("not a real password: equalizes login timing")


def verify_dummy(password: str) -> bool:
    """Spend the time of one verification, for logins of unknown users; always False."""
    verify_password(_dummy_hash(), password)
    return False
