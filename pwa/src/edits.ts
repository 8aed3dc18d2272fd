/** Domain edits, written into the documents through the codec (the same writes as the Python
 * replica). Every edit applies locally at once; the engine queues it for the server. */
import { addNote, docIdFor, newId, removeMaterial, writeField, writeMaterialField } from "./doc/codec";
import type { SyncEngine } from "./sync/engine";
import { checkName, checkQuantity, checkText, crewMayMove } from "./validate";

export class EditError extends Error {}

function must(err: string | null, what: string): void {
  if (err) throw new EditError(`${what}: ${err}`);
}

export function createCustomer(engine: SyncEngine, fields: { name: string; phone?: string | null; email?: string | null;
  address?: string | null; notes?: string | null }): string {
  must(checkName(fields.name), "Name");
  const id = newId();
  const docId = docIdFor("customer", id);
  const values: Record<string, unknown> = { name: fields.name.trim() };
  for (const k of ["phone", "email", "address", "notes"] as const) if (fields[k]) values[k] = fields[k];
  engine.edit(docId, (doc, s) => {
    for (const [f, v] of Object.entries(values)) writeField(doc, f, v, s);
  });
  return id;
}

export function updateRecord(engine: SyncEngine, kind: "customer" | "job", id: string,
                             values: Record<string, unknown>): void {
  if (Object.keys(values).length === 0) return;
  engine.edit(docIdFor(kind, id), (doc, s) => {
    for (const [f, v] of Object.entries(values)) writeField(doc, f, v, s);
  });
}

export function createJob(engine: SyncEngine, customerId: string, title: string, extra: Record<string, unknown> = {}): string {
  must(checkName(title), "Title");
  const id = newId();
  const { user } = engine.principal;
  const values: Record<string, unknown> = { customer_id: customerId, title: title.trim(), status: "lead", ...extra };
  if (user.role !== "crew" && values["owner_id"] === undefined) values["owner_id"] = user.id;
  if (values["crew"] === undefined) values["crew"] = [];
  updateRecord(engine, "job", id, values);
  return id;
}

export function setStatus(engine: SyncEngine, jobId: string, status: string, role: string): void {
  const view = engine.view(docIdFor("job", jobId));
  const current = view?.record["status"];
  if (role === "crew" && !crewMayMove(current, status)) {
    throw new EditError(`A crew member may not move a job from ${String(current)} to ${status}.`);
  }
  updateRecord(engine, "job", jobId, { status });
}

export function addMaterial(engine: SyncEngine, jobId: string, name: string, quantity: number, unit: string | null): string {
  must(checkName(name), "Material name");
  must(checkQuantity(quantity), "Quantity");
  const mid = newId();
  const values: Record<string, unknown> = { name: name.trim(), quantity, purchased: false };
  if (unit) values["unit"] = unit;
  engine.edit(docIdFor("job", jobId), (doc, s) => {
    for (const [f, v] of Object.entries(values)) writeMaterialField(doc, mid, f, v, s);
  });
  return mid;
}

function liveMaterial(engine: SyncEngine, jobId: string, mid: string): boolean {
  const v = engine.view(docIdFor("job", jobId));
  return v?.materials.some((m) => m.id === mid && !m.removed) ?? false;
}

/** Change fields of live material items (one local transaction: one queued change). */
export function updateMaterials(engine: SyncEngine, jobId: string, ids: string[], values: Record<string, unknown>): void {
  // editing a removed item would resurrect it (the removal did not see the new write)
  const live = ids.filter((mid) => liveMaterial(engine, jobId, mid));
  if (live.length === 0 || Object.keys(values).length === 0) return;
  if (typeof values["quantity"] === "number") must(checkQuantity(values["quantity"]), "Quantity");
  engine.edit(docIdFor("job", jobId), (doc, s) => {
    for (const mid of live) for (const [f, v] of Object.entries(values)) writeMaterialField(doc, mid, f, v, s);
  });
}

export function removeMaterials(engine: SyncEngine, jobId: string, ids: string[]): void {
  const live = ids.filter((mid) => liveMaterial(engine, jobId, mid));
  if (live.length === 0) return;
  engine.edit(docIdFor("job", jobId), (doc, s) => {
    for (const mid of live) removeMaterial(doc, mid, s);
  });
}

export function addJobNote(engine: SyncEngine, jobId: string, body: string): string {
  const text = body.replace(/\r\n/g, "\n").trim();
  if (!text) throw new EditError("A note must not be blank.");
  must(checkText(text), "Note");
  const nid = newId();
  engine.edit(docIdFor("job", jobId), (doc, s) => addNote(doc, nid, text, s));
  return nid;
}
