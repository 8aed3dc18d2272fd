/** The resolved view of a record document (port of schema/view.py). */
import * as Y from "yjs";
import { EMPTY_CONTEXT, resolutionValue, type Candidate, type Resolution, type RuleContext } from "../rules/candidates";
import { cmpStr, sortedStrings } from "../rules/compare";
import { explainEntries, explainItem, explainResolution, type Explanation } from "../rules/explain";
import * as registry from "../rules/registry";
import { itemValues, REMOVED, type ItemFields, type ItemResolution } from "../rules/union";
import { readRaw, type Kind, type RawCustomerDoc, type RawJobDoc, type RawRecord } from "./codec";

export const MATERIAL = "material";

export interface MaterialView {
  id: string;
  fields: Record<string, unknown>;
  removed: boolean;
  resolution: ItemResolution;
}

export interface NoteView {
  id: string;
  body: unknown;
  author: string;
  role: string;
  device: string;
  time: string;
}

export interface DocView {
  kind: Kind;
  record: Record<string, unknown>;
  recordResolutions: Record<string, Resolution>;
  /** every item, removed ones included, in id order */
  materials: MaterialView[];
  notes: NoteView[];
  context: RuleContext;
}

function resolveRecord(kind: Kind, rec: RawRecord): [Record<string, Resolution>, RuleContext] {
  const known: Record<string, Candidate[]> = {};
  for (const [f, cs] of Object.entries(rec)) if (registry.isDeclared(kind, f, "field")) known[f] = cs;
  let ctx: RuleContext = EMPTY_CONTEXT;
  if (kind === "job" && known["owner_id"] !== undefined) {
    const owner = resolutionValue(registry.resolveField(kind, "owner_id", known["owner_id"], ctx));
    ctx = { record_owner: typeof owner === "string" ? owner : null };
  }
  const out: Record<string, Resolution> = {};
  for (const f of sortedStrings(Object.keys(known))) out[f] = registry.resolveField(kind, f, known[f]!, ctx);
  return [out, ctx];
}

function materialField(f: string, cs: readonly Candidate[], ctx: RuleContext): Resolution {
  return registry.resolveField(MATERIAL, f, cs, ctx);
}

function resolveMaterials(items: Record<string, RawRecord>, ctx: RuleContext): MaterialView[] {
  const rule = registry.getRule(registry.ruleFor("job", "materials"));
  if (rule.shape !== "items") throw new TypeError("job.materials must use an items-shaped rule");
  const known: Record<string, ItemFields> = {};
  for (const [mid, rec] of Object.entries(items)) {
    const fields: Record<string, Candidate[]> = {};
    for (const [f, cs] of Object.entries(rec)) {
      if (f === REMOVED || registry.isDeclared(MATERIAL, f, "field")) fields[f] = cs;
    }
    known[mid] = fields;
  }
  const resolved = rule.resolver(known, ctx, materialField);
  return [...resolved.values()].map((item) => ({
    id: item.item_id, fields: itemValues(item), removed: item.removed, resolution: item,
  }));
}

function resolveNotes(notes: Record<string, Candidate>): NoteView[] {
  const rule = registry.getRule(registry.ruleFor("job", "notes"));
  if (rule.shape !== "entries") throw new TypeError("job.notes must use an entries-shaped rule");
  const ids = new Map<string, string>();
  for (const [nid, c] of Object.entries(notes)) ids.set(c.key, nid);
  return rule.resolver(Object.values(notes)).map((c) => ({
    id: ids.get(c.key)!, body: c.value, author: c.author, role: c.role, device: c.device, time: c.time,
  }));
}

export function resolveRaw(raw: RawJobDoc | RawCustomerDoc): DocView {
  const [resolutions, ctx] = resolveRecord(raw.kind, raw.record);
  const record: Record<string, unknown> = {};
  for (const [f, r] of Object.entries(resolutions)) record[f] = resolutionValue(r);
  const view: DocView = { kind: raw.kind, record, recordResolutions: resolutions, materials: [], notes: [], context: ctx };
  if (raw.kind === "job") {
    view.materials = resolveMaterials(raw.materials, ctx);
    view.notes = resolveNotes(raw.notes);
  }
  return view;
}

export function resolveDoc(doc: Y.Doc, kind: Kind): DocView {
  return resolveRaw(readRaw(doc, kind));
}

/** A JSON snapshot comparable with Python's DocView.to_json(). */
export function viewToJson(v: DocView): Record<string, unknown> {
  const materials: Record<string, unknown> = {};
  for (const m of [...v.materials].sort((a, b) => cmpStr(a.id, b.id))) {
    materials[m.id] = { fields: m.fields, removed: m.removed, reason: m.resolution.reason };
  }
  return { kind: v.kind, record: v.record, materials, notes: v.notes };
}

/** Explain one path: a field name, `materials/<id>`, `materials/<id>/<field>` or `notes`. */
export function explainRaw(raw: RawJobDoc | RawCustomerDoc, path: string, record?: string): Explanation {
  const kind = raw.kind;
  const view = resolveRaw(raw);
  const rec = record ?? kind;
  const parts = path.split("/");
  if (raw.kind === "job" && parts[0] === "notes" && parts.length === 1) {
    const out = explainEntries(rec, "notes", Object.values(raw.notes));
    const ids = new Map(Object.entries(raw.notes).map(([nid, c]) => [c.key, nid]));
    for (const d of out.candidates) d.id = ids.get(d.key)!;
    return out;
  }
  if (raw.kind === "job" && parts[0] === "materials" && (parts.length === 2 || parts.length === 3)) {
    const item = view.materials.find((m) => m.id === parts[1]);
    if (item === undefined) throw new Error(`no material ${JSON.stringify(parts[1])} in this job`);
    if (parts.length === 2) return explainItem(rec, item.resolution);
    const f = parts[2]!;
    if (!registry.isDeclared(MATERIAL, f, "field")) throw new Error(`unknown material field ${JSON.stringify(f)}`);
    const res = item.resolution.fields[f] ?? registry.resolveField(MATERIAL, f, [], view.context);
    return explainResolution(rec, path, res, view.context);
  }
  if (parts.length === 1 && registry.isDeclared(kind, path, "field")) {
    const res = view.recordResolutions[path] ?? registry.resolveField(kind, path, [], view.context);
    return explainResolution(rec, path, res, view.context);
  }
  throw new Error(`unknown path ${JSON.stringify(path)} for a ${kind}`);
}

export function explainPath(doc: Y.Doc, kind: Kind, path: string, record?: string): Explanation {
  return explainRaw(readRaw(doc, kind), path, record);
}
