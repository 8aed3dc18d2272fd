"""Run updates through the real Yjs (Node) and compare with what Python produced.

The JavaScript side is ``tests/yjs_ref/apply.mjs`` with Yjs and lib0 pinned exactly in
``tests/yjs_ref/package.json`` / ``package-lock.json`` (``node_modules`` is not committed;
:func:`ensure_installed` runs ``npm ci`` the first time).

API::

    yjs_available() -> bool                 # node + (node_modules or npm) present
    require_yjs()                           # in a test: skip (locally) / fail (CI=="true")
    ensure_installed()                      # npm ci in tests/yjs_ref if needed (locked)
    yjs_apply(sessions, roots=DEFAULT_ROOTS) -> list[dict]     # one node process per call
    with YjsProcess() as yjs:               # one long-lived node process
        yjs.apply(sessions, roots=...) -> list[dict]
        yjs.apply_one(updates, roots=...) -> dict

``sessions`` is a list of sessions, a session is the list of update bytes (Yjs v1 encoding)
applied in the given order to a fresh ``Y.Doc``. Each result dict has:

    state_vector: bytes      Y.encodeStateVector(doc)
    state: bytes             Y.encodeStateAsUpdate(doc)
    json: dict               {root: doc.getMap(root).toJSON()} (see ``roots``)
    pending: bool            Yjs still holds structs / deletes it could not integrate
    pending_missing: dict[int, int] | None   for pending structs: client -> clock awaited
    clocks: dict[int, int]   decoded state vector (client -> next clock)
    error: str | None        message if Y.applyUpdate threw (later updates not applied)
    error_index: int | None  index of the update that threw

Roots are names of Y.Map roots; ``"name:array"``, ``"name:text"``, ``"name:xml"`` select
another type. In ``json``, Yjs byte values come back as ``bytes`` and every number as a
``float`` (a JS number is a double; pycrdt's ``to_py`` also returns floats), so it compares
directly with ``Map.to_py()``; :func:`normalize` makes any other Python value comparable.

Importing: ``tests/`` must be on ``sys.path`` (pytest's default ``prepend`` import mode does it
for test modules in ``tests/``; ``pythonpath = [".", "tests"]`` in pytest's config makes it
explicit).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import fcntl
import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = [
    "DEFAULT_ROOTS",
    "REF_DIR",
    "YjsError",
    "YjsProcess",
    "decode_state_vector",
    "ensure_installed",
    "normalize",
    "require_yjs",
    "yjs_apply",
    "yjs_available",
]

REF_DIR = Path(__file__).resolve().parent / "yjs_ref"
SCRIPT = REF_DIR / "apply.mjs"
DEFAULT_ROOTS: tuple[str, ...] = ("fields", "materials", "notes")
PINNED = {"yjs": "13.6.33", "lib0": "0.2.120"}
_BYTES_TAG = "__bytes_b64__"
_BIGINT_TAG = "__bigint__"


class YjsError(RuntimeError):
    """The Node side failed (missing install, crash, malformed request, timeout)."""


# --- availability / installation ------------------------------------------------------------


def _node() -> str | None:
    return shutil.which("node")


def _npm() -> str | None:
    return shutil.which("npm")


def _installed_ok() -> bool:
    for name, version in PINNED.items():
        pj = REF_DIR / "node_modules" / name / "package.json"
        try:
            if json.loads(pj.read_text())["version"] != version:
                return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def yjs_available() -> bool:
    """True if Node is installed and the pinned packages are installed or installable."""
    return _node() is not None and (_installed_ok() or _npm() is not None)


def ensure_installed(timeout: float = 300.0) -> None:
    """Install the pinned packages with ``npm ci`` unless they already are (process-safe)."""
    if _installed_ok():
        return
    npm = _npm()
    if npm is None or _node() is None:
        raise YjsError("node/npm not found on PATH: cannot install the Yjs reference packages")
    # The lock lives outside the repository; it is never removed (unlinking a flock file races).
    tag = hashlib.sha1(str(REF_DIR).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"yjs-ref-install-{tag}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers install once
        try:
            if _installed_ok():
                return
            proc = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=REF_DIR,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if proc.returncode != 0 or not _installed_ok():
                raise YjsError(
                    f"npm ci failed in {REF_DIR} (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def require_yjs() -> None:
    """Make the Yjs harness usable, or skip the calling test (fail it when ``CI == "true"``).

    In CI a missing Node is a broken environment, never a reason to skip.
    """
    import pytest

    in_ci = os.environ.get("CI") == "true"
    reason = None
    if not yjs_available():
        reason = "node/npm not found on PATH (needed for the Yjs reference harness)"
    else:
        try:
            ensure_installed()
        except (YjsError, OSError, subprocess.SubprocessError) as e:
            reason = f"cannot install the Yjs reference packages: {e}"
    if reason is not None:
        if in_ci:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


# --- encoding -----------------------------------------------------------------------------


def _request(sessions: Sequence[Sequence[bytes]], roots: Iterable[str] | None, req_id: Any = None) -> dict:
    req: dict[str, Any] = {
        "sessions": [{"updates": [base64.b64encode(bytes(u)).decode("ascii") for u in s]} for s in sessions]
    }
    if roots is not None:
        req["roots"] = list(roots)
    if req_id is not None:
        req["id"] = req_id
    return req


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _BYTES_TAG in value:
            return base64.b64decode(value[_BYTES_TAG])
        if len(value) == 1 and _BIGINT_TAG in value:
            return int(value[_BIGINT_TAG])
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


def _loads(line: str | bytes) -> Any:
    # Every JS number is a double: parse integers as floats too (as pycrdt's to_py does), so
    # 32123892003852750 printed by JS compares equal to the float pycrdt returns.
    return json.loads(line, parse_int=float)


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


def _decode_result(r: dict) -> dict:
    return {
        "state_vector": base64.b64decode(r["state_vector"]),
        "state": base64.b64decode(r["state"]),
        "json": _untag(r["json"]),
        "pending": bool(r["pending"]),
        "pending_missing": None
        if r.get("pending_missing") is None
        else {int(k): int(v) for k, v in r["pending_missing"].items()},
        "clocks": {int(k): int(v) for k, v in r.get("clocks", {}).items()},
        "error": r.get("error"),
        "error_index": _int(r.get("error_index")),
    }


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Decode a Yjs v1 state vector (``varuint n, n x (varuint client, varuint clock)``)."""
    pos = 0

    def uint() -> int:
        nonlocal pos
        shift = 0
        out = 0
        while True:
            if pos >= len(sv):
                raise ValueError("truncated state vector")
            b = sv[pos]
            pos += 1
            out |= (b & 0x7F) << shift
            if b < 0x80:
                return out
            shift += 7
            if shift > 63:
                raise ValueError("varuint too long")

    n = uint()
    out: dict[int, int] = {}
    for _ in range(n):
        client = uint()
        out[client] = uint()
    if pos != len(sv):
        raise ValueError("trailing bytes after state vector")
    return out


def normalize(value: Any) -> Any:
    """Make pycrdt's and Yjs's JSON comparable: every number a float, bytearray -> bytes."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    return value


# --- one-shot ------------------------------------------------------------------------------


def yjs_apply(
    sessions: Sequence[Sequence[bytes]],
    roots: Iterable[str] = DEFAULT_ROOTS,
    *,
    timeout: float = 120.0,
) -> list[dict]:
    """Apply each session's updates, in order, to a fresh Y.Doc (one node process per call)."""
    ensure_installed()
    node = _node()
    if node is None:
        raise YjsError("node not found on PATH")
    payload = json.dumps(_request(sessions, roots))
    proc = subprocess.run(
        [node, str(SCRIPT)], cwd=REF_DIR, input=payload, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise YjsError(f"apply.mjs exited {proc.returncode}: {proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if len(lines) != len(sessions):
        raise YjsError(f"expected {len(sessions)} result lines, got {len(lines)}: {proc.stderr[-2000:]}")
    return [_decode_result(_loads(ln)) for ln in lines]


# --- long-lived process --------------------------------------------------------------------


class YjsProcess:
    """One ``node apply.mjs --serve`` process answering requests line by line.

    Use as a context manager (or call :meth:`start` / :meth:`close`). Not thread-safe: one
    request at a time. A session-scoped pytest fixture can share one instance::

        @pytest.fixture(scope="session")
        def yjs():
            yjs_reference.require_yjs()
            with yjs_reference.YjsProcess() as p:
                yield p
    """

    def __init__(self, *, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._next_id = 0
        self._threads: list[threading.Thread] = []

    # lifecycle
    def start(self) -> "YjsProcess":
        if self._proc is not None:
            return self
        ensure_installed()
        node = _node()
        if node is None:
            raise YjsError("node not found on PATH")
        self._proc = subprocess.Popen(
            [node, str(SCRIPT), "--serve"],
            cwd=REF_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = self._proc.stdout, self._proc.stderr
        assert out is not None and err is not None

        def pump_out() -> None:
            for line in iter(out.readline, b""):
                self._lines.put(line)
            self._lines.put(None)  # EOF

        def pump_err() -> None:
            for line in iter(err.readline, b""):
                self._stderr.append(line.decode("utf-8", "replace"))

        for target in (pump_out, pump_err):
            t = threading.Thread(target=target, name=f"yjs-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()  # the server exits at EOF
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for t in self._threads:
            t.join(timeout=timeout)
        self._threads.clear()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> "YjsProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _fail(self, msg: str) -> YjsError:
        tail = "".join(self._stderr)[-4000:]
        return YjsError(f"{msg}\n--- node stderr ---\n{tail}" if tail else msg)

    # requests
    def apply(self, sessions: Sequence[Sequence[bytes]], roots: Iterable[str] = DEFAULT_ROOTS) -> list[dict]:
        """Like :func:`yjs_apply`, through the long-lived process."""
        if self._proc is None:
            self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        self._next_id += 1
        req_id = self._next_id
        line = json.dumps(_request(sessions, roots, req_id), separators=(",", ":")).encode() + b"\n"
        try:
            proc.stdin.write(line)
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise self._fail(f"yjs process is gone (exit {proc.poll()}): {e}") from e
        while True:
            try:
                raw = self._lines.get(timeout=self.timeout)
            except queue.Empty:
                self.close(timeout=1.0)
                raise self._fail(f"no answer from the yjs process within {self.timeout}s") from None
            if raw is None:
                code = proc.wait()
                self._proc = None
                raise self._fail(f"yjs process exited ({code}) before answering")
            msg = _loads(raw)
            if msg.get("id") != float(req_id):
                continue  # a stale answer of a request that timed out earlier
            if "error" in msg:
                raise self._fail(f"yjs harness refused the request: {msg['error']}")
            results = msg["results"]
            if len(results) != len(sessions):
                raise self._fail(f"expected {len(sessions)} results, got {len(results)}")
            return [_decode_result(r) for r in results]

    def apply_one(self, updates: Sequence[bytes], roots: Iterable[str] = DEFAULT_ROOTS) -> dict:
        """Apply one session's updates (in order) to a fresh Y.Doc."""
        return self.apply([updates], roots)[0]
