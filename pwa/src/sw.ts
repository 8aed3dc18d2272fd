/// <reference lib="webworker" />
/** The service worker: precaches the app (Workbox) so it starts offline, serves index.html for
 * client routes, and pushes the outbox in the background when the connection returns
 * (Background Sync: the browser re-runs a failed sync with backoff, even with the app closed). */
import { clientsClaim } from "workbox-core";
import { cleanupOutdatedCaches, createHandlerBoundToURL, precacheAndRoute } from "workbox-precaching";
import { NavigationRoute, registerRoute } from "workbox-routing";
import { MetaStore } from "./lib/idb";
import { pushRound } from "./sync/push";

declare const self: ServiceWorkerGlobalScope & { __WB_MANIFEST: Array<{ url: string; revision: string | null }> };

void self.skipWaiting();
clientsClaim();
precacheAndRoute(self.__WB_MANIFEST);
cleanupOutdatedCaches();
registerRoute(new NavigationRoute(createHandlerBoundToURL("/index.html"), {
  denylist: [/^\/api(\/|$)/, /^\/ws(\/|$)/, /^\/healthz/],
}));

interface SyncEvent extends ExtendableEvent {
  readonly tag: string;
}

/** Push every queued update; throw when some remain so Background Sync retries later. */
async function backgroundPush(): Promise<void> {
  const meta = await MetaStore.open();
  try {
    const session = await meta.get<{ access_token: string; device_id: string }>("session");
    if (!session) return;
    for (let round = 0; round < 50; round++) {
      const r = await pushRound(meta, session.device_id, async (body) => {
        const res = await fetch("/api/sync/push", {
          method: "POST", cache: "no-store", credentials: "omit",
          headers: { "Content-Type": "application/json", Authorization: `Bearer ${session.access_token}` },
          body: JSON.stringify(body),
        });
        if (!res.ok) throw new Error(`push failed: HTTP ${res.status}`);
        return ((await res.json()) as { data: { results: any[] } }).data;
      });
      if (r.empty) return;
      // a refusal for good is left for the app, which resets that document and tells the user;
      // writes stamped ahead of the server's clock (CLOCK_SKEW) too: the app re-stamps them
      if (r.blocked || r.refused.size > 0 || r.skewed.size > 0 || r.acked.length === 0) break;
    }
    if ((await meta.outboxCount()) > 0) throw new Error("updates still waiting");
  } finally {
    meta.close();
  }
  const clients = await self.clients.matchAll({ type: "window" });
  for (const c of clients) c.postMessage({ type: "fieldsync-pushed" });
}

self.addEventListener("sync", (event) => {
  const e = event as SyncEvent;
  if (e.tag === "fieldsync-outbox") e.waitUntil(backgroundPush());
});

self.addEventListener("message", (event) => {
  if ((event.data as { type?: string } | null)?.type === "fieldsync-push") event.waitUntil(backgroundPush().catch(() => undefined));
});
