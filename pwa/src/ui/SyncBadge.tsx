import { useApp } from "../store";
import { fmtShortTime, fmtTime } from "./hooks";

/** Online/offline, changes waiting, last sync: always visible. */
export function SyncBadge({ compact = false }: { compact?: boolean }) {
  const sync = useApp((s) => s.sync);
  const engine = useApp((s) => s.engine);
  if (!sync) return null;
  const online = sync.online && navigator.onLine;
  const waiting = sync.pending === 1 ? "1 change waiting" : `${sync.pending} changes waiting`;
  return (
    <div className={`sync-badge ${online ? "is-online" : "is-offline"}`} role="status" aria-live="polite"
         data-testid="sync-badge" data-pending={sync.pending} data-online={online ? "1" : "0"}>
      <span className="dot" aria-hidden="true" />
      <span className="sync-state">{online ? (sync.live > 0 ? "Live" : "Online") : "Offline"}</span>
      <span className="sync-pending" data-testid="pending">{waiting}</span>
      {compact ? (
        // the phone's top bar: the last sync as a short time (the Sync tab has the details)
        <span className="sync-when" data-testid="last-sync" title={`Last sync ${fmtTime(sync.lastSync)}`}>
          synced {fmtShortTime(sync.lastSync)}
        </span>
      ) : <span className="sync-last" data-testid="last-sync">Last sync {fmtTime(sync.lastSync)}</span>}
      {!compact && <button type="button" className="btn-small" onClick={() => void engine?.syncNow()} disabled={sync.syncing}
              aria-label="Sync now">{sync.syncing ? "Syncing…" : "Sync"}</button>}
    </div>
  );
}

export function Notices() {
  const sync = useApp((s) => s.sync);
  const engine = useApp((s) => s.engine);
  if (!sync || sync.notices.length === 0) return null;
  return (
    <div className="notice" role="alert">
      {sync.notices.map((n, i) => <p key={i}>{n}</p>)}
      <button type="button" className="btn" onClick={() => engine?.dismissNotices()}>Dismiss</button>
    </div>
  );
}

export function SyncPanel() {
  const sync = useApp((s) => s.sync);
  const engine = useApp((s) => s.engine);
  const session = useApp((s) => s.session);
  const signOut = useApp((s) => s.signOut);
  if (!sync || !session) return null;
  return (
    <section className="card" aria-labelledby="sync-h">
      <h2 id="sync-h">Sync</h2>
      <dl className="facts">
        <dt>Connection</dt><dd>{sync.online && navigator.onLine ? "Online" : "Offline"}</dd>
        <dt>Live documents</dt><dd>{sync.live}{sync.wsAvailable === false ? " (live sync not offered: HTTP sync)" : ""}</dd>
        <dt>Changes waiting</dt><dd>{sync.pending}</dd>
        <dt>Last sync</dt><dd>{fmtTime(sync.lastSync)}</dd>
        <dt>Last error</dt><dd>{sync.lastError ?? "none"}</dd>
        <dt>Signed in as</dt><dd>{session.user.name} ({session.user.role})</dd>
        <dt>Device</dt><dd><code>{session.device_id}</code></dd>
      </dl>
      <div className="actions">
        <button type="button" className="btn btn-primary" onClick={() => void engine?.syncNow()} disabled={sync.syncing}>
          {sync.syncing ? "Syncing…" : "Sync now"}</button>
      </div>
      <button type="button" className="btn btn-danger" onClick={() => {
        if (sync.pending === 0 || confirm(`${sync.pending} changes have not reached the server and will be lost. Sign out?`)) void signOut();
      }}>Sign out and clear this device</button>
    </section>
  );
}
