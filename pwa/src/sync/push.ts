/** One round of pushing the outbox (shared by the page's sync engine and the service worker's
 * background sync): up to 100 queued updates, in order, in one batch request. */
import { toBase64 } from "../lib/base64";
import type { MetaStore, OutboxEntry } from "../lib/idb";

/** Refusals after which the same update may succeed later. */
export const TRANSIENT = new Set(["MISSING_DEPENDENCIES", "UNAVAILABLE", "RATE_LIMITED", "INTERNAL_ERROR"]);

export interface PushRound {
  /** outbox ids acknowledged (and deleted) */
  acked: number[];
  /** documents refused for good: doc id -> reason (their entries are left in the outbox) */
  refused: Map<string, string>;
  /** documents whose writes were stamped too far ahead of the server's clock (CLOCK_SKEW):
   * doc id -> the server's wall clock (ms). Not refused for good: the page re-stamps them
   * (`SyncEngine.restampDoc`); their entries stay in the outbox. */
  skewed: Map<string, number>;
  /** a transient refusal stopped the round: retry later */
  blocked: boolean;
  /** nothing was left to push */
  empty: boolean;
}

export type PushCall = (body: unknown) => Promise<{ results: any[] }>;

export async function pushRound(meta: MetaStore, deviceId: string, call: PushCall): Promise<PushRound> {
  const entries: OutboxEntry[] = await meta.outbox(100);
  if (entries.length === 0) return { acked: [], refused: new Map(), skewed: new Map(), blocked: false, empty: true };
  const data = await call({
    updates: entries.map((e) => ({ doc_id: e.doc_id, update: toBase64(e.update), idempotency_key: `${deviceId}-${e.id}` })),
  });
  const acked: number[] = [];
  const refused = new Map<string, string>();
  const skewed = new Map<string, number>();
  let blocked = false;
  entries.forEach((e, i) => {
    const r = data.results[i];
    if (r && r.error === undefined && typeof r.seq === "number") {
      acked.push(e.id!);
    } else if (!blocked && !refused.has(e.doc_id) && !skewed.has(e.doc_id)) {
      // after a transient failure, later updates wait for the next round, in order
      const code: string = r?.error?.code ?? "UNKNOWN";
      const status: number = r?.status ?? 0;
      const serverMs = r?.error?.details?.server_time_ms;
      if (TRANSIENT.has(code) || status >= 500 || status === 429 || status === 401) blocked = true;
      else if (code === "CLOCK_SKEW" && Number.isSafeInteger(serverMs) && serverMs > 0) skewed.set(e.doc_id, serverMs);
      else refused.set(e.doc_id, `${code}: ${r?.error?.message ?? "refused"}`);
    }
  });
  await meta.deleteOutbox(acked);
  return { acked, refused, skewed, blocked, empty: false };
}
