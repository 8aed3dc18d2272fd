/** How CRM records live inside CRDT documents: the TypeScript twin of schema/documents.py.
 *
 * Every root is a Y.Map of *writes* keyed `{field}/{ts}/{device}` (materials:
 * `{material_id}/{field}/{ts}/{device}`, notes: `{note_id}/{ts}/{device}`) whose value is
 * `{v, a, r}`. Writing a field deletes every write of it the writer can see and inserts its
 * own, so the live writes of a field are exactly the concurrent candidates. */
import * as Y from "yjs";
import type { Candidate } from "../rules/candidates";
import { sortedStrings } from "../rules/compare";
import { isValidTs } from "../rules/hlc";

export const KIND_JOB = "job";
export const KIND_CUSTOMER = "customer";
export type Kind = typeof KIND_JOB | typeof KIND_CUSTOMER;
export type Root = "fields" | "materials" | "notes";
export const ROOTS: Readonly<Record<Kind, readonly Root[]>> = {
  job: ["fields", "materials", "notes"],
  customer: ["fields"],
};
export const REMOVED = "_removed";

const DEVICE_RE = /^[A-Za-z0-9_-]{1,64}$/;
const FIELD_RE = /^_?[a-z][a-z0-9_]{0,39}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function newId(): string {
  if (typeof crypto !== "undefined" && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function isValidDeviceId(d: unknown): d is string {
  return typeof d === "string" && DEVICE_RE.test(d);
}

export function isValidRecordId(id: unknown): id is string {
  return typeof id === "string" && UUID_RE.test(id);
}

export function docIdFor(kind: Kind, recordId: string): string {
  if (!(kind in ROOTS) || !isValidRecordId(recordId)) throw new Error(`invalid document reference ${kind}:${recordId}`);
  return `${kind}:${recordId}`;
}

export function parseDocId(docId: string): [Kind, string] {
  const i = typeof docId === "string" ? docId.indexOf(":") : -1;
  const kind = i >= 0 ? docId.slice(0, i) : "";
  const rid = i >= 0 ? docId.slice(i + 1) : "";
  if (i < 0 || !(kind in ROOTS) || !isValidRecordId(rid)) throw new Error(`invalid document id: ${JSON.stringify(docId)}`);
  return [kind as Kind, rid];
}

export interface WriteKey {
  readonly root: Root;
  readonly item: string | null;
  readonly field: string | null;
  readonly ts: string;
  readonly device: string;
}

export function makeKey(root: Root, o: { ts: string; device: string; field?: string; item?: string }): string {
  if (root === "fields") return `${o.field}/${o.ts}/${o.device}`;
  if (root === "materials") return `${o.item}/${o.field}/${o.ts}/${o.device}`;
  if (root === "notes") return `${o.item}/${o.ts}/${o.device}`;
  throw new Error(`unknown root ${JSON.stringify(root)}`);
}

export function parseKey(root: Root, key: string): WriteKey {
  const parts = typeof key === "string" ? key.split("/") : [];
  let item: string | null = null;
  let f: string | null;
  let ts: string;
  let dev: string;
  if (root === "fields" && parts.length === 3) {
    [f, ts, dev] = parts as [string, string, string];
  } else if (root === "materials" && parts.length === 4) {
    [item, f, ts, dev] = parts as [string, string, string, string];
    if (!isValidRecordId(item)) throw new Error(`invalid material id in key ${JSON.stringify(key)}`);
  } else if (root === "notes" && parts.length === 3) {
    [item, ts, dev] = parts as [string, string, string];
    f = null;
    if (!isValidRecordId(item)) throw new Error(`invalid note id in key ${JSON.stringify(key)}`);
  } else {
    throw new Error(`malformed key ${JSON.stringify(key)} in root ${JSON.stringify(root)}`);
  }
  if (f !== null && !FIELD_RE.test(f)) throw new Error(`invalid field name in key ${JSON.stringify(key)}`);
  if (!isValidTs(ts)) throw new Error(`invalid timestamp in key ${JSON.stringify(key)}`);
  if (!isValidDeviceId(dev)) throw new Error(`invalid device id in key ${JSON.stringify(key)}`);
  return { root, item, field: f, ts, device: dev };
}

export interface Entry {
  v: unknown;
  a: string;
  r: string;
}

export function entryValue(value: unknown, author: string, role: string): Entry {
  return { v: value, a: author, r: role };
}

/** (value, author, role) of a stored write; throws if malformed. */
export function parseEntry(value: unknown): [unknown, string, string] {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("a write must be an object with exactly the keys v, a, r");
  }
  const keys = Object.keys(value).sort();
  if (keys.length !== 3 || keys[0] !== "a" || keys[1] !== "r" || keys[2] !== "v") {
    throw new Error("a write must be an object with exactly the keys v, a, r");
  }
  const o = value as Record<string, unknown>;
  if (typeof o["a"] !== "string" || typeof o["r"] !== "string") throw new Error("a write's author and role must be strings");
  return [o["v"] === undefined ? null : o["v"], o["a"], o["r"]];
}

function candidate(root: Root, key: string, raw: unknown): [WriteKey, Candidate] {
  const wk = parseKey(root, key);
  const [v, a, r] = parseEntry(raw);
  return [wk, { key, value: v, author: a, role: r, device: wk.device, time: wk.ts }];
}

/** A record's live writes, grouped by field. */
export type RawRecord = Record<string, Candidate[]>;

export interface RawJobDoc {
  kind: "job";
  record: RawRecord;
  materials: Record<string, RawRecord>;
  notes: Record<string, Candidate>;
}

export interface RawCustomerDoc {
  kind: "customer";
  record: RawRecord;
}

function add(rec: RawRecord, f: string, c: Candidate): void {
  (rec[f] ??= []).push(c);
}

export function rootMap(doc: Y.Doc, root: Root): Y.Map<unknown> {
  return doc.getMap<unknown>(root);
}

/** Group a document's live writes by record and field (no rule applied). Malformed keys or
 * values are skipped, as in Python. */
export function readRaw(doc: Y.Doc, kind: "job"): RawJobDoc;
export function readRaw(doc: Y.Doc, kind: "customer"): RawCustomerDoc;
export function readRaw(doc: Y.Doc, kind: Kind): RawJobDoc | RawCustomerDoc;
export function readRaw(doc: Y.Doc, kind: Kind): RawJobDoc | RawCustomerDoc {
  const record: RawRecord = {};
  rootMap(doc, "fields").forEach((raw, key) => {
    try {
      const [wk, c] = candidate("fields", key, raw);
      add(record, wk.field!, c);
    } catch { /* skipped */ }
  });
  if (kind === KIND_CUSTOMER) return { kind: "customer", record };
  const materials: Record<string, RawRecord> = {};
  rootMap(doc, "materials").forEach((raw, key) => {
    try {
      const [wk, c] = candidate("materials", key, raw);
      add((materials[wk.item!] ??= {}), wk.field!, c);
    } catch { /* skipped */ }
  });
  const notes: Record<string, Candidate> = {};
  rootMap(doc, "notes").forEach((raw, key) => {
    try {
      const [wk, c] = candidate("notes", key, raw);
      notes[wk.item!] = c;
    } catch { /* skipped */ }
  });
  return { kind: "job", record, materials, notes };
}

// --- writers: call inside doc.transact(...) ------------------------------------------------

export interface Stamp {
  ts: string;
  device: string;
  author: string;
  role: string;
}

function supersede(m: Y.Map<unknown>, prefix: string): string[] {
  const seen = [...m.keys()].filter((k) => k.startsWith(prefix));
  for (const k of seen) m.delete(k);
  return seen;
}

/** Write one record field: supersede every visible write of it, insert ours. */
export function writeField(doc: Y.Doc, field: string, value: unknown, s: Stamp, root: Root = "fields"): string {
  const m = rootMap(doc, root);
  supersede(m, `${field}/`);
  const key = makeKey("fields", { field, ts: s.ts, device: s.device });
  m.set(key, entryValue(value, s.author, s.role));
  return key;
}

export function writeFields(doc: Y.Doc, values: Readonly<Record<string, unknown>>, s: Stamp): void {
  for (const [f, v] of Object.entries(values)) writeField(doc, f, v, s);
}

export function writeMaterialField(doc: Y.Doc, materialId: string, field: string, value: unknown, s: Stamp): string {
  const m = rootMap(doc, "materials");
  supersede(m, `${materialId}/${field}/`);
  const key = makeKey("materials", { item: materialId, field, ts: s.ts, device: s.device });
  m.set(key, entryValue(value, s.author, s.role));
  return key;
}

/** Mark an item removed, recording which of its writes the remover saw. */
export function removeMaterial(doc: Y.Doc, materialId: string, s: Stamp): string {
  const m = rootMap(doc, "materials");
  const prefix = `${materialId}/`;
  const seen = sortedStrings([...m.keys()].filter((k) => k.startsWith(prefix) && k.split("/")[1] !== REMOVED));
  supersede(m, `${materialId}/${REMOVED}/`);
  const key = makeKey("materials", { item: materialId, field: REMOVED, ts: s.ts, device: s.device });
  m.set(key, entryValue(seen, s.author, s.role));
  return key;
}

export function addNote(doc: Y.Doc, noteId: string, body: string, s: Stamp): string {
  const m = rootMap(doc, "notes");
  const key = makeKey("notes", { item: noteId, ts: s.ts, device: s.device });
  m.set(key, entryValue(body, s.author, s.role));
  return key;
}

/** The greatest timestamp of any write in the document (to advance the local HLC). */
export function maxTimestamp(doc: Y.Doc): string | null {
  let best: string | null = null;
  for (const root of ["fields", "materials", "notes"] as const) {
    rootMap(doc, root).forEach((_v, key) => {
      const parts = key.split("/");
      const ts = parts[parts.length - 2];
      if (ts !== undefined && isValidTs(ts) && (best === null || ts > best)) best = ts;
    });
  }
  return best;
}
