/** Union: every item kept; an edit beats a concurrent removal (port of conflict_rules/union.py). */
import * as lww from "./lww";
import { cmpStr, sortedStrings } from "./compare";
import { EMPTY_CONTEXT, resolutionValue, type Candidate, type Resolution, type RuleContext } from "./candidates";

export const NAME = "union";
export const REMOVED = "_removed";
export const PRESENT = "present";
export const ITEM_REMOVED = "removed";
export const KEPT_CONCURRENT_EDIT = "kept_concurrent_edit";

export const REASONS: Readonly<Record<string, string>> = {
  [PRESENT]: "Nobody removed this item.",
  [ITEM_REMOVED]: "A removal saw every live write of this item, so the item is removed.",
  [KEPT_CONCURRENT_EDIT]: "The item was removed, but no removal saw every live write of it: " +
    "an edit concurrent with the removal keeps the item.",
};

export type FieldRule = (field: string, cs: readonly Candidate[], ctx: RuleContext) => Resolution;
export type ItemFields = Readonly<Record<string, readonly Candidate[]>>;

export interface ItemResolution {
  readonly item_id: string;
  /** field name -> resolution, in field-name order */
  readonly fields: Readonly<Record<string, Resolution>>;
  readonly removed: boolean;
  readonly removal: Resolution | null;
  readonly reason: string;
  /** keys of the item's live non-removal writes, sorted */
  readonly live_keys: readonly string[];
}

export function itemValues(item: ItemResolution): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [f, r] of Object.entries(item.fields)) out[f] = resolutionValue(r);
  return out;
}

/** The keys a removal saw (its value); anything malformed counts as nothing seen. */
export function seenKeys(removal: Candidate): Set<string> {
  const v = removal.value;
  if (!Array.isArray(v)) return new Set();
  return new Set(v.filter((k): k is string => typeof k === "string"));
}

function covers(seen: Set<string>, live: Set<string>): boolean {
  for (const k of live) if (!seen.has(k)) return false;
  return true;
}

const lwwField: FieldRule = (_f, cs, ctx) => lww.resolve(cs, ctx);

export function resolveItem(itemId: string, fields: ItemFields, ctx: RuleContext = EMPTY_CONTEXT,
                            fieldRule: FieldRule | null = null): ItemResolution {
  const rule = fieldRule ?? lwwField;
  const resolved: Record<string, Resolution> = {};
  for (const f of sortedStrings(Object.keys(fields))) {
    const cs = fields[f]!;
    if (f !== REMOVED && cs.length > 0) resolved[f] = rule(f, cs, ctx);
  }
  const live = new Set<string>();
  for (const [f, cs] of Object.entries(fields)) if (f !== REMOVED) for (const c of cs) live.add(c.key);
  const liveKeys = sortedStrings(live);
  const removals = [...(fields[REMOVED] ?? [])];
  if (removals.length === 0) {
    return { item_id: itemId, fields: resolved, removed: false, removal: null, reason: PRESENT, live_keys: liveKeys };
  }
  const covering = removals.filter((r) => covers(seenKeys(r), live));
  const [winner, why] = lww.pick(covering.length > 0 ? covering : removals);
  const removal: Resolution = { rule: NAME, winner, candidates: lww.ranked(removals, winner), reason: why };
  const removed = covering.length > 0;
  return {
    item_id: itemId, fields: resolved, removed, removal,
    reason: removed ? ITEM_REMOVED : KEPT_CONCURRENT_EDIT, live_keys: liveKeys,
  };
}

/** Resolve every item (item id -> field -> live candidates); result in item-id order. */
export function resolveItems(items: Readonly<Record<string, ItemFields>>, ctx: RuleContext = EMPTY_CONTEXT,
                             fieldRule: FieldRule | null = null): Map<string, ItemResolution> {
  const out = new Map<string, ItemResolution>();
  for (const id of Object.keys(items).sort(cmpStr)) out.set(id, resolveItem(id, items[id]!, ctx, fieldRule));
  return out;
}
