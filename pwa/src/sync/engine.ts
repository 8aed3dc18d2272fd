/** The sync engine of the PWA: one Y.Doc per document, persisted with y-indexeddb; local
 * edits queued in an IndexedDB outbox until the server acknowledges them; HTTP push/pull
 * with retry and backoff; live updates over the y-websocket provider when the server offers
 * `/ws`.
 *
 *   edit ──▶ Y.Doc (LOCAL origin) ──▶ UI re-renders (in the input handler)
 *                                └─ next task ─▶ y-indexeddb (doc state), outbox (IndexedDB)
 *                                                ──push──▶ server ack ──▶ removed
 *   server ──pull (state vector + since)/WebSocket──▶ Y.Doc (remote origin) ──▶ UI
 *
 * A local edit's non-visual work (y-indexeddb's store, the outbox write, the post to the other
 * tabs, the clock's localStorage write) runs in the task right after the input handler, i.e.
 * after React has committed the change: see `later` below.
 */
import * as Y from "yjs";
import { IndexeddbPersistence } from "y-indexeddb";
import type { WebsocketProvider } from "y-websocket";
import { api, ApiError, NetworkError } from "../api";
import { DOC_DB_PREFIX, MetaStore, type DocRecord } from "../lib/idb";
import { fromBase64, toBase64Url } from "../lib/base64";
import { pushRound } from "./push";
import { entryValue, makeKey, maxTimestamp, parseDocId, parseKey, REMOVED, ROOTS, type Kind, type Stamp, type WriteKey } from "../doc/codec";
import { sortedStrings } from "../rules/compare";
import { explainPath, resolveDoc, type DocView } from "../doc/view";
import type { Explanation } from "../rules/explain";
import { formatTs, HLC, isValidTs, parseTs } from "../rules/hlc";
import type { Session } from "../session";

/** Transaction origin of this device's own edits (the only ones that go to the outbox). */
export const LOCAL_ORIGIN = Symbol("fieldsync-local");
/** Transaction origin of updates pulled over HTTP. */
export const HTTP_ORIGIN = Symbol("fieldsync-http");
/** Transaction origin of edits made in another tab of this browser (same device). */
export const TAB_ORIGIN = Symbol("fieldsync-tab");
/** Origin of the outbox's updates applied again at start (only those the doc store lacked change anything). */
export const OUTBOX_ORIGIN = Symbol("fieldsync-outbox");

export interface SyncState {
  /** the last request to the server succeeded */
  online: boolean;
  /** local edits not yet acknowledged by the server */
  pending: number;
  lastSync: number | null;
  syncing: boolean;
  /** documents currently connected over WebSocket */
  live: number;
  wsAvailable: boolean | null;
  lastError: string | null;
  /** changes the server refused (shown to the user, then dismissed) */
  notices: string[];
}

export interface DocEntry {
  readonly id: string;
  readonly kind: Kind;
  readonly doc: Y.Doc;
  readonly idb: IndexeddbPersistence;
  readonly ready: Promise<void>;
  version: number;
  ws: WebsocketProvider | null;
  view: { version: number; view: DocView } | null;
}

const HLC_KEY = "fieldsync.hlc";

/** Runs a callback in a task of its own, as soon as possible (a MessageChannel message: no 4 ms
 * clamp, not throttled like timers). */
function taskPoster(run: () => void): { post: () => void; close: () => void } {
  if (typeof MessageChannel === "function") {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => run();
    // Node (tests): an open port would keep the process alive
    (ch.port1 as MessagePort & { unref?: () => void }).unref?.();
    return { post: () => ch.port2.postMessage(null), close: () => ch.port1.close() };
  }
  return { post: () => void setTimeout(run, 0), close: () => undefined };
}

export interface EngineOptions {
  pollMs?: number;
  livePollMs?: number;
  maxBackoffMs?: number;
  /** try the WebSocket endpoint (default true) */
  websocket?: boolean;
}

export class SyncEngine {
  readonly entries = new Map<string, DocEntry>();
  private records = new Map<string, DocRecord>();
  private hlc: HLC;
  private outboxWrites: Promise<unknown> = Promise.resolve();
  /** local updates queued for the outbox whose write has not completed yet (counted as pending) */
  private unwritten = 0;
  /** The non-visual work of local edits, in edit order, run by `flushLater` in the task after the
   * input handler (or earlier, before anything that must see it). A crash or a killed tab within
   * that one task loses these edits, which were not durable before either: IndexedDB commits
   * asynchronously, so an edit was only ever durable some time after its handler returned. */
  private readonly later: (() => void)[] = [];
  private laterPosted = false;
  /** the clock advanced for a local edit: its localStorage copy is written with `later` */
  private hlcDirty = false;
  private readonly laterTask = taskPoster(() => {
    this.laterPosted = false;
    this.flushLater();
  });
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running = false;
  private rerun = false;
  private failures = 0;
  private stopped = false;
  private changeScheduled = false;
  private wsProbeAt = 0;
  /** the server offers the batch pull (`POST /api/sync/pull`); null until the first try */
  private batchPull: boolean | null = null;
  private wsCtor: typeof WebsocketProvider | null = null;
  private readonly wsRefused = new Set<string>();
  /** other tabs of this browser: their local edits are applied here at once (the server's
   * log tail excludes this device's own updates, so a pull would not bring them) */
  private readonly tabs: BroadcastChannel | null =
    typeof BroadcastChannel === "function" ? new BroadcastChannel("fieldsync-updates") : null;
  private readonly opts: Required<EngineOptions>;
  state: SyncState = {
    online: navigator.onLine, pending: 0, lastSync: null, syncing: false, live: 0, wsAvailable: null,
    lastError: null, notices: [],
  };

  private constructor(private session: Session, private readonly meta: MetaStore,
                      private readonly onChange: () => void, private readonly onState: (s: SyncState) => void,
                      opts: EngineOptions) {
    this.opts = { pollMs: 10_000, livePollMs: 30_000, maxBackoffMs: 30_000, websocket: true, ...opts };
    this.hlc = new HLC(localStorage.getItem(HLC_KEY));
  }

  static async start(session: Session, onChange: () => void, onState: (s: SyncState) => void,
                     opts: EngineOptions = {}): Promise<SyncEngine> {
    const meta = await MetaStore.open();
    const engine = new SyncEngine(session, meta, onChange, onState, opts);
    await meta.set("session", { access_token: session.access_token, device_id: session.device_id });
    const offset = await meta.get<number>("clock_offset");
    if (typeof offset === "number") engine.hlc.offsetMs = offset;
    for (const r of await meta.docs()) engine.records.set(r.doc_id, r);
    await Promise.all([...engine.records.keys()].map((id) => engine.open(id).ready));
    await engine.replayOutbox();
    engine.setState({ pending: await engine.countPending(), lastSync: (await meta.get<number>("last_sync")) ?? null });
    if (engine.tabs) {
      engine.tabs.onmessage = (ev: MessageEvent<{ docId: string; update: Uint8Array }>) => {
        const { docId, update } = ev.data ?? {};
        if (typeof docId !== "string" || !(update instanceof Uint8Array) || engine.stopped) return;
        try {
          Y.applyUpdate(engine.open(docId).doc, update, TAB_ORIGIN);
        } catch { /* a malformed message is ignored */ }
      };
    }
    if (typeof navigator !== "undefined" && "serviceWorker" in navigator) {
      // the service worker pushed the outbox in the background: refresh the badge, then pull
      navigator.serviceWorker.addEventListener("message", (ev: MessageEvent) => {
        if ((ev.data as { type?: string } | null)?.type !== "fieldsync-pushed" || engine.stopped) return;
        void engine.countPending().then((pending) => engine.setState({ pending })).catch(() => undefined);
        engine.schedule(0);
      });
    }
    window.addEventListener("online", engine.onOnline);
    window.addEventListener("offline", engine.onOffline);
    // the page may be closed or frozen: write what local edits left for the next task now
    window.addEventListener("pagehide", engine.onHide);
    if (typeof document !== "undefined") document.addEventListener("visibilitychange", engine.onHide);
    engine.schedule(0);
    return engine;
  }

  /** The signed-in user and device this engine writes as. */
  get principal(): { user: Session["user"]; device_id: string } {
    return { user: this.session.user, device_id: this.session.device_id };
  }

  // --- documents -------------------------------------------------------------------------

  /** The entry of a document, opened (from IndexedDB) on first use. */
  open(docId: string): DocEntry {
    const have = this.entries.get(docId);
    if (have) return have;
    const [kind] = parseDocId(docId);
    const doc = new Y.Doc();
    const idb = new IndexeddbPersistence(DOC_DB_PREFIX + docId, doc);
    // y-indexeddb stores every update in its own `update` handler (an IndexedDB transaction per
    // update); the handler below calls it instead: later for a local edit, at once (after the
    // local edits still queued, so the order is kept) for the others
    doc.off("update", idb._storeUpdate);
    const entry: DocEntry = {
      id: docId, kind, doc, idb, version: 0, ws: null, view: null,
      ready: idb.whenSynced.then(() => undefined),
    };
    doc.on("update", (update: Uint8Array, origin: unknown) => {
      entry.version++;
      if (origin === LOCAL_ORIGIN) {
        // the user's own edit: the screens re-render in this handler; everything else (the doc
        // store, the outbox, the other tabs) waits for the next task, in edit order
        this.onChange();
        this.setState({ pending: this.state.pending + 1 });
        this.unwritten++;
        this.runLater(() => {
          // the outbox first, the doc store once that write is done: the two databases do not
          // commit together, and an edit only in the outbox is re-applied at the next start
          // (`start`), while one only in the doc store would never reach the server
          this.enqueue(docId, update, () => storeUpdate(idb, update, origin));
          if (!this.stopped) this.tabs?.postMessage({ docId, update });
          // the live provider connected now (if any) sends it; one connecting later syncs the
          // whole state first
          entry.ws?._updateHandler(update, origin);
        });
        return;
      }
      this.flushLater();
      storeUpdate(idb, update, origin);
      entry.ws?._updateHandler(update, origin); // it skips the updates it received itself
      if (origin !== idb) {
        const ts = maxTimestamp(doc);
        if (ts) this.receiveTs(ts);
      }
      this.changed();
    });
    this.entries.set(docId, entry);
    if (!this.records.has(docId)) {
      const rec = { doc_id: docId, seq: 0 };
      this.records.set(docId, rec);
      void this.meta.putDoc(rec);
    }
    if (this.state.wsAvailable) this.connectWs(entry);
    return entry;
  }

  /** The resolved view of a document (cached per document version). */
  view(docId: string): DocView | null {
    const e = this.entries.get(docId);
    if (!e) return null;
    if (e.view === null || e.view.version !== e.version) e.view = { version: e.version, view: resolveDoc(e.doc, e.kind) };
    return e.view.view;
  }

  /** Why a path of a document has its value (same fields as `syncd explain`). */
  explain(docId: string, path: string): Explanation {
    const e = this.open(docId);
    return explainPath(e.doc, e.kind, path, docId);
  }

  docIds(kind?: Kind): string[] {
    return [...this.entries.keys()].filter((id) => kind === undefined || id.startsWith(`${kind}:`));
  }

  /** Apply an edit locally at once (it is queued for the server by the update handler). */
  edit(docId: string, fn: (doc: Y.Doc, stamp: Stamp) => void): void {
    const e = this.open(docId);
    const stamp: Stamp = { ts: this.nextTs(), device: this.session.device_id, author: this.session.user.id,
      role: this.session.user.role };
    e.doc.transact(() => fn(e.doc, stamp), LOCAL_ORIGIN);
  }

  private nextTs(): string {
    const ts = this.hlc.now();
    // written with the edit's other deferred work (an edit and the clock that stamped it are
    // stored in the same task)
    this.hlcDirty = true;
    this.runLater(null);
    return ts;
  }

  private receiveTs(ts: string): void {
    try {
      this.hlc.receive(ts);
      this.hlcDirty = false;
      localStorage.setItem(HLC_KEY, this.hlc.last);
    } catch { /* malformed: ignored */ }
  }

  /** Queue work of a local edit for the next task (`job` null: only make sure that task runs). */
  private runLater(job: (() => void) | null): void {
    if (job !== null) this.later.push(job);
    if (!this.laterPosted) {
      this.laterPosted = true;
      this.laterTask.post();
    }
  }

  /** Run now, in order, the work local edits queued for the next task. Called by that task, and
   * before anything that must see every local edit stored (a remote update, push, pull, stop,
   * the page being hidden or closed). */
  flushLater(): void {
    if (this.hlcDirty) {
      this.hlcDirty = false;
      try {
        localStorage.setItem(HLC_KEY, this.hlc.last);
      } catch { /* storage full or unavailable: the clock is also advanced by what it receives */ }
    }
    let queued = false;
    while (this.later.length > 0) {
      const jobs = this.later.splice(0);
      for (const job of jobs) {
        try {
          job();
        } catch (e) {
          this.setState({ lastError: `could not store a change: ${String(e)}` });
        }
      }
      queued = true;
    }
    if (queued && !this.stopped) {
      this.schedule(300);
      // Background Sync is for changes the page cannot push itself: registered when offline,
      // after a failed push and when the page is hidden or closed (onHide). Online, the page
      // pushes within 300 ms (and the live provider has sent the change already); registering
      // there made the service worker push every edit a second time at once.
      if (!this.state.online || !navigator.onLine) requestBackgroundSync();
    }
  }

  /** Every local edit made so far is in the outbox (and its write completed or failed). */
  async persisted(): Promise<void> {
    this.flushLater();
    await this.outboxWrites;
  }

  private onHide = (): void => {
    if (typeof document !== "undefined" && document.visibilityState === "visible") return;
    this.flushLater();
    if (this.state.pending > 0) requestBackgroundSync(); // pushed by the service worker if the page is gone
  };

  private changed(): void {
    if (this.changeScheduled) return;
    this.changeScheduled = true;
    queueMicrotask(() => {
      this.changeScheduled = false;
      this.onChange();
    });
  }

  private setState(patch: Partial<SyncState>): void {
    this.state = { ...this.state, ...patch };
    this.onState(this.state);
  }

  dismissNotices(): void {
    this.setState({ notices: [] });
  }

  // --- outbox ----------------------------------------------------------------------------

  /** Queue a local update for the server (counted in `pending` by the update handler already;
   * `flushLater` schedules the push). */
  private enqueue(docId: string, update: Uint8Array, then: () => void): void {
    // the write starts now (transactions run in the order they are created, so the `then`s run
    // in edit order), chained for whoever awaits `outboxWrites` (push, stop)
    const write = this.meta.addOutbox({ doc_id: docId, update, created: Date.now() }).finally(then);
    this.outboxWrites = Promise.all([this.outboxWrites, write])
      .catch((e) => this.setState({ lastError: `could not queue a change: ${String(e)}` }))
      .finally(() => { this.unwritten--; });
  }

  /** Apply the outbox's updates to their documents again (idempotent: Yjs ignores what a
   * document has). An edit whose outbox write committed but whose doc-store write did not (the
   * tab was killed in between) shows again, and is stored in the doc store now. */
  private async replayOutbox(): Promise<void> {
    for (const entry of await this.meta.outbox(100_000)) {
      try {
        const e = this.open(entry.doc_id);
        await e.ready;
        Y.applyUpdate(e.doc, entry.update, OUTBOX_ORIGIN);
      } catch (err) {
        this.setState({ lastError: `a queued change could not be re-applied: ${String(err)}` });
      }
    }
  }

  /** Pending = the outbox's entries plus the local updates whose write has not completed. */
  private async countPending(): Promise<number> {
    this.flushLater();
    const n = await this.meta.outboxCount();
    return n + this.unwritten;
  }

  private async push(): Promise<void> {
    await this.persisted();
    for (let round = 0; round < 50; round++) {
      const r = await pushRound(this.meta, this.session.device_id,
        async (body) => (await api<{ results: any[] }>("POST", "/api/sync/push", body)).data);
      if (r.empty) break;
      for (const [docId, why] of r.refused) await this.resetDoc(docId, why);
      let restamped = false;
      for (const [docId, serverMs] of r.skewed) {
        if (await this.restampDoc(docId, serverMs)) restamped = true;
        else await this.resetDoc(docId, "CLOCK_SKEW: a write is stamped too far ahead of the server's clock");
      }
      this.setState({ pending: await this.countPending() });
      if (r.blocked || (r.acked.length === 0 && !restamped)) break;
    }
    // the service worker may have pushed (and removed) entries meanwhile
    const pending = await this.countPending();
    if (pending !== this.state.pending) this.setState({ pending });
  }

  /** The server refused a document's writes as stamped too far ahead of its clock (CLOCK_SKEW:
   * this device's clock ran fast, say while it worked offline). The edits are kept, their times
   * fixed: the clock moves to the server's time (`serverMs`), every visible write of this
   * device stamped after it is written again in one local edit with a fresh stamp (same record,
   * item, field and value; the old key deleted; a removal covers the same writes, renamed), and
   * the document's queued updates are merged into one, so the server receives the old keys
   * inserted and deleted in the same update and stores the values at times it accepts.
   * Returns false if nothing of this device was ahead (the refusal is then final). */
  private async restampDoc(docId: string, serverMs: number): Promise<boolean> {
    await this.persisted();
    this.learnServerTime(serverMs); // a clock clearly off is corrected and restarted from the server's time
    const e = this.open(docId);
    await e.ready;
    const me = this.session.device_id;
    let n = 0;
    this.edit(docId, (doc, stamp) => {
      const moved = new Map<string, string>();
      const plan: Array<[Y.Map<unknown>, string, string, unknown, boolean]> = [];
      for (const root of ROOTS[e.kind]) {
        const m = doc.getMap(root);
        for (const key of [...m.keys()]) {
          let wk: WriteKey;
          try {
            wk = parseKey(root, key);
          } catch {
            continue;
          }
          if (wk.device !== me || parseTs(wk.ts).wall_ms <= serverMs) continue;
          const next = makeKey(root, { ts: stamp.ts, device: stamp.device, field: wk.field ?? undefined, item: wk.item ?? undefined });
          moved.set(key, next);
          const raw = m.get(key) as { v?: unknown } | undefined;
          plan.push([m, key, next, raw?.v, root === "materials" && wk.field === REMOVED]);
        }
      }
      for (const [m, key, next, old, removal] of plan) {
        const v = removal && Array.isArray(old) ? sortedStrings(old.map((k) => moved.get(String(k)) ?? String(k))) : old;
        m.delete(key);
        m.set(next, entryValue(v, stamp.author, stamp.role));
      }
      n = plan.length;
    });
    if (n === 0) return false;
    await this.persisted();
    await this.meta.mergeOutbox(docId, (updates) => Y.mergeUpdates(updates));
    return true;
  }

  /** The server refused a change for good: drop this replica's unacknowledged changes of the
   * document and re-pull the server's state (the user is told what was refused). */
  private async resetDoc(docId: string, why: string): Promise<void> {
    await this.persisted(); // the document's local edits still queued go too
    const all = await this.meta.outbox(100_000);
    await this.meta.deleteOutbox(all.filter((e) => e.doc_id === docId).map((e) => e.id!));
    await this.dropDoc(docId);
    this.setState({ notices: [...this.state.notices, `A change to ${docId} was refused by the server and undone (${why}).`] });
  }

  private async dropDoc(docId: string): Promise<void> {
    const e = this.entries.get(docId);
    if (e) {
      e.ws?.destroy();
      this.entries.delete(docId);
      await e.idb.clearData();
      e.doc.destroy();
    }
    this.records.delete(docId);
    this.wsRefused.delete(docId); // if it becomes visible again, live sync may be retried
    await this.meta.deleteDoc(docId);
    this.changed();
  }

  // --- pull ------------------------------------------------------------------------------

  private async pull(): Promise<void> {
    const visible = new Map<string, number>();
    let after: string | null = null;
    for (let page = 0; page < 1000; page++) {
      const q: string = after ? `&after=${encodeURIComponent(after)}` : "";
      const { data, meta } = await api<{ docs: { doc_id: string; seq: number }[]; server_time: number }>(
        "GET", `/api/sync/status?limit=1000${q}`);
      this.learnServerTime(data.server_time);
      for (const d of data.docs) visible.set(d.doc_id, d.seq);
      after = meta?.next_cursor ?? null;
      if (!after) break;
    }
    const todo: [string, number][] = [];
    for (const [docId, seq] of visible) {
      const rec = this.records.get(docId);
      const entry = this.entries.get(docId);
      const incomplete = entry !== undefined && (entry.doc.store.pendingStructs !== null || entry.doc.store.pendingDs !== null);
      if (!rec || !entry || seq > rec.seq || incomplete) todo.push([docId, incomplete ? 0 : rec?.seq ?? 0]);
    }
    // jobs first (the screens list jobs; a customer only adds a name), several in flight: on a
    // high-latency link a first sync is one round trip per PULL_CONCURRENCY documents
    todo.sort((a, b) => Number(b[0].startsWith("job:")) - Number(a[0].startsWith("job:")));
    if (todo.length > 0 && !(this.batchPull !== false && await this.pullMany(todo))) {
      await inParallel(todo, PULL_CONCURRENCY, ([docId, since]) => this.pullDoc(docId, since));
    }
    await this.persisted(); // a document with a local edit still queued is kept
    const pendingDocs = new Set((await this.meta.outbox(100_000)).map((e) => e.doc_id));
    for (const [docId, rec] of [...this.records]) {
      // no longer visible to this user (e.g. a crew unassigned from the job): drop it
      if (!visible.has(docId) && rec.seq > 0 && !pendingDocs.has(docId)) await this.dropDoc(docId);
    }
  }

  private async pullDoc(docId: string, since: number): Promise<void> {
    const e = this.open(docId);
    await e.ready;
    const sv = toBase64Url(Y.encodeStateVector(e.doc));
    const q = `doc_id=${encodeURIComponent(docId)}&state_vector=${sv}${since > 0 ? `&since=${since}` : ""}`;
    let data: { update: string; seq: number };
    try {
      ({ data } = await api("GET", `/api/sync/pull?${q}`));
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 403)) return;
      throw err;
    }
    await this.applyPulled(e, data.update, data.seq);
  }

  /** Batch pull (`POST /api/sync/pull {docs}`): one request per MAX_BATCH_PULL documents.
   * Returns false (nothing pulled) when the server does not offer it, to pull one by one. */
  private async pullMany(todo: [string, number][]): Promise<boolean> {
    for (let k = 0; k < todo.length; k += MAX_BATCH_PULL) {
      const chunk = todo.slice(k, k + MAX_BATCH_PULL);
      const entries = chunk.map(([docId]) => this.open(docId));
      await Promise.all(entries.map((e) => e.ready));
      const docs = chunk.map(([docId, since], i) => ({
        doc_id: docId, state_vector: toBase64Url(Y.encodeStateVector(entries[i]!.doc)), ...(since > 0 ? { since } : {}),
      }));
      let data: { results: ({ doc_id: string; update?: string; seq?: number; status?: number;
        error?: { code?: string; message?: string; details?: unknown } } | null)[] };
      try {
        ({ data } = await api("POST", "/api/sync/pull", { docs }));
      } catch (err) {
        // an older server: GET only (405), or no such route
        if (k === 0 && this.batchPull === null && err instanceof ApiError && (err.status === 405 || err.status === 404)) {
          this.batchPull = false;
          return false;
        }
        throw err;
      }
      this.batchPull = true;
      for (const [i, r] of data.results.entries()) {
        const e = entries[i]!;
        if (r && typeof r.update === "string" && r.doc_id === e.id) await this.applyPulled(e, r.update, r.seq ?? 0);
        else if (r && (r.status === 404 || r.status === 403)) continue; // as the GET form: not (or no longer) readable
        else throw new ApiError(r?.status ?? 500, r?.error?.code ?? "PULL_FAILED", r?.error?.message ?? `pull of ${e.id} failed`,
          r?.error?.details ?? []);
      }
    }
    return true;
  }

  private async applyPulled(e: DocEntry, updateB64: string, seq: number): Promise<void> {
    const update = fromBase64(updateB64);
    if (update.length > 2) Y.applyUpdate(e.doc, update, HTTP_ORIGIN);
    const rec = { doc_id: e.id, seq: Math.max(seq, 0) };
    this.records.set(e.id, rec);
    await this.meta.putDoc(rec);
  }

  /** The server's clock (an HLC timestamp, or epoch seconds/ms): correct a device clock that is
   * clearly off, and order later local writes after everything the server has seen. */
  private learnServerTime(serverTime: unknown): void {
    let ms: number | null = null;
    if (typeof serverTime === "string" && isValidTs(serverTime)) ms = parseTs(serverTime).wall_ms;
    else if (typeof serverTime === "number" && Number.isFinite(serverTime)) ms = serverTime < 1e11 ? serverTime * 1000 : serverTime;
    if (ms === null) return;
    const offset = Math.round(ms - Date.now());
    // only correct clocks that are clearly off: a small offset is network latency
    const next = Math.abs(offset) > 2000 ? offset : 0;
    if (next !== this.hlc.offsetMs) {
      this.hlc.offsetMs = next;
      void this.meta.set("clock_offset", next);
    }
    if (parseTs(this.hlc.last).wall_ms > ms + 60_000) {
      // stamps issued while the clock was fast would be refused (the server bounds the skew):
      // start again from the server's time
      this.hlc = new HLC(formatTs(ms, 0), { offsetMs: next });
    }
    if (typeof serverTime === "string") this.receiveTs(serverTime);
    else localStorage.setItem(HLC_KEY, this.hlc.last);
  }

  // --- the loop --------------------------------------------------------------------------

  /** Sync now (push then pull); coalesces concurrent calls. */
  async syncNow(): Promise<void> {
    if (this.stopped) return;
    if (this.running) {
      this.rerun = true;
      return;
    }
    this.running = true;
    this.setState({ syncing: true });
    try {
      do {
        this.rerun = false;
        await this.push();
        await this.pull();
        await this.push();
      } while (this.rerun && !this.stopped);
      this.failures = 0;
      const now = Date.now();
      void this.meta.set("last_sync", now);
      this.setState({ online: true, lastSync: now, lastError: null });
      if (this.opts.websocket) {
        if (this.state.wsAvailable) for (const e of this.entries.values()) this.connectWs(e);
        else void this.maybeProbeWs();
      }
    } catch (e) {
      this.failures++;
      const offline = e instanceof NetworkError;
      this.setState({ online: offline ? false : this.state.online, lastError: e instanceof Error ? e.message : String(e) });
      if (offline) this.pauseLive();
      if (this.state.pending > 0) requestBackgroundSync(); // the service worker retries even if the page is closed
    } finally {
      this.running = false;
      this.setState({ syncing: false });
      this.scheduleNext();
    }
  }

  private scheduleNext(): void {
    if (this.failures > 0) {
      const base = Math.min(this.opts.maxBackoffMs, 1000 * 2 ** Math.min(this.failures - 1, 10));
      this.schedule(base / 2 + Math.random() * base / 2);
    } else {
      this.schedule(this.state.live > 0 ? this.opts.livePollMs : this.opts.pollMs);
    }
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.syncNow();
    }, ms);
  }

  private onOnline = (): void => {
    this.failures = 0;
    this.schedule(0);
  };

  private onOffline = (): void => {
    this.setState({ online: false });
    this.pauseLive();
  };

  /** No network: stop the live providers' reconnect loops (each attempt builds a WebSocket on
   * the main thread: with 100 documents, ten a second at y-websocket's 10 s backoff, competing
   * with the crew's taps and draining the battery in a basement). HTTP sync keeps probing with
   * its own backoff; its next success reconnects them (`connectWs`). */
  private pauseLive(): void {
    for (const e of this.entries.values()) if (e.ws?.shouldConnect) e.ws.disconnect();
    this.countLive();
  }

  // --- WebSocket (live) --------------------------------------------------------------------

  private async maybeProbeWs(): Promise<void> {
    if (this.state.wsAvailable === true || Date.now() < this.wsProbeAt) return;
    const first = this.entries.keys().next();
    if (first.done) return;
    this.wsProbeAt = Date.now() + 60_000;
    const ok = await new Promise<boolean>((resolve) => {
      let ws: WebSocket;
      try {
        ws = new WebSocket(`${this.wsBase()}/${first.value}?token=${encodeURIComponent(this.session.access_token)}`);
      } catch {
        resolve(false);
        return;
      }
      ws.binaryType = "arraybuffer";
      const t = setTimeout(() => { ws.close(); resolve(false); }, 5000);
      ws.onmessage = () => { clearTimeout(t); ws.close(); resolve(true); };
      ws.onerror = () => { clearTimeout(t); resolve(false); };
      ws.onclose = () => { clearTimeout(t); resolve(false); };
    });
    if (!ok || this.stopped) {
      this.setState({ wsAvailable: false });
      return;
    }
    if (this.wsCtor === null) this.wsCtor = (await import("y-websocket")).WebsocketProvider;
    this.setState({ wsAvailable: true });
    for (const e of this.entries.values()) this.connectWs(e);
  }

  private wsBase(): string {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}/ws`;
  }

  private connectWs(e: DocEntry): void {
    if (this.stopped || this.wsRefused.has(e.id)) return;
    if (e.ws !== null) { // paused while offline (pauseLive): resume
      if (!e.ws.shouldConnect) e.ws.connect();
      return;
    }
    if (this.wsCtor === null) return;
    const p = new this.wsCtor(this.wsBase(), e.id, e.doc, {
      params: { token: this.session.access_token }, disableBc: true, maxBackoffTime: 10_000,
    });
    p.awareness.setLocalState(null);
    // its `update` handler is called by the one of `open` (local edits: in the task after the
    // input handler, in order with the rest)
    e.doc.off("update", p._updateHandler);
    p.on("status", () => this.countLive());
    p.on("closed", (ev: { code: number; reason: string }) => {
      // The server refused the connection for good. 4401 (no/expired token): HTTP sync carries
      // on, refreshes the token, and reconnects this document after its next success. Any
      // other refusal (e.g. 4403: not readable by this user) is not retried for this document.
      p.destroy();
      e.ws = null;
      if (ev.code !== 4401) this.wsRefused.add(e.id);
      this.countLive();
    });
    e.ws = p;
  }

  private countLive(): void {
    let n = 0;
    for (const e of this.entries.values()) if (e.ws?.wsconnected) n++;
    if (n !== this.state.live) this.setState({ live: n });
  }

  /** New tokens (refresh): later WebSocket connections use the new access token. */
  updateSession(s: Session): void {
    this.session = s;
    void this.meta.set("session", { access_token: s.access_token, device_id: s.device_id });
    for (const e of this.entries.values()) if (e.ws) e.ws.params = { token: s.access_token };
  }

  // --- shutdown --------------------------------------------------------------------------

  async stop(): Promise<void> {
    this.flushLater(); // local edits still queued reach the doc store, the outbox and the other tabs
    this.stopped = true;
    this.tabs?.close();
    this.laterTask.close();
    if (this.timer !== null) clearTimeout(this.timer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("pagehide", this.onHide);
    if (typeof document !== "undefined") document.removeEventListener("visibilitychange", this.onHide);
    await this.outboxWrites.catch(() => undefined);
    for (const e of this.entries.values()) {
      e.ws?.destroy();
      await e.idb.destroy();
      e.doc.destroy();
    }
    this.entries.clear();
    this.meta.close();
  }

  knownDatabases(): string[] {
    return [...this.records.keys()].map((id) => DOC_DB_PREFIX + id);
  }
}

/** y-indexeddb's own update handler (detached from the document in `open`), unless the
 * persistence was destroyed meanwhile (document dropped or engine stopped): it skips updates
 * whose origin is the persistence itself and stores nothing before its database is open (the
 * first load stores the whole state then). */
function storeUpdate(idb: IndexeddbPersistence, update: Uint8Array, origin: unknown): void {
  if (!idb._destroyed) idb._storeUpdate(update, origin);
}

/** Documents pulled at once one by one (a browser opens at most 6 HTTP/1.1 connections per
 * host), when the server has no batch pull. */
const PULL_CONCURRENCY = 6;
/** Documents per batch pull request (the server's MAX_PULL_DOCS). */
const MAX_BATCH_PULL = 200;

/** Run `fn` over `items` with at most `n` in flight; rejects with the first error once the
 * calls in flight have settled (no new call starts after an error). */
async function inParallel<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: { error: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (failed === null && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (error) {
        failed ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (failed !== null) throw (failed as { error: unknown }).error;
}

/** Ask the service worker to push the outbox when the connection returns, even if the app is
 * closed by then (Background Sync; the browser retries with backoff). No-op where unsupported. */
function requestBackgroundSync(): void {
  if (typeof navigator === "undefined" || !("serviceWorker" in navigator)) return;
  void navigator.serviceWorker.ready.then((reg) => {
    const sync = (reg as ServiceWorkerRegistration & { sync?: { register: (tag: string) => Promise<void> } }).sync;
    return sync?.register("fieldsync-outbox");
  }).catch(() => undefined);
}
