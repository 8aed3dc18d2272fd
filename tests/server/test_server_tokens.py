"""Access tokens that must be refused, keys on disk, password hashing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.auth import passwords
from server.auth.keys import SIGNING_KEY_FILE, load_or_create_keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _raw_token(header: dict, claims: dict, sign) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _claims_of(session) -> dict:
    return jwt.decode(session.access_token, options={"verify_signature": False})


def _sign(harness, claims: dict) -> str:
    keys = harness.app.state.keys
    return jwt.encode(claims, keys.private_key, algorithm="EdDSA", headers={"kid": keys.kid})


def _expired(harness, claims):
    now = int(time.time())
    return _sign(harness, {**claims, "iat": now - 3600, "nbf": now - 3600, "exp": now - 1800})


def _other_key(harness, claims):
    other = Ed25519PrivateKey.generate()
    return jwt.encode(claims, other, algorithm="EdDSA", headers={"kid": harness.app.state.keys.kid})


def _alg_none(harness, claims):
    return _raw_token({"alg": "none", "typ": "JWT", "kid": harness.app.state.keys.kid}, claims, lambda _: b"")


def _hs256_public_pem(harness, claims):
    secret = harness.app.state.keys.public_pem()
    return _raw_token({"alg": "HS256", "typ": "JWT", "kid": harness.app.state.keys.kid}, claims,
                      lambda m: hmac.new(secret, m, hashlib.sha256).digest())


def _hs256_public_raw(harness, claims):
    secret = harness.app.state.keys.public_key.public_bytes(serialization.Encoding.Raw,
                                                            serialization.PublicFormat.Raw)
    return _raw_token({"alg": "HS256", "typ": "JWT"}, claims, lambda m: hmac.new(secret, m, hashlib.sha256).digest())


def _wrong_audience(harness, claims):
    return _sign(harness, {**claims, "aud": "someone-else"})


def _wrong_issuer(harness, claims):
    return _sign(harness, {**claims, "iss": "evil"})


def _no_device(harness, claims):
    return _sign(harness, {k: v for k, v in claims.items() if k != "dev"})


def _not_access(harness, claims):
    return _sign(harness, {**claims, "typ": "refresh"})


def _tampered_payload(harness, claims):
    good = _sign(harness, claims)
    h, _, s = good.split(".")
    return f"{h}.{_b64(json.dumps({**claims, 'role': 'owner'}).encode())}.{s}"


BAD_TOKENS = {
    "expired": (_expired, "TOKEN_EXPIRED"),
    "signed_with_another_key": (_other_key, "INVALID_TOKEN"),
    "alg_none": (_alg_none, "INVALID_TOKEN"),
    "hs256_with_public_pem": (_hs256_public_pem, "INVALID_TOKEN"),
    "hs256_with_raw_public_key": (_hs256_public_raw, "INVALID_TOKEN"),
    "wrong_audience": (_wrong_audience, "INVALID_TOKEN"),
    "wrong_issuer": (_wrong_issuer, "INVALID_TOKEN"),
    "no_device_claim": (_no_device, "INVALID_TOKEN"),
    "not_an_access_token": (_not_access, "INVALID_TOKEN"),
    "tampered_payload": (_tampered_payload, "INVALID_TOKEN"),
}


async def test_a_token_built_like_the_bad_ones_but_valid_is_accepted(harness):
    """Control: the forging helpers produce tokens the server accepts when nothing is wrong."""
    s = await harness.user_session("crew")
    token = _sign(harness, _claims_of(s))
    r = await harness.client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_bad_access_tokens_are_refused_and_audited(harness, kind):
    s = await harness.user_session("crew")
    make, code = BAD_TOKENS[kind]
    token = make(harness, _claims_of(s))
    r = await harness.client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == code
    audit = await harness.audit_rows()
    assert [(a["action"], a["user_id"], a["ip"]) for a in audit] == [("GET /api/auth/me", None, "127.0.0.1")]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not.a.jwt", "Bearer " + "x" * 50])
async def test_malformed_authorization_headers_are_401(harness, header):
    r = await harness.client.get("/api/auth/me", headers={"Authorization": header})
    assert r.status_code == 401 and r.json()["error"]["code"] in ("INVALID_TOKEN", "UNAUTHENTICATED")


async def test_no_credentials_is_401_and_audited(harness):
    r = await harness.client.get("/api/sync/status")
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
    audit = await harness.audit_rows()
    assert len(audit) == 1 and audit[0]["action"] == "GET /api/sync/status" and audit[0]["user_id"] is None


async def test_the_signing_key_is_private_and_survives_restarts(make_harness, tmp_path):
    first = await make_harness()
    s = await first.user_session("office")
    key_file = tmp_path / "keys" / SIGNING_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    same_keys = await make_harness()
    assert (await same_keys.client.get("/api/auth/me", headers=s.headers)).status_code == 200
    other_keys = await make_harness(keys_dir=tmp_path / "other-keys")
    r = await other_keys.client.get("/api/auth/me", headers=s.headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "INVALID_TOKEN"


def test_load_or_create_keys_tightens_a_loose_key_file(tmp_path):
    ks = load_or_create_keys(tmp_path)
    os.chmod(tmp_path / SIGNING_KEY_FILE, 0o644)
    again = load_or_create_keys(tmp_path)
    assert again.kid == ks.kid
    assert stat.S_IMODE(os.stat(tmp_path / SIGNING_KEY_FILE).st_mode) == 0o600


def test_passwords_are_argon2id_with_owasp_parameters():
    h = passwords.hash_password("s3cret password")
    assert h.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify_password(h, "s3cret password")
    assert not passwords.verify_password(h, "s3cret passworD")
    assert not passwords.verify_password("not a hash", "s3cret password")
    assert not passwords.needs_rehash(h)
    from argon2 import PasswordHasher
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("x")
    assert passwords.needs_rehash(weak)
    assert passwords.verify_dummy("anything") is False
