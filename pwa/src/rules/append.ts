/** Append: every entry kept, ordered by (timestamp, device, key) ascending
 * (port of conflict_rules/append.py). */
import * as lww from "./lww";
import type { Candidate } from "./candidates";

export const NAME = "append";
export const ALL_KEPT = "all_kept";
export const REASONS: Readonly<Record<string, string>> = {
  [ALL_KEPT]: "Every entry is kept, ordered by timestamp, then device id, then key.",
};

export function order(entries: Iterable<Candidate>): Candidate[] {
  const out = [...entries].sort(lww.compareCandidates);
  if (new Set(out.map((c) => c.key)).size !== out.length) throw new Error("entries must have distinct keys");
  return out;
}
