/** A few promise helpers over IndexedDB for the sync engine's own state (outbox, cursors). */

export const META_DB = "fieldsync-meta";
export const DOC_DB_PREFIX = "fieldsync-doc:";

export interface OutboxEntry {
  id?: number;
  doc_id: string;
  update: Uint8Array;
  created: number;
}

export interface DocRecord {
  doc_id: string;
  /** the server log sequence number this replica has pulled up to (0: never pulled) */
  seq: number;
}

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
  });
}

export class MetaStore {
  private constructor(private readonly db: IDBDatabase) {}

  static open(name: string = META_DB): Promise<MetaStore> {
    return new Promise((resolve, reject) => {
      const r = indexedDB.open(name, 1);
      r.onupgradeneeded = () => {
        const db = r.result;
        db.createObjectStore("outbox", { keyPath: "id", autoIncrement: true });
        db.createObjectStore("docs", { keyPath: "doc_id" });
        db.createObjectStore("kv");
      };
      r.onsuccess = () => resolve(new MetaStore(r.result));
      r.onerror = () => reject(r.error);
      r.onblocked = () => reject(new Error("the local database is blocked by another tab"));
    });
  }

  close(): void {
    this.db.close();
  }

  async addOutbox(e: OutboxEntry): Promise<number> {
    const tx = this.db.transaction("outbox", "readwrite");
    const id = await req(tx.objectStore("outbox").add(e));
    await done(tx);
    return id as number;
  }

  async outbox(limit = 1000): Promise<OutboxEntry[]> {
    const tx = this.db.transaction("outbox", "readonly");
    return req(tx.objectStore("outbox").getAll(undefined, limit)) as Promise<OutboxEntry[]>;
  }

  async outboxCount(): Promise<number> {
    const tx = this.db.transaction("outbox", "readonly");
    return req(tx.objectStore("outbox").count());
  }

  /** Replace a document's queued updates by one update, `merge` of them (oldest first), in one
   * transaction: it takes the first one's place, so the outbox order is kept. Returns how many
   * entries were merged. */
  async mergeOutbox(docId: string, merge: (updates: Uint8Array[]) => Uint8Array): Promise<number> {
    const tx = this.db.transaction("outbox", "readwrite");
    const s = tx.objectStore("outbox");
    const mine = ((await req(s.getAll())) as OutboxEntry[]).filter((e) => e.doc_id === docId);
    if (mine.length > 1) {
      const merged = merge(mine.map((e) => e.update));
      for (const e of mine.slice(1)) s.delete(e.id!);
      s.put({ ...mine[0], update: merged });
    }
    await done(tx);
    return mine.length;
  }

  async deleteOutbox(ids: number[]): Promise<void> {
    if (ids.length === 0) return;
    const tx = this.db.transaction("outbox", "readwrite");
    const s = tx.objectStore("outbox");
    for (const id of ids) s.delete(id);
    await done(tx);
  }

  async docs(): Promise<DocRecord[]> {
    const tx = this.db.transaction("docs", "readonly");
    return req(tx.objectStore("docs").getAll()) as Promise<DocRecord[]>;
  }

  async putDoc(d: DocRecord): Promise<void> {
    const tx = this.db.transaction("docs", "readwrite");
    tx.objectStore("docs").put(d);
    await done(tx);
  }

  async deleteDoc(docId: string): Promise<void> {
    const tx = this.db.transaction("docs", "readwrite");
    tx.objectStore("docs").delete(docId);
    await done(tx);
  }

  async get<T>(key: string): Promise<T | undefined> {
    const tx = this.db.transaction("kv", "readonly");
    return req(tx.objectStore("kv").get(key)) as Promise<T | undefined>;
  }

  async set(key: string, value: unknown): Promise<void> {
    const tx = this.db.transaction("kv", "readwrite");
    tx.objectStore("kv").put(value, key);
    await done(tx);
  }
}

export function deleteDatabase(name: string): Promise<void> {
  return new Promise((resolve) => {
    const r = indexedDB.deleteDatabase(name);
    r.onsuccess = () => resolve();
    r.onerror = () => resolve();
    r.onblocked = () => resolve();
  });
}

/** Delete every IndexedDB database this app created (logout). */
export async function deleteAllDatabases(known: string[] = []): Promise<void> {
  const names = new Set<string>([META_DB, ...known]);
  try {
    const list = await indexedDB.databases();
    for (const d of list) if (d.name && (d.name.startsWith("fieldsync") || d.name.startsWith(DOC_DB_PREFIX))) names.add(d.name);
  } catch { /* databases() is not available everywhere; the known list is used then */ }
  await Promise.all([...names].map(deleteDatabase));
}
