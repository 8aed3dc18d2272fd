/** The signed-in session: tokens, user and device id, kept in localStorage so the app starts
 * offline. Cleared on logout together with every IndexedDB database. */

export type Role = "owner" | "office" | "crew";

export interface User {
  id: string;
  email: string;
  name: string;
  role: Role;
}

export interface Session {
  access_token: string;
  refresh_token: string;
  csrf_token: string;
  device_id: string;
  user: User;
}

const KEY = "fieldsync.session";

export function loadSession(): Session | null {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return null;
    const s = JSON.parse(raw) as Session;
    if (!s.access_token || !s.user?.id || !s.device_id) return null;
    return s;
  } catch {
    return null;
  }
}

export function saveSession(s: Session): void {
  localStorage.setItem(KEY, JSON.stringify(s));
}

export function clearLocalStorage(): void {
  for (const k of Object.keys(localStorage)) if (k.startsWith("fieldsync.")) localStorage.removeItem(k);
}

export function isOffice(role: Role | undefined): boolean {
  return role === "owner" || role === "office";
}
