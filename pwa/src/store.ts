/** App state (Zustand): the session, the sync engine and its status, and a revision counter
 * bumped on every document change so screens re-render from the resolved views. */
import { create } from "zustand";
import { login, logoutRemote, onSessionChange } from "./api";
import type { BootResponse } from "./boot";
import { deleteAllDatabases } from "./lib/idb";
import { clearLocalStorage, loadSession, type Session } from "./session";
import { SyncEngine, type SyncState } from "./sync/engine";

const DEVICE_KEY = "fieldsync.device";

export interface AppState {
  session: Session | null;
  engine: SyncEngine | null;
  sync: SyncState | null;
  rev: number;
  /** the server ended the session: sign in again (local data is kept) */
  needsLogin: boolean;
  booting: boolean;
  /** `sent`: the login request index.html's form already sent for these credentials */
  signIn: (email: string, password: string, sent?: Promise<BootResponse>) => Promise<void>;
  signOut: () => Promise<void>;
}

export const useApp = create<AppState>()((set, get) => ({
  session: null,
  engine: null,
  sync: null,
  rev: 0,
  needsLogin: false,
  booting: true,
  async signIn(email, password, sent) {
    const prev = loadSession();
    const lastDevice = localStorage.getItem(DEVICE_KEY);
    // the same user signing in again keeps the device, so queued edits stay valid
    const sameUser = prev !== null && prev.user.email.toLowerCase() === email.trim().toLowerCase();
    const session = await login(email.trim(), password, sameUser && lastDevice ? lastDevice : undefined,
                                sent && prev === null ? sent : undefined);
    if (prev !== null && !sameUser) {
      await get().engine?.stop();
      await deleteAllDatabases();
      set({ engine: null, sync: null });
    }
    localStorage.setItem(DEVICE_KEY, session.device_id);
    set({ session, needsLogin: false });
    const engine = get().engine;
    if (engine) engine.updateSession(session);
    else await startEngine(session);
  },
  async signOut() {
    const { engine } = get();
    const known = engine?.knownDatabases() ?? [];
    await logoutRemote();
    await engine?.stop();
    await deleteAllDatabases(known);
    clearLocalStorage();
    set({ session: null, engine: null, sync: null, needsLogin: false, rev: 0 });
  },
}));

async function startEngine(session: Session): Promise<void> {
  const engine = await SyncEngine.start(
    session,
    () => useApp.setState((s) => ({ rev: s.rev + 1 })),
    (sync) => useApp.setState({ sync }),
    (window as unknown as { __FIELDSYNC_ENGINE_OPTIONS__?: object }).__FIELDSYNC_ENGINE_OPTIONS__ ?? {},
  );
  useApp.setState({ engine, sync: engine.state, rev: 1 });
  (window as unknown as { __fieldsync?: unknown }).__fieldsync = engine; // diagnostics / tests
}

onSessionChange((s) => {
  if (s === null) {
    useApp.setState({ needsLogin: true });
    return;
  }
  useApp.setState({ session: s });
  useApp.getState().engine?.updateSession(s);
});

/** Start from the stored session (works offline). */
export async function boot(): Promise<void> {
  const session = loadSession();
  if (session) {
    useApp.setState({ session });
    try {
      await startEngine(session);
    } catch (e) {
      console.error("could not open the local replica", e);
    }
  }
  useApp.setState({ booting: false });
}
