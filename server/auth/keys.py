"""The Ed25519 key pair that signs access tokens.

Generated on first start and kept in ``keys_dir`` (default ``var/keys``)::

    keys_dir/              mode 0700
        signing-ed25519.pem    PKCS#8 private key, mode 0600 (the signing key)
        *.pub.pem              optional extra public keys still accepted for verification
                               (the previous key during a rotation)

Every server process of a deployment must see the same ``keys_dir`` (or a copy of it). A
token names its key in the ``kid`` header (a thumbprint of the public key), so a rotation is:
move the old private key's public half to ``old.pub.pem``, delete the private key, restart.

Creating the key is race-free between processes starting at once: the key is written to a
temporary file and hard-linked into place, so a second process either sees no file or a
complete one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["KeySet", "load_or_create_keys", "SIGNING_KEY_FILE", "key_id"]

log = logging.getLogger("server.auth.keys")

SIGNING_KEY_FILE = "signing-ed25519.pem"


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:12]).decode().rstrip("=")


@dataclass(frozen=True)
class KeySet:
    private_key: Ed25519PrivateKey
    kid: str
    #: kid -> public key, the signing key's own public key included
    verify_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _ensure_private(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~mode:
        log.warning("%s had mode %o; tightening to %o", path, current, mode)
        os.chmod(path, mode)


def _create(path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, fails if another process won the race
            log.info("generated a new token signing key in %s", path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_keys(keys_dir: str | os.PathLike[str]) -> KeySet:
    """Load the signing key from ``keys_dir``, generating it (mode 0600) if absent."""
    d = Path(keys_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    _ensure_private(d, 0o700)
    path = d / SIGNING_KEY_FILE
    if not path.exists():
        _create(path)
    _ensure_private(path, 0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    kid = key_id(key.public_key())
    verify: dict[str, Ed25519PublicKey] = {kid: key.public_key()}
    for extra in sorted(d.glob("*.pub.pem")):
        pub = serialization.load_pem_public_key(extra.read_bytes())
        if isinstance(pub, Ed25519PublicKey):
            verify[key_id(pub)] = pub
        else:
            log.warning("ignoring %s: not an Ed25519 public key", extra)
    return KeySet(key, kid, verify)
