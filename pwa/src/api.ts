/** HTTP client of the server API: bearer tokens, one refresh at a time, error envelope. */
import { loadSession, saveSession, type Session } from "./session";

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly details: unknown = []) {
    super(message);
    this.name = "ApiError";
  }
}

/** The network is unreachable (offline, server down): retry later. */
export class NetworkError extends Error {
  constructor(message = "the server cannot be reached") {
    super(message);
    this.name = "NetworkError";
  }
}

type Listener = (s: Session | null) => void;
let listener: Listener | null = null;
let refreshing: Promise<Session> | null = null;

/** Called when tokens rotate (to update WebSocket params) or the session ends. */
export function onSessionChange(l: Listener | null): void {
  listener = l;
}

async function parse(res: Response): Promise<any> {
  return parseText(await res.text());
}

function parseText(text: string): any {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function raw(method: string, path: string, body: unknown, token: string | null): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers["Authorization"] = `Bearer ${token}`;
  try {
    return await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit", cache: "no-store",
    });
  } catch (e) {
    throw new NetworkError(e instanceof Error ? e.message : String(e));
  }
}

function toError(res: { status: number; statusText: string }, data: any): ApiError {
  const err = data?.error;
  return new ApiError(res.status, err?.code ?? `HTTP_${res.status}`, err?.message ?? res.statusText, err?.details ?? []);
}

/** Sign in. `deviceId` re-uses this browser's device (a re-login after the session expired keeps
 * the device, so edits still waiting in the outbox, stamped with it, remain valid). */
export async function login(email: string, password: string, deviceId?: string,
                            sent?: Promise<{ ok: boolean; status: number; statusText: string; text: string }>): Promise<Session> {
  let res: { ok: boolean; status: number; statusText: string };
  let data: any;
  if (sent) {
    // the same request, already sent by index.html's sign-in form (src/boot.ts)
    let r: { ok: boolean; status: number; statusText: string; text: string };
    try {
      r = await sent;
    } catch (e) {
      throw new NetworkError(e instanceof Error ? e.message : String(e));
    }
    res = r;
    data = parseText(r.text);
  } else {
    const body: Record<string, string> = { email, password, device_name: navigator.userAgent.slice(0, 200) };
    if (deviceId) body["device_id"] = deviceId;
    const r = await raw("POST", "/api/auth/login", body, null);
    res = r;
    data = await parse(r);
  }
  if (!res.ok) throw toError(res, data);
  const s = data.data as Session;
  const session: Session = {
    access_token: s.access_token, refresh_token: s.refresh_token, csrf_token: s.csrf_token, device_id: s.device_id,
    user: s.user,
  };
  saveSession(session);
  return session;
}

async function doRefresh(old: Session): Promise<Session> {
  const res = await raw("POST", "/api/auth/refresh", { refresh_token: old.refresh_token }, null);
  const data = await parse(res);
  if (!res.ok) throw toError(res, data);
  const s = data.data as Session;
  const next: Session = { ...old, access_token: s.access_token, refresh_token: s.refresh_token, csrf_token: s.csrf_token,
    user: s.user ?? old.user };
  saveSession(next);
  listener?.(next);
  return next;
}

/** Rotate the refresh token once, even if several requests need it at the same moment (and
 * across tabs with Web Locks, since a reused refresh token revokes the session). */
export function refreshSession(): Promise<Session> {
  if (refreshing) return refreshing;
  const run = async (): Promise<Session> => {
    const current = loadSession();
    if (!current) throw new ApiError(401, "UNAUTHENTICATED", "not signed in");
    return doRefresh(current);
  };
  const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
  const p = (locks ? locks.request("fieldsync-refresh", run) : run()) as Promise<Session>;
  const shared: Promise<Session> = p.finally(() => { refreshing = null; });
  refreshing = shared;
  return shared;
}

const REFRESHABLE = new Set(["INVALID_TOKEN", "TOKEN_EXPIRED", "TOKEN_STALE", "UNAUTHENTICATED"]);

/** Call the API with the session's access token; refresh once on an expired token. Returns `data`
 * and `meta` of the envelope. */
export async function api<T = any>(method: string, path: string, body?: unknown): Promise<{ data: T; meta: any }> {
  let session = loadSession();
  if (!session) throw new ApiError(401, "UNAUTHENTICATED", "not signed in");
  for (let attempt = 0; ; attempt++) {
    const res = await raw(method, path, body, session.access_token);
    const data = await parse(res);
    if (res.ok) return { data: data?.data as T, meta: data?.meta ?? {} };
    const err = toError(res, data);
    if (res.status === 401 && attempt === 0 && REFRESHABLE.has(err.code)) {
      const used: string = session.access_token;
      const latest = loadSession();
      session = latest && latest.access_token !== used ? latest : await refreshSession();
      continue;
    }
    if (res.status === 401) listener?.(null);
    throw err;
  }
}

export async function logoutRemote(): Promise<void> {
  const s = loadSession();
  if (!s) return;
  try {
    await raw("POST", "/api/auth/logout", { refresh_token: s.refresh_token }, s.access_token);
  } catch { /* offline: the local data is cleared anyway */ }
}
