/** The values the rules arbitrate between (port of conflict_rules/candidates.py). */

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** One live (not superseded) write of a field. */
export interface Candidate {
  readonly key: string;
  readonly value: unknown;
  readonly author: string;
  readonly role: string;
  readonly device: string;
  readonly time: string;
}

export interface RuleContext {
  /** a job's resolved owner_id (owner_wins) */
  readonly record_owner: string | null;
}

export const EMPTY_CONTEXT: RuleContext = Object.freeze({ record_owner: null });

export interface Resolution {
  readonly rule: string;
  readonly winner: Candidate | null;
  /** winner first, then the others by (time, device, key) descending */
  readonly candidates: readonly Candidate[];
  readonly reason: string;
}

export function resolutionValue(r: Resolution): unknown {
  return r.winner === null ? null : r.winner.value;
}

export function isConcurrent(r: Resolution): boolean {
  return r.candidates.length > 1;
}

export function candidateToJson(c: Candidate): Record<string, unknown> {
  return { key: c.key, value: c.value, author: c.author, role: c.role, device: c.device, time: c.time };
}

export function candidateFromJson(d: Record<string, unknown>): Candidate {
  return {
    key: String(d["key"]),
    value: d["value"] === undefined ? null : d["value"],
    author: String(d["author"]),
    role: String(d["role"]),
    device: String(d["device"]),
    time: String(d["time"]),
  };
}

export function resolutionToJson(r: Resolution): Record<string, unknown> {
  return {
    rule: r.rule,
    value: resolutionValue(r),
    winner: r.winner === null ? null : candidateToJson(r.winner),
    candidates: r.candidates.map(candidateToJson),
    reason: r.reason,
  };
}
