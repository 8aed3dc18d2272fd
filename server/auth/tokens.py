"""Access tokens (signed JWT) and refresh tokens (opaque, stored hashed).

Access token: EdDSA (Ed25519) JWT, 15 minutes, header ``kid``; claims::

    iss, aud, iat, nbf, exp, jti
    sub   user id            role  the user's role when issued
    dev   device id          fam   refresh-token family (logout / reuse revokes it)
    typ   "access"

Verification pins ``algorithms=["EdDSA"]``: a token with ``alg: none``, or HS256 "signed"
with our public key as the HMAC secret, is refused before any key is used. It also checks
``exp``, ``iss``, ``aud`` and requires every claim above. Whether the user is still active,
still has that role and the family is not revoked is checked against the database by
:mod:`server.auth.sessions`.

Verified access tokens are remembered (:class:`TokenService`, bounded, whole token string ->
claims): a token seen before skips the Ed25519 verification and the claim checks, which
cannot change for the same bytes, but its expiry is checked again on every use. Only tokens
that passed every check are remembered, so a forged or tampered token is always verified.

Refresh token: ``secrets.token_urlsafe(32)`` followed by ``.`` and the device id. Only its
sha256 is stored (``refresh_tokens.id``), so the device id is bound to the token by the
hash: a client cannot move a token to another device. (The table has no device column; the
suffix keeps the device without a schema change.)
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import jwt

from schema.documents import is_valid_device_id

from ..errors import Unauthorized
from .keys import KeySet

__all__ = ["ALGORITHM", "AccessClaims", "TokenService", "new_refresh_token", "refresh_token_hash",
           "refresh_token_device", "new_family_id", "new_device_id"]

ALGORITHM = "EdDSA"
_REQUIRED = ["iss", "aud", "iat", "exp", "sub", "role", "dev", "fam", "typ", "jti"]


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    role: str
    device_id: str
    family_id: str
    expires_at: int


class TokenService:
    """Signs and verifies access tokens with one :class:`KeySet`."""

    def __init__(self, keys: KeySet, *, issuer: str, audience: str, ttl_s: int, leeway_s: int = 5,
                 cache_size: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self.leeway_s = leeway_s
        self.cache_size = cache_size
        self.clock = clock
        #: token -> claims of tokens that passed :meth:`verify` (insertion order = eviction order)
        self._verified: dict[str, AccessClaims] = {}

    def issue(self, *, user_id: str, role: str, device_id: str, family_id: str,
              now: int | None = None) -> tuple[str, int]:
        """A signed access token and its expiry (unix seconds)."""
        iat = int(time.time()) if now is None else now
        exp = iat + self.ttl_s
        claims = {"iss": self.issuer, "aud": self.audience, "iat": iat, "nbf": iat, "exp": exp,
                  "jti": uuid.uuid4().hex, "sub": user_id, "role": role, "dev": device_id,
                  "fam": family_id, "typ": "access"}
        token = jwt.encode(claims, self.keys.private_key, algorithm=ALGORITHM,
                           headers={"kid": self.keys.kid, "typ": "JWT"})
        return token, exp

    def verify(self, token: str) -> AccessClaims:
        """Check signature, algorithm, expiry, issuer and audience; raise Unauthorized.

        A token that passed before is not verified again (same bytes, same result), except
        for its expiry, checked on every call exactly as PyJWT does (``exp <= now - leeway``).
        """
        claims = self._verified.get(token)
        if claims is not None:
            if claims.expires_at <= self.clock() - self.leeway_s:
                self._verified.pop(token, None)
                raise Unauthorized("the access token has expired; refresh it", code="TOKEN_EXPIRED")
            return claims
        claims = self._verify(token)
        if self.cache_size > 0:
            if len(self._verified) >= self.cache_size:
                self._evict()
            self._verified[token] = claims
        return claims

    def _evict(self) -> None:
        """Drop expired entries; if none, the oldest quarter (insertion order)."""
        cutoff = self.clock() - self.leeway_s
        expired = [t for t, c in self._verified.items() if c.expires_at <= cutoff]
        if not expired:
            expired = list(itertools.islice(self._verified, max(1, self.cache_size // 4)))
        for t in expired:
            del self._verified[t]

    def forget(self) -> None:
        """Forget every remembered token (tests, key changes)."""
        self._verified.clear()

    def _verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the access token is malformed", code="INVALID_TOKEN") from None
        key = self.keys.verify_keys.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
        if key is None:
            # unknown or missing kid: try the signing key so the error says "bad signature"
            key = self.keys.public_key
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway_s, options={"require": _REQUIRED})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the access token has expired; refresh it", code="TOKEN_EXPIRED") from None
        except jwt.PyJWTError as e:
            raise Unauthorized(f"the access token is not valid ({type(e).__name__})", code="INVALID_TOKEN") from None
        if claims.get("typ") != "access":
            raise Unauthorized("not an access token", code="INVALID_TOKEN")
        for name in ("sub", "role", "dev", "fam"):
            if not isinstance(claims.get(name), str) or not claims[name]:
                raise Unauthorized(f"the access token has no valid {name!r} claim", code="INVALID_TOKEN")
        if not is_valid_device_id(claims["dev"]):
            raise Unauthorized("the access token names an invalid device", code="INVALID_TOKEN")
        return AccessClaims(claims["sub"], claims["role"], claims["dev"], claims["fam"], int(claims["exp"]))


def new_family_id() -> str:
    return secrets.token_urlsafe(24)


def new_device_id() -> str:
    """A fresh device id (22 URL-safe characters, valid in document write keys)."""
    return secrets.token_urlsafe(16)


def new_refresh_token(device_id: str) -> str:
    return f"{secrets.token_urlsafe(32)}.{device_id}"


def refresh_token_hash(token: str) -> str:
    """The stored form of a refresh token (hex sha256, 64 characters)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def refresh_token_device(token: str) -> str | None:
    """The device a (well-formed) refresh token was issued to; trust only after lookup by hash."""
    secret, sep, device = token.rpartition(".")
    if not sep or len(secret) < 32 or not is_valid_device_id(device):
        return None
    return device
