/** Last writer wins: the greatest (timestamp, device id, key) among concurrent writes
 * (port of conflict_rules/lww.py). */
import { cmpTuple } from "./compare";
import { EMPTY_CONTEXT, type Candidate, type Resolution, type RuleContext } from "./candidates";

export const NAME = "lww";
export const NO_CANDIDATES = "no_candidates";
export const ONLY_CANDIDATE = "only_candidate";
export const LATEST_TIMESTAMP = "latest_timestamp";
export const DEVICE_TIEBREAK = "device_tiebreak";

export const REASONS: Readonly<Record<string, string>> = {
  [NO_CANDIDATES]: "Nobody has written this field.",
  [ONLY_CANDIDATE]: "There is a single live write: nothing concurrent with it, and every " +
    "earlier write was seen and superseded by it.",
  [LATEST_TIMESTAMP]: "Among concurrent writes the winner has the latest timestamp.",
  [DEVICE_TIEBREAK]: "Concurrent writes share the latest timestamp; the greatest device id wins " +
    "(then the write key).",
};

/** The total order every rule uses: (time, device, key). */
export function orderKey(c: Candidate): [string, string, string] {
  return [c.time, c.device, c.key];
}

export function compareCandidates(a: Candidate, b: Candidate): number {
  return cmpTuple(orderKey(a), orderKey(b));
}

function checkUnique(cs: readonly Candidate[]): void {
  if (new Set(cs.map((c) => c.key)).size !== cs.length) throw new Error("candidates must have distinct keys");
}

/** All candidates by (time, device, key) descending, with `winner` moved first. */
export function ranked(candidates: Iterable<Candidate>, winner: Candidate | null = null): Candidate[] {
  const ordered = [...candidates].sort((a, b) => compareCandidates(b, a));
  if (winner !== null && ordered.length > 0 && ordered[0] !== winner) {
    const i = ordered.indexOf(winner);
    if (i >= 0) ordered.splice(i, 1);
    ordered.unshift(winner);
  }
  return ordered;
}

/** The lww winner of `candidates` and the reason code explaining it. */
export function pick(candidates: Iterable<Candidate>): [Candidate | null, string] {
  const ordered = ranked(candidates);
  checkUnique(ordered);
  if (ordered.length === 0) return [null, NO_CANDIDATES];
  if (ordered.length === 1) return [ordered[0]!, ONLY_CANDIDATE];
  const first = ordered[0]!;
  const second = ordered[1]!;
  return [first, cmpTuple([first.time], [second.time]) > 0 ? LATEST_TIMESTAMP : DEVICE_TIEBREAK];
}

export function resolve(candidates: readonly Candidate[], _ctx: RuleContext = EMPTY_CONTEXT): Resolution {
  const cs = [...candidates];
  const [winner, reason] = pick(cs);
  return { rule: NAME, winner, candidates: ranked(cs, winner), reason };
}
