"""A ``syncd.protocol.SyncTransport`` over the server's HTTP sync routes (httpx).

    async with httpx.AsyncClient(base_url="http://127.0.0.1:8000") as client:
        transport = HttpTransport(client, token=access_token)
        report = await replica.sync(transport)

Besides the protocol's ``push``/``pull``/``list_docs`` it offers the batch pulls
``replica.sync.pull`` prefers (see ``replica.sync.BatchPullTransport``):

* ``pull_many(requests)``: ``POST /api/sync/pull {"docs": [...]}``, in chunks of at most
  ``server.sync_routes.MAX_PULL_DOCS`` documents;
* ``pull_listed(known)``: ``POST /api/sync/pull {"all": true, "docs": <known>}``, page after
  page: every document the server lists for this device, pulled with the device's state
  vector and cursor where it holds the document, from empty otherwise. A device syncing from
  empty needs one request (per page of ``page_size`` documents) instead of a status walk plus
  one request per document.

An error answer becomes the matching ``syncd.errors.SyncError`` (by ``error.code``; an API
error such as ``UNAUTHENTICATED`` or ``RATE_LIMITED`` becomes a ``SyncError`` carrying that
code and status), raised by the single-document calls and returned in place of a
``PullResult`` by the batch ones.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from syncd import errors as E
from syncd.protocol import PullResult, PushAck

__all__ = ["HttpTransport", "PULL_CHUNK", "KNOWN_CHUNK"]

#: documents per ``POST /api/sync/pull`` (the server's ``MAX_PULL_DOCS``)
PULL_CHUNK = 200
#: most held documents sent with one ``all`` page (the server's ``MAX_KNOWN_DOCS``)
KNOWN_CHUNK = 1000

_BY_CODE: dict[str, type[E.SyncError]] = {c.code: c for c in E.SyncError.__subclasses__()}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sync_error(status: int, body: Any) -> E.SyncError:
    """The ``SyncError`` of an error envelope (``{"error": {"code", "message", "details"}}``)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"code": "HTTP_ERROR", "message": f"HTTP {status}", "details": []}
    code = str(err.get("code") or "HTTP_ERROR")
    cls = _BY_CODE.get(code)
    e = (cls or E.SyncError)(str(err.get("message") or code), err.get("details"))
    if cls is None:  # an API error (401, 422, 429...): keep what the server said
        e.code, e.status = code, status
    return e


def _result(d: dict[str, Any]) -> PullResult:
    return PullResult(d["doc_id"], base64.b64decode(d["update"]), d["seq"], d["server_time"])


class HttpTransport:
    """One signed-in device talking to ``/api/sync/*`` through ``client``.

    ``token``: a bearer access token (else ``client`` must already authenticate, e.g. with
    default headers). ``page_size``: documents per page of :meth:`pull_listed`.
    """

    def __init__(self, client: httpx.AsyncClient, token: str | None = None, *, page_size: int = 100) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.page_size = max(1, min(page_size, PULL_CHUNK))

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.client.request(method, path, headers=self.headers, **kw)
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200:
            raise sync_error(r.status_code, body)
        return body

    # --- SyncTransport -------------------------------------------------------------------

    async def push(self, doc_id: str, update: bytes) -> PushAck:
        d = (await self._call("POST", "/api/sync/push", json={"doc_id": doc_id, "update": _b64(update)}))["data"]
        return PushAck(d["doc_id"], d["seq"], d["duplicate"], d["server_time"])

    async def pull(self, doc_id: str, state_vector: bytes, since_seq: int | None) -> PullResult:
        params: dict[str, Any] = {"doc_id": doc_id, "state_vector": base64.urlsafe_b64encode(state_vector).decode()}
        if since_seq is not None:
            params["since"] = since_seq
        return _result((await self._call("GET", "/api/sync/pull", params=params))["data"])

    async def list_docs(self) -> list[str]:
        out: list[str] = []
        after = None
        while True:
            body = await self._call("GET", "/api/sync/status",
                                    params={"limit": 1000, **({"after": after} if after else {})})
            out += [d["doc_id"] for d in body["data"]["docs"]]
            after = body["meta"].get("next_cursor")
            if not after:
                return out

    # --- batch pulls -------------------------------------------------------------------------

    @staticmethod
    def _entry(doc_id: str, state_vector: bytes | None, since_seq: int | None) -> dict[str, Any]:
        e: dict[str, Any] = {"doc_id": doc_id}
        if state_vector and state_vector != b"\x00":
            e["state_vector"] = _b64(state_vector)
        if since_seq is not None:
            e["since"] = since_seq
        return e

    @staticmethod
    def _answers(results: list[dict[str, Any]]) -> list[PullResult | E.SyncError]:
        return [sync_error(x.get("status", 400), x) if "error" in x else _result(x) for x in results]

    async def pull_many(self, requests: list[tuple[str, bytes | None, int | None]]) -> list[PullResult | E.SyncError]:
        """One answer per ``(doc_id, state_vector, since_seq)``, in order (a chunk the server
        refuses as a whole answers each of its documents with that error)."""
        out: list[PullResult | E.SyncError] = []
        for k in range(0, len(requests), PULL_CHUNK):
            chunk = requests[k:k + PULL_CHUNK]
            try:
                body = await self._call("POST", "/api/sync/pull", json={"docs": [self._entry(*r) for r in chunk]})
            except E.SyncError as e:
                out += [e] * len(chunk)
                continue
            out += self._answers(body["data"]["results"])
        return out

    async def pull_listed(self, known: dict[str, tuple[bytes | None, int | None]]
                          ) -> tuple[list[str], list[PullResult | E.SyncError]]:
        """Every document the server lists for this device, pulled: ``(listed ids, answers)``.
        ``known``: doc_id -> (state vector, cursor) of the documents the device holds. A
        failing page raises (the listing would be incomplete)."""
        held = sorted(known)
        listed: list[str] = []
        answers: list[PullResult | E.SyncError] = []
        after: str | None = None
        while True:
            start = 0 if after is None else next((i for i, d in enumerate(held) if d > after), len(held))
            body: dict[str, Any] = {"all": True, "limit": self.page_size,
                                    "docs": [self._entry(d, *known[d]) for d in held[start:start + KNOWN_CHUNK]]}
            if after is not None:
                body["after"] = after
            page = await self._call("POST", "/api/sync/pull", json=body)
            results = page["data"]["results"]
            listed += [x["doc_id"] for x in results]
            answers += self._answers(results)
            after = page["meta"].get("next_cursor")
            if not after:
                return listed, answers
