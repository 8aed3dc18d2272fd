/** The sync engine against an in-memory fake of the server's HTTP sync API: outbox tracking,
 * acknowledgement, transient vs permanent refusals, pulls with state vectors, dropping
 * documents no longer visible, and restart from IndexedDB. */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import * as Y from "yjs";
import { addNote, parseKey, removeMaterial, rootMap, writeField, writeMaterialField } from "../src/doc/codec";
import { formatTs, parseTs } from "../src/rules/hlc";

// --- browser globals the engine uses (fake-indexeddb comes from tests/setup.ts) -------------
const store = new Map<string, string>();
const g = globalThis as any;
g.localStorage = {
  getItem: (k: string) => store.get(k) ?? null, setItem: (k: string, v: string) => void store.set(k, String(v)),
  removeItem: (k: string) => void store.delete(k), clear: () => store.clear(), key: (i: number) => [...store.keys()][i] ?? null,
  get length() { return store.size; },
};
Object.defineProperty(g.localStorage, "keys", { value: () => [...store.keys()] });
g.window ??= Object.assign(new EventTarget(), { location: { protocol: "http:", host: "test" } });
if (!("navigator" in g) || g.navigator === undefined) g.navigator = { onLine: true, userAgent: "vitest" };
g.location ??= { protocol: "http:", host: "test" };

const { SyncEngine } = await import("../src/sync/engine");
const { toBase64, fromBase64 } = await import("../src/lib/base64");
const { deleteAllDatabases } = await import("../src/lib/idb");

const USER = { id: "0c0c0c0c-0000-4000-8000-000000000002", email: "crew1@demo.test", name: "Cory", role: "crew" as const };
const SESSION = { access_token: "a", refresh_token: "r", csrf_token: "c", device_id: "dev-test-1", user: USER };
const JOB = "job:11111111-1111-4111-8111-111111111111";
const JOB2 = "job:22222222-2222-4222-8222-222222222222";

/** A fake server: one Y.Doc and a log head per document. */
class FakeServer {
  docs = new Map<string, { doc: Y.Doc; seq: number }>();
  pushes: any[] = [];
  refuse: ((item: any) => any) | null = null;
  down = false;
  /** answer POST /api/sync/pull (the batch form) like the server; false: 405 as an older server */
  batch = true;
  hidden = new Set<string>();
  clockMs = () => Date.now();
  serverTime = () => formatTs(this.clockMs(), 0);

  doc(id: string) {
    let d = this.docs.get(id);
    if (!d) this.docs.set(id, (d = { doc: new Y.Doc(), seq: 0 }));
    return d;
  }

  fetch = async (path: string, init: any = {}): Promise<Response> => {
    if (this.down) throw new TypeError("Failed to fetch");
    const url = new URL(path, "http://test");
    const json = (status: number, body: unknown) => new Response(JSON.stringify(body), { status });
    if (url.pathname === "/api/sync/push") {
      const body = JSON.parse(init.body);
      this.pushes.push(body);
      const results = body.updates.map((u: any) => {
        const refusal = this.refuse?.(u);
        if (refusal) return refusal;
        const d = this.doc(u.doc_id);
        Y.applyUpdate(d.doc, fromBase64(u.update));
        d.seq++;
        return { doc_id: u.doc_id, seq: d.seq, duplicate: false, server_time: this.serverTime() };
      });
      return json(200, { data: { results }, meta: {} });
    }
    if (url.pathname === "/api/sync/status") {
      const docs = [...this.docs].filter(([id]) => !this.hidden.has(id)).map(([doc_id, d]) => ({ doc_id, seq: d.seq }));
      return json(200, { data: { docs, server_time: this.serverTime() }, meta: {} });
    }
    if (url.pathname === "/api/sync/pull" && init.method === "POST") {
      if (!this.batch) return new Response("Method Not Allowed", { status: 405 });
      const body = JSON.parse(init.body);
      const results = body.docs.map((it: any) => {
        const d = this.docs.get(it.doc_id);
        if (!d || this.hidden.has(it.doc_id)) return { doc_id: it.doc_id, status: 404, error: { code: "UNKNOWN_DOCUMENT", message: "no", details: [] } };
        const update = Y.encodeStateAsUpdate(d.doc, it.state_vector ? fromBase64(it.state_vector) : undefined);
        return { doc_id: it.doc_id, update: toBase64(update), seq: d.seq, server_time: this.serverTime() };
      });
      return json(200, { data: { device_id: "dev-test-1", server_time: this.serverTime(), results }, meta: {} });
    }
    if (url.pathname === "/api/sync/pull") {
      const d = this.docs.get(url.searchParams.get("doc_id")!);
      if (!d) return json(404, { error: { code: "UNKNOWN_DOCUMENT", message: "no", details: [] } });
      const sv = url.searchParams.get("state_vector");
      const update = Y.encodeStateAsUpdate(d.doc, sv ? fromBase64(sv) : undefined);
      return json(200, { data: { doc_id: url.searchParams.get("doc_id"), update: toBase64(update), seq: d.seq, server_time: this.serverTime() }, meta: {} });
    }
    return json(404, { error: { code: "NOT_FOUND", message: path, details: [] } });
  };
}

let server: FakeServer;
let engines: Awaited<ReturnType<typeof SyncEngine.start>>[] = [];

async function start() {
  const e = await SyncEngine.start(SESSION, () => {}, () => {}, { websocket: false, pollMs: 3_600_000 });
  engines.push(e);
  return e;
}

beforeEach(() => {
  store.clear();
  localStorage.setItem("fieldsync.session", JSON.stringify(SESSION));
  server = new FakeServer();
  vi.stubGlobal("fetch", server.fetch);
});

afterEach(async () => {
  for (const e of engines) await e.stop();
  engines = [];
  await deleteAllDatabases([`fieldsync-doc:${JOB}`, `fieldsync-doc:${JOB2}`]);
  vi.unstubAllGlobals();
});

/** Wait until `check()` holds (polled every few ms; fails after 5 s): a condition, never a fixed delay. */
async function until(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const end = Date.now() + 5_000;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Two jobs the office wrote on the server ("one", "two"), that the device does not have yet. */
function seedTwoJobs(): void {
  for (const [id, title] of [[JOB, "one"], [JOB2, "two"]] as const) {
    writeField(server.doc(id).doc, "title", title, { ts: "1700000000000.00000", device: "d", author: "u", role: "office" });
    server.doc(id).seq = 2;
  }
}

describe("sync engine", () => {
  it("queues local edits until the server acknowledges them", async () => {
    const e = await start();
    await e.syncNow();
    e.edit(JOB, (doc, s) => writeField(doc, "title", "Kitchen", s));
    e.edit(JOB, (doc, s) => writeField(doc, "status", "scheduled", s));
    expect(e.state.pending).toBe(2);
    expect(e.view(JOB)!.record).toEqual({ title: "Kitchen", status: "scheduled" }); // applied at once
    await e.syncNow();
    expect(e.state.pending).toBe(0);
    expect(server.pushes.flatMap((p) => p.updates.map((u: any) => u.doc_id))).toEqual([JOB, JOB]);
    const keys = [...rootMap(server.doc(JOB).doc, "fields").keys()].sort();
    expect(keys).toHaveLength(2);
    expect(keys.every((k) => k.endsWith("/dev-test-1"))).toBe(true); // written as this device
    const entry = rootMap(server.doc(JOB).doc, "fields").get(keys[0]!) as any;
    expect([entry.a, entry.r]).toEqual([USER.id, "crew"]); // and this user and role
    expect(e.state.online).toBe(true);
    expect(e.state.lastSync).not.toBeNull();
  });

  it("keeps updates after a transient refusal and sends them in order later", async () => {
    const e = await start();
    e.edit(JOB, (doc, s) => writeField(doc, "title", "A", s));
    e.edit(JOB, (doc, s) => writeField(doc, "title", "B", s));
    server.refuse = () => ({ doc_id: JOB, status: 409, error: { code: "MISSING_DEPENDENCIES", message: "later", details: [] } });
    await e.syncNow();
    expect(e.state.pending).toBe(2);
    server.refuse = null;
    await e.syncNow();
    expect(e.state.pending).toBe(0);
    expect(server.pushes.at(-1).updates).toHaveLength(2);
    const fields = rootMap(server.doc(JOB).doc, "fields");
    expect([...fields.values()].map((v: any) => v.v)).toEqual(["B"]);
  });

  it("goes offline on network errors and keeps everything", async () => {
    const e = await start();
    server.down = true;
    e.edit(JOB, (doc, s) => writeField(doc, "title", "offline", s));
    await e.syncNow();
    expect(e.state.online).toBe(false);
    expect(e.state.pending).toBe(1);
    server.down = false;
    await e.syncNow();
    expect(e.state).toMatchObject({ online: true, pending: 0 });
  });

  it("stops the live reconnect loops while offline and resumes them after the next sync", async () => {
    const e = await start();
    const calls: string[] = [];
    const fakeProvider = (id: string) => ({
      shouldConnect: true, wsconnected: true,
      disconnect() { this.shouldConnect = false; this.wsconnected = false; calls.push(`disconnect ${id}`); },
      connect() { this.shouldConnect = true; calls.push(`connect ${id}`); },
      destroy: () => undefined, _updateHandler: () => undefined,
    });
    // one sync round of its own each time (not folded into a round already running, e.g.
    // one started by the engine itself: its rerun would be dropped if that round failed)
    const round = async () => {
      await until(() => !e.state.syncing, "no sync round running");
      await e.syncNow();
    };
    const a = e.open(JOB), b = e.open(JOB2);
    await Promise.all([a.ready, b.ready]);
    a.ws = fakeProvider("a") as any;
    b.ws = fakeProvider("b") as any;
    // the browser says the network is gone
    window.dispatchEvent(new Event("offline"));
    expect(calls.sort()).toEqual(["disconnect a", "disconnect b"]);
    expect(e.state).toMatchObject({ online: false, live: 0 });
    // a failed HTTP round does not restart them
    server.down = true;
    await round();
    expect(calls).toHaveLength(2);
    // the next successful round resumes them (live sync offered by the server)
    server.down = false;
    (e as any).opts.websocket = true;
    (e as any).state.wsAvailable = true;
    await round();
    expect(calls.slice(2).sort()).toEqual(["connect a", "connect b"]);
    // a network error found by a sync round pauses them too
    calls.length = 0;
    server.down = true;
    await round();
    expect(calls.sort()).toEqual(["disconnect a", "disconnect b"]);
    a.ws = null;
    b.ws = null;
  });

  it("drops a document's changes the server refuses for good and tells the user", async () => {
    const e = await start();
    e.edit(JOB, (doc, s) => writeField(doc, "title", "ok", s));
    e.edit(JOB2, (doc, s) => writeField(doc, "title", "bad", s));
    server.refuse = (u) => (u.doc_id === JOB2 ? { doc_id: JOB2, status: 422, error: { code: "SCHEMA_VIOLATION", message: "nope", details: [] } } : null);
    await e.syncNow();
    await until(() => e.state.pending === 0 && e.state.notices.length > 0, "the refused change undone");
    expect(e.state.notices.join(" ")).toMatch(/SCHEMA_VIOLATION/);
    expect(e.docIds()).toEqual([JOB]);
    expect(e.view(JOB)!.record["title"]).toBe("ok");
  });

  it("pulls what others wrote with its state vector, once per new log head", async () => {
    const other = new Y.Doc();
    writeField(other, "title", "From office", { ts: "1700000000000.00000", device: "dev-office", author: "u-office", role: "office" });
    server.doc(JOB).doc.transact(() => Y.applyUpdate(server.doc(JOB).doc, Y.encodeStateAsUpdate(other)));
    server.doc(JOB).seq = 3;
    const e = await start();
    await e.syncNow();
    expect(e.view(JOB)!.record["title"]).toBe("From office");
    const pulls = vi.fn(server.fetch);
    vi.stubGlobal("fetch", pulls);
    await e.syncNow();
    expect(pulls.mock.calls.map((c) => String(c[0])).filter((u) => u.includes("/pull"))).toEqual([]);
  });

  it("pulls every document it lacks in one batch request when the server offers it", async () => {
    seedTwoJobs();
    const calls = vi.fn(server.fetch);
    vi.stubGlobal("fetch", calls);
    const e = await start();
    await e.syncNow();
    const pulls = calls.mock.calls.filter((c) => String(c[0]).includes("/pull"));
    expect(pulls.map((c) => [String(c[0]), c[1]?.method])).toEqual([["/api/sync/pull", "POST"]]);
    expect(JSON.parse(pulls[0]![1].body).docs.map((d: any) => d.doc_id).sort()).toEqual([JOB, JOB2].sort());
    expect([e.view(JOB)!.record["title"], e.view(JOB2)!.record["title"]]).toEqual(["one", "two"]);
  });

  it("pulls one document per request from a server without the batch form", async () => {
    server.batch = false;
    seedTwoJobs();
    const calls = vi.fn(server.fetch);
    vi.stubGlobal("fetch", calls);
    const e = await start();
    await e.syncNow();
    const gets = calls.mock.calls.map((c) => String(c[0])).filter((u) => u.startsWith("/api/sync/pull?"));
    expect(gets.length).toBe(2);
    expect([e.view(JOB)!.record["title"], e.view(JOB2)!.record["title"]]).toEqual(["one", "two"]);
    writeField(server.doc(JOB).doc, "title", "again", { ts: "1700000000001.00000", device: "d", author: "u", role: "office" });
    server.doc(JOB).seq = 3;
    await e.syncNow();
    // the batch form is not tried again
    expect(calls.mock.calls.filter((c) => c[1]?.method === "POST" && String(c[0]).includes("/pull")).length).toBe(1);
    expect(e.view(JOB)!.record["title"]).toBe("again");
  });

  it("drops a document that is no longer visible (e.g. a crew unassigned)", async () => {
    server.doc(JOB);
    writeField(server.doc(JOB).doc, "title", "T", { ts: "1700000000000.00000", device: "d", author: "u", role: "office" });
    server.doc(JOB).seq = 1;
    const e = await start();
    await e.syncNow();
    expect(e.docIds()).toEqual([JOB]);
    server.hidden.add(JOB);
    await e.syncNow();
    expect(e.docIds()).toEqual([]);
  });

  it("restarts from IndexedDB with its documents and its outbox", async () => {
    const e = await start();
    server.down = true;
    e.edit(JOB, (doc, s) => writeField(doc, "title", "kept", s));
    await e.syncNow();
    await e.persisted();
    await e.stop();
    engines = engines.filter((x) => x !== e);
    const again = await start();
    expect(again.state.pending).toBe(1);
    expect(again.view(JOB)!.record["title"]).toBe("kept");
    server.down = false;
    await again.syncNow();
    expect(again.state.pending).toBe(0);
    expect([...rootMap(server.doc(JOB).doc, "fields").values()].map((v: any) => v.v)).toEqual(["kept"]);
  });

  it("shares local edits with other tabs of the same browser at once", async () => {
    server.down = true;
    const a = await start();
    const b = await start();
    a.edit(JOB, (doc, s) => writeField(doc, "title", "from tab A", s));
    await until(() => b.view(JOB)?.record["title"] === "from tab A", "the other tab to show the edit");
  });

  it("keeps edits stamped by a fast clock offline: re-stamps them at server time instead of dropping them", async () => {
    const SKEW = 5 * 60_000;
    server.clockMs = () => Date.now() - 20 * 60_000; // this device's clock is 20 minutes fast
    // like the real server: an update whose new write keys are stamped more than 5 minutes
    // ahead of its clock is refused whole with CLOCK_SKEW and the server's time
    const refusals: string[] = [];
    server.refuse = (u) => {
      const d = server.doc(u.doc_id).doc;
      const probe = new Y.Doc();
      Y.applyUpdate(probe, Y.encodeStateAsUpdate(d));
      Y.applyUpdate(probe, fromBase64(u.update));
      for (const root of ["fields", "materials", "notes"] as const) {
        const before = new Set(rootMap(d, root).keys());
        for (const k of rootMap(probe, root).keys()) {
          if (!before.has(k) && parseTs(parseKey(root, k).ts).wall_ms > server.clockMs() + SKEW) {
            refusals.push(k);
            return { doc_id: u.doc_id, status: 422,
              error: { code: "CLOCK_SKEW", message: "ahead", details: { server_time_ms: server.clockMs(), key: k } } };
          }
        }
      }
      return null;
    };
    server.down = true; // hours of work offline, every write stamped in the server's future
    const e = await start();
    const keep = "33333333-3333-4333-8333-333333333333";
    const drop = "44444444-4444-4444-8444-444444444444";
    const note = "55555555-5555-4555-8555-555555555555";
    e.edit(JOB, (doc, s) => writeField(doc, "title", "Deck", s));
    e.edit(JOB, (doc, s) => writeField(doc, "title", "Deck and stairs", s));
    e.edit(JOB, (doc, s) => writeMaterialField(doc, keep, "name", "2x4 studs", s));
    e.edit(JOB, (doc, s) => writeMaterialField(doc, drop, "name", "wrong screws", s));
    e.edit(JOB, (doc, s) => removeMaterial(doc, drop, s));
    e.edit(JOB, (doc, s) => addNote(doc, note, "gate code 1234", s));
    e.edit(JOB2, (doc, s) => writeField(doc, "title", "Fence", s));
    await e.syncNow();
    expect(e.state.pending).toBeGreaterThan(0);

    server.down = false;
    await e.syncNow();
    expect(refusals.length).toBeGreaterThan(0); // the path under test was taken
    expect(e.state.pending).toBe(0);
    expect(e.state.notices).toEqual([]); // nothing was undone
    for (const [id, title] of [[JOB, "Deck and stairs"], [JOB2, "Fence"]] as const) {
      const sd = server.doc(id).doc;
      for (const root of ["fields", "materials", "notes"] as const) {
        for (const k of rootMap(sd, root).keys()) {
          expect(parseTs(parseKey(root, k).ts).wall_ms).toBeLessThanOrEqual(server.clockMs() + SKEW);
        }
      }
      const fresh = new Y.Doc();
      Y.applyUpdate(fresh, Y.encodeStateAsUpdate(sd));
      expect((e.view(id)!.record as any).title).toBe(title);
      expect(Y.encodeStateVector(fresh)).toEqual(Y.encodeStateVector(e.open(id).doc)); // same content
    }
    const v = e.view(JOB)!;
    expect(v.materials.map((m) => [m.id, m.removed])).toEqual([[keep, false], [drop, true]]);
    expect(v.notes.map((n) => n.body)).toEqual(["gate code 1234"]);
    // later edits are stamped at the server's time
    e.edit(JOB, (doc, s) => writeField(doc, "title", "Stairs only", s));
    const key = [...rootMap(e.open(JOB).doc, "fields").keys()].find((k) => k.startsWith("title/"))!;
    expect(Math.abs(parseTs(parseKey("fields", key).ts).wall_ms - server.clockMs())).toBeLessThan(5_000);
  });

  it("a device whose clock is a day fast stamps server time after a sync", async () => {
    const DAY = 86_400_000;
    server.clockMs = () => Date.now() - DAY; // the server is a day behind this device
    const e = await start();
    await e.syncNow();
    e.edit(JOB, (doc, s) => writeField(doc, "title", "x", s));
    const key = [...rootMap(e.open(JOB).doc, "fields").keys()][0]!;
    const wall = parseTs(key.split("/")[1]!).wall_ms;
    expect(Math.abs(wall - (Date.now() - DAY))).toBeLessThan(5_000);
  });
});

/** Every update y-indexeddb stored for a document, in store order (read on the persistence's own
 * connection: a transaction created now runs after the writes already created). */
async function storedUpdates(e: Awaited<ReturnType<typeof SyncEngine.start>>, docId: string): Promise<Uint8Array[]> {
  const db = e.open(docId).idb.db!;
  const r = db.transaction("updates", "readonly").objectStore("updates").getAll();
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result as Uint8Array[]);
    r.onerror = () => reject(r.error);
  });
}

async function outboxOf(): Promise<{ doc_id: string; update: Uint8Array }[]> {
  const { MetaStore } = await import("../src/lib/idb");
  const m = await MetaStore.open();
  try {
    return await m.outbox();
  } finally {
    m.close();
  }
}

/** The field values after each update, applied one after the other to one document (an update
 * applied out of order waits for the ones before it: its value would not show). */
function valuesAfterEach(updates: Uint8Array[]): unknown[][] {
  const d = new Y.Doc();
  return updates.map((u) => {
    Y.applyUpdate(d, u);
    return [...rootMap(d, "fields").values()].map((v: any) => v.v).sort();
  });
}

describe("deferred persistence of local edits", () => {
  /** What a local edit does synchronously: IndexedDB transactions, BroadcastChannel posts and
   * localStorage writes made while `fn` runs. */
  function sideEffects(fn: () => void) {
    const tx = vi.spyOn(IDBDatabase.prototype, "transaction");
    const bc = vi.spyOn(BroadcastChannel.prototype, "postMessage");
    const ls = vi.spyOn(localStorage, "setItem");
    try {
      fn();
      return { transactions: tx.mock.calls.length, posts: bc.mock.calls.length, localStorage: ls.mock.calls.length };
    } finally {
      tx.mockRestore();
      bc.mockRestore();
      ls.mockRestore();
    }
  }

  it("writes nothing in the edit itself; then the outbox and the doc store get every edit in order", async () => {
    server.down = true;
    const e = await start();
    await e.open(JOB).ready;
    await e.open(JOB2).ready;
    const before = (await storedUpdates(e, JOB)).length;
    const done = sideEffects(() => {
      e.edit(JOB, (doc, s) => writeField(doc, "title", "A", s));
      e.edit(JOB2, (doc, s) => writeField(doc, "title", "other", s));
      e.edit(JOB, (doc, s) => writeField(doc, "title", "B", s));
      e.edit(JOB, (doc, s) => writeField(doc, "title", "C", s));
    });
    expect(done).toEqual({ transactions: 0, posts: 0, localStorage: 0 });
    expect(e.view(JOB)!.record["title"]).toBe("C"); // the screens see it at once
    expect(e.state.pending).toBe(4); // and the badge counts it at once
    await e.persisted();
    const outbox = await outboxOf();
    expect(outbox.map((o) => o.doc_id)).toEqual([JOB, JOB2, JOB, JOB]);
    expect(valuesAfterEach(outbox.filter((o) => o.doc_id === JOB).map((o) => o.update))).toEqual([["A"], ["B"], ["C"]]);
    const stored = (await storedUpdates(e, JOB)).slice(before);
    expect(stored).toEqual(outbox.filter((o) => o.doc_id === JOB).map((o) => o.update));
    expect(localStorage.getItem("fieldsync.hlc")).toBe(
      [...rootMap(e.open(JOB).doc, "fields").keys()][0]!.split("/")[1]); // the clock of the last edit
    expect(e.state.pending).toBe(4);
  });

  it("runs the deferred work in the next task without being asked", async () => {
    server.down = true;
    const e = await start();
    await e.open(JOB).ready;
    const before = (await storedUpdates(e, JOB)).length;
    e.edit(JOB, (doc, s) => writeField(doc, "title", "A", s));
    // nobody flushes: the engine's own task writes it (messages of two MessageChannels have no
    // guaranteed order in Node, so the test waits for the write instead of one task)
    await until(async () => (await outboxOf()).length === 1, "the deferred outbox write");
    expect(valuesAfterEach((await outboxOf()).map((o) => o.update))).toEqual([["A"]]);
    // the doc store's write follows the outbox's (without flushing anything more)
    await (e as any).outboxWrites;
    expect((await storedUpdates(e, JOB)).length).toBe(before + 1);
  });

  it("queues a local edit before a remote update that follows it is stored; the doc store gets both", async () => {
    server.down = true;
    const e = await start();
    await e.open(JOB).ready;
    const before = (await storedUpdates(e, JOB)).length;
    e.edit(JOB, (doc, s) => writeField(doc, "title", "local", s));
    const other = new Y.Doc();
    writeField(other, "description", "remote", { ts: "1700000000000.00000", device: "d", author: "u", role: "office" });
    const remote = Y.encodeStateAsUpdate(other);
    const { HTTP_ORIGIN } = await import("../src/sync/engine");
    Y.applyUpdate(e.open(JOB).doc, remote, HTTP_ORIGIN);
    // the local edit's outbox write was issued before the remote update was handled
    expect(valuesAfterEach((await outboxOf()).map((o) => o.update))).toEqual([["local"]]); // only local edits are queued
    await (e as any).outboxWrites;
    const stored = (await storedUpdates(e, JOB)).slice(before);
    expect(stored).toHaveLength(2);
    expect(stored).toContainEqual(remote);
    const merged = new Y.Doc();
    for (const u of stored) Y.applyUpdate(merged, u);
    expect([...rootMap(merged, "fields").values()].map((v: any) => v.v).sort()).toEqual(["local", "remote"]);
  });

  it("hands local edits to the live provider after the edit, in order with remote updates", async () => {
    server.down = true;
    const e = await start();
    const entry = e.open(JOB);
    await entry.ready;
    const sent: [Uint8Array, unknown][] = [];
    entry.ws = { _updateHandler: (u: Uint8Array, o: unknown) => void sent.push([u, o]), destroy: () => undefined } as any;
    e.edit(JOB, (doc, s) => writeField(doc, "title", "A", s));
    e.edit(JOB, (doc, s) => writeField(doc, "title", "B", s));
    expect(sent).toHaveLength(0); // not in the edit itself
    const other = new Y.Doc();
    writeField(other, "description", "remote", { ts: "1700000000000.00000", device: "d", author: "u", role: "office" });
    const { TAB_ORIGIN } = await import("../src/sync/engine");
    Y.applyUpdate(entry.doc, Y.encodeStateAsUpdate(other), TAB_ORIGIN);
    // the remote update is passed on at once, after the two local edits still queued
    expect(valuesAfterEach(sent.map(([u]) => u))).toEqual([["A"], ["B"], ["B", "remote"]]);
    expect(sent.map(([, o]) => o === TAB_ORIGIN)).toEqual([false, false, true]);
    entry.ws = null;
  });

  it("asks for Background Sync only when the page cannot push itself", async () => {
    const tags: string[] = [];
    const reg = { sync: { register: async (tag: string) => void tags.push(tag) } };
    const sw = Object.assign(new EventTarget(), { ready: Promise.resolve(reg) });
    vi.stubGlobal("navigator", { onLine: true, userAgent: "vitest", serviceWorker: sw });
    const e = await start();
    await e.syncNow();
    e.edit(JOB, (doc, s) => writeField(doc, "title", "online", s));
    await e.persisted();
    await sw.ready;
    expect(tags).toEqual([]); // online: the page pushes it within 300 ms
    server.down = true;
    await e.syncNow(); // the push fails: the service worker is asked to retry
    await sw.ready;
    expect(tags).toEqual(["fieldsync-outbox"]);
    e.edit(JOB, (doc, s) => writeField(doc, "title", "offline", s));
    await e.persisted();
    await sw.ready;
    expect(tags).toHaveLength(2); // offline: every change
    window.dispatchEvent(new Event("pagehide"));
    await sw.ready;
    expect(tags).toHaveLength(3); // closing with changes waiting
  });

  it("writes everything queued when the page is hidden or closed", async () => {
    server.down = true;
    const e = await start();
    await e.open(JOB).ready;
    const done = sideEffects(() => {
      e.edit(JOB, (doc, s) => writeField(doc, "title", "A", s));
      e.edit(JOB, (doc, s) => writeField(doc, "title", "B", s));
      window.dispatchEvent(new Event("pagehide"));
    });
    expect(done.transactions).toBeGreaterThanOrEqual(2); // the two outbox writes, in the handler
    expect(done.posts).toBe(2);
    await e.persisted();
    expect(valuesAfterEach((await outboxOf()).map((o) => o.update))).toEqual([["A"], ["B"]]);
    expect(valuesAfterEach((await storedUpdates(e, JOB)).slice(-2))).toEqual([["A"], ["B"]]);
  });

  it("re-applies at start an edit that reached the outbox but not the doc store (killed in between)", async () => {
    server.down = true;
    const e = await start();
    await e.open(JOB).ready;
    e.edit(JOB, (doc, s) => writeField(doc, "title", "kept", s));
    await e.persisted();
    await e.stop();
    engines = engines.filter((x) => x !== e);
    // the document's store lost the edit; the outbox has it
    await new Promise<void>((resolve, reject) => {
      const r = indexedDB.deleteDatabase(`fieldsync-doc:${JOB}`);
      r.onsuccess = () => resolve();
      r.onerror = () => reject(r.error);
    });
    const again = await start();
    expect(again.state.pending).toBe(1);
    expect(again.view(JOB)!.record["title"]).toBe("kept");
    // and the doc store has it again
    expect(valuesAfterEach(await storedUpdates(again, JOB)).at(-1)).toEqual(["kept"]);
    // nothing was queued twice
    expect((await outboxOf()).length).toBe(1);
  });

  it("loses nothing queued when stopped right after the edits, and restarts with them", async () => {
    server.down = true;
    const e = await start();
    await e.open(JOB).ready;
    const before = (await storedUpdates(e, JOB)).length;
    for (const t of ["A", "B", "C"]) e.edit(JOB, (doc, s) => writeField(doc, "title", t, s));
    await e.stop();
    engines = engines.filter((x) => x !== e);
    const again = await start();
    expect(again.state.pending).toBe(3);
    expect(again.view(JOB)!.record["title"]).toBe("C"); // from y-indexeddb
    expect(valuesAfterEach((await outboxOf()).map((o) => o.update))).toEqual([["A"], ["B"], ["C"]]);
    // y-indexeddb's semantics kept: the three edits, then one state snapshot at the reopen; the
    // updates it loaded itself are not stored again
    expect((await storedUpdates(again, JOB)).length).toBe(before + 3 + 1);
  });
});

describe("api client", () => {
  it("refreshes an expired access token once and retries", async () => {
    const { api } = await import("../src/api");
    const calls: string[] = [];
    vi.stubGlobal("fetch", async (path: string, init: any) => {
      calls.push(`${init.method} ${path} ${init.headers.Authorization ?? ""}`);
      if (path === "/api/auth/refresh") {
        expect(JSON.parse(init.body)).toEqual({ refresh_token: "r" });
        return new Response(JSON.stringify({ data: { ...SESSION, access_token: "a2", refresh_token: "r2" } }), { status: 200 });
      }
      if (init.headers.Authorization === "Bearer a") {
        return new Response(JSON.stringify({ error: { code: "INVALID_TOKEN", message: "expired", details: [] } }), { status: 401 });
      }
      return new Response(JSON.stringify({ data: { ok: 1 }, meta: {} }), { status: 200 });
    });
    const { data } = await api("GET", "/api/auth/me");
    expect(data).toEqual({ ok: 1 });
    expect(calls).toEqual(["GET /api/auth/me Bearer a", "POST /api/auth/refresh ", "GET /api/auth/me Bearer a2"]);
    expect(JSON.parse(localStorage.getItem("fieldsync.session")!).refresh_token).toBe("r2");
  });
});
