/** The shared golden vectors (conflict_rules/vectors/*.json), run by the TypeScript port.
 * Every vector runs with its candidates in several orders: the outcome must not change. */
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { candidateFromJson, resolutionValue, type Candidate, type RuleContext } from "../src/rules/candidates";
import * as registry from "../src/rules/registry";
import { itemValues, type ItemFields } from "../src/rules/union";
import { cmpStr } from "../src/rules/compare";

const DIR = resolve(__dirname, "../../conflict_rules/vectors");
const FILES = readdirSync(DIR).filter((f) => f.endsWith(".json")).sort();

interface Vector {
  name: string;
  rule?: string;
  context: { record_owner: string | null };
  candidates?: Record<string, unknown>[];
  items?: Record<string, Record<string, Record<string, unknown>[]>>;
  entries?: Record<string, unknown>[];
  expected: unknown;
}

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  const out: T[][] = [];
  xs.forEach((x, i) => {
    for (const p of permutations([...xs.slice(0, i), ...xs.slice(i + 1)])) out.push([x, ...p]);
  });
  return out;
}

function orders<T>(xs: T[]): T[][] {
  if (xs.length <= 5) return permutations(xs);
  const rot = xs.map((_, i) => [...xs.slice(i), ...xs.slice(0, i)]);
  return [...rot, ...rot.map((r) => [...r].reverse())];
}

function itemVariants(items: Record<string, ItemFields>): Record<string, ItemFields>[] {
  const out: Record<string, ItemFields>[] = [];
  for (const revItems of [false, true]) {
    for (const revLists of [false, true]) {
      const ids = Object.keys(items).sort(cmpStr);
      if (revItems) ids.reverse();
      const v: Record<string, ItemFields> = {};
      for (const id of ids) {
        const fields: Record<string, Candidate[]> = {};
        const fs = Object.keys(items[id]!).sort(cmpStr);
        if (revItems) fs.reverse();
        for (const f of fs) fields[f] = revLists ? [...items[id]![f]!].reverse() : [...items[id]![f]!];
        v[id] = fields;
      }
      out.push(v);
    }
  }
  return out;
}

const all: [string, Vector][] = [];
for (const file of FILES) {
  const data = JSON.parse(readFileSync(join(DIR, file), "utf8")) as { rule: string; vectors: Vector[] };
  for (const v of data.vectors) all.push([data.rule, v]);
}

describe("golden vectors", () => {
  it("exist for every built-in rule", () => {
    const stems = new Set(FILES.map((f) => f.replace(/\.json$/, "")));
    for (const s of ["lww", "owner_wins", "union", "append", "cases"]) expect(stems.has(s)).toBe(true);
    expect(all.length).toBeGreaterThan(30);
  });

  it.each(all.map(([r, v]) => [`${r}/${v.name}`, r, v] as const))("%s", (_label, fileRule, vector) => {
    const name = vector.rule ?? fileRule;
    const rule = registry.getRule(name);
    const ctx: RuleContext = { record_owner: vector.context.record_owner };
    if (rule.shape === "field") {
      const cands = vector.candidates!.map(candidateFromJson);
      for (const order of orders(cands)) {
        const res = rule.resolver(order, ctx);
        const got = { value: resolutionValue(res), winner_key: res.winner ? res.winner.key : null, reason: res.reason };
        expect(got, order.map((c) => c.key).join(",")).toEqual(vector.expected);
        expect(res.rule).toBe(name);
        expect(res.candidates.map((c) => c.key).sort(cmpStr)).toEqual(cands.map((c) => c.key).sort(cmpStr));
        if (res.winner !== null) expect(res.candidates[0]).toBe(res.winner);
      }
    } else if (rule.shape === "items") {
      const items: Record<string, ItemFields> = {};
      for (const [id, fields] of Object.entries(vector.items!)) {
        items[id] = Object.fromEntries(Object.entries(fields).map(([f, cs]) => [f, cs.map(candidateFromJson)]));
      }
      for (const variant of itemVariants(items)) {
        const out = rule.resolver(variant, ctx, null);
        const got: Record<string, unknown> = {};
        for (const [id, r] of out) got[id] = { removed: r.removed, reason: r.reason, fields: itemValues(r) };
        expect(got).toEqual(vector.expected);
        expect([...out.keys()]).toEqual([...out.keys()].sort(cmpStr));
      }
    } else {
      const entries = vector.entries!.map(candidateFromJson);
      for (const order of orders(entries)) {
        expect(rule.resolver(order).map((c) => c.key)).toEqual(vector.expected);
      }
    }
  });
});
