/** Rule outcomes as JSON-ready explanations, same keys as conflict_rules/explain.py. */
import * as append from "./append";
import * as ownerWins from "./owner_wins";
import * as union from "./union";
import { sortedStrings } from "./compare";
import { candidateToJson, isConcurrent, resolutionValue, type Candidate, type Resolution,
  type RuleContext } from "./candidates";
import { reasonText } from "./registry";

export interface ExplainedCandidate {
  value: unknown;
  author: string;
  role: string;
  device: string;
  time: string;
  key: string;
  winner: boolean;
  owner_tier?: boolean;
  seen?: string[];
  missing?: string[];
  covers?: boolean;
  position?: number;
  id?: string;
}

export interface Explanation {
  record: string;
  field: string;
  rule: string;
  candidates: ExplainedCandidate[];
  winner: Record<string, unknown> | null;
  value: unknown;
  reason: string;
  reason_text: string;
  concurrent: boolean;
  record_owner?: string | null;
  removed?: boolean;
  live_keys?: string[];
  fields?: Record<string, Explanation>;
}

function cand(c: Candidate, winner: Candidate | null): ExplainedCandidate {
  return {
    value: c.value, author: c.author, role: c.role, device: c.device, time: c.time, key: c.key,
    winner: winner !== null && c.key === winner.key,
  };
}

export function explainResolution(record: string, field: string, resolution: Resolution,
                                  ctx: RuleContext | null = null): Explanation {
  const w = resolution.winner;
  const cands = resolution.candidates.map((c) => cand(c, w));
  const out: Explanation = {
    record, field, rule: resolution.rule, candidates: cands,
    winner: w === null ? null : candidateToJson(w),
    value: resolutionValue(resolution),
    reason: resolution.reason,
    reason_text: reasonText(resolution.reason),
    concurrent: isConcurrent(resolution),
  };
  if (ctx !== null && resolution.rule === ownerWins.NAME) {
    out.record_owner = ctx.record_owner;
    resolution.candidates.forEach((c, i) => { cands[i]!.owner_tier = ownerWins.inOwnerTier(c, ctx); });
  }
  return out;
}

export function explainItem(record: string, item: union.ItemResolution): Explanation {
  const live = new Set(item.live_keys);
  const w = item.removal ? item.removal.winner : null;
  const removals: ExplainedCandidate[] = [];
  for (const c of item.removal ? item.removal.candidates : []) {
    const d = cand(c, w);
    const seen = union.seenKeys(c);
    d.seen = sortedStrings(seen);
    d.missing = sortedStrings([...live].filter((k) => !seen.has(k)));
    d.covers = d.missing.length === 0;
    removals.push(d);
  }
  const prefix = `materials/${item.item_id}`;
  const fields: Record<string, Explanation> = {};
  for (const [f, r] of Object.entries(item.fields)) fields[f] = explainResolution(record, `${prefix}/${f}`, r);
  return {
    record, field: prefix, rule: union.NAME, candidates: removals,
    winner: w === null ? null : candidateToJson(w),
    value: union.itemValues(item),
    removed: item.removed,
    reason: item.reason,
    reason_text: reasonText(item.reason),
    concurrent: item.removal !== null && (isConcurrent(item.removal) || !item.removed),
    live_keys: [...item.live_keys],
    fields,
  };
}

export function explainEntries(record: string, field: string, entries: readonly Candidate[]): Explanation {
  const ordered = append.order(entries);
  return {
    record, field, rule: append.NAME,
    candidates: ordered.map((c, i) => ({ ...cand(c, null), position: i })),
    winner: null,
    value: ordered.map((c) => c.value),
    reason: append.ALL_KEPT,
    reason_text: reasonText(append.ALL_KEPT),
    concurrent: false,
  };
}
