/** Names of users (for crew assignment and authors). The server's user list is used when the
 * API offers it (GET /api/users); otherwise ids seen in documents are shown shortened. */
import { create } from "zustand";
import { api } from "../api";

export interface Person {
  id: string;
  name: string;
  role: string;
  email?: string;
}

interface People {
  byId: Record<string, Person>;
  loaded: boolean;
  load: () => Promise<void>;
}

const CACHE = "fieldsync.people";

export const usePeople = create<People>()((set, get) => ({
  byId: (() => {
    try {
      return JSON.parse(localStorage.getItem(CACHE) ?? "{}") as Record<string, Person>;
    } catch {
      return {};
    }
  })(),
  loaded: false,
  async load() {
    if (get().loaded) return;
    try {
      const { data } = await api<unknown>("GET", "/api/users?limit=500");
      const list = (Array.isArray(data) ? data : (data as { users?: unknown[] })?.users ?? []) as Person[];
      const byId: Record<string, Person> = { ...get().byId };
      for (const u of list) if (u && typeof u.id === "string") byId[u.id] = { id: u.id, name: u.name ?? u.email ?? u.id, role: u.role, email: u.email };
      localStorage.setItem(CACHE, JSON.stringify(byId));
      set({ byId, loaded: true });
    } catch {
      set({ loaded: true });
    }
  },
}));

export function remember(p: Person): void {
  const byId = { ...usePeople.getState().byId, [p.id]: p };
  localStorage.setItem(CACHE, JSON.stringify(byId));
  usePeople.setState({ byId });
}

export function personName(byId: Record<string, Person>, id: string, me?: string): string {
  if (me && id === me) return "You";
  return byId[id]?.name ?? `User ${id.slice(0, 8)}`;
}
