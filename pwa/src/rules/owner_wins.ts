/** Owner wins: a write by the record's owner (or a user with role `owner`) beats others
 * (port of conflict_rules/owner_wins.py). */
import * as lww from "./lww";
import { EMPTY_CONTEXT, type Candidate, type Resolution, type RuleContext } from "./candidates";

export const NAME = "owner_wins";
export const OWNER_ROLE = "owner";
export const OWNER_WINS = "owner_wins";

export const REASONS: Readonly<Record<string, string>> = {
  [OWNER_WINS]: "The winner was written by the record's owner (or a user with role owner), " +
    "which beats concurrent writes by others whatever their timestamps.",
};

export function inOwnerTier(c: Candidate, ctx: RuleContext): boolean {
  return c.role === OWNER_ROLE || (ctx.record_owner !== null && c.author === ctx.record_owner);
}

export function resolve(candidates: readonly Candidate[], ctx: RuleContext = EMPTY_CONTEXT): Resolution {
  const cs = [...candidates];
  const tier = cs.filter((c) => inOwnerTier(c, ctx));
  let [winner, reason] = lww.pick(tier.length > 0 ? tier : cs);
  if (tier.length > 0 && tier.length < cs.length) reason = OWNER_WINS;
  return { rule: NAME, winner, candidates: lww.ranked(cs, winner), reason };
}
