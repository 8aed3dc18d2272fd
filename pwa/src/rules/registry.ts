/** Which rule resolves which field: the one place it is declared (port of registry.py). */
import * as append from "./append";
import * as lww from "./lww";
import * as ownerWins from "./owner_wins";
import * as union from "./union";
import type { Candidate, Resolution, RuleContext } from "./candidates";
import { EMPTY_CONTEXT } from "./candidates";

export type Shape = "field" | "items" | "entries";
export const SHAPES: readonly Shape[] = ["field", "items", "entries"];

export type FieldResolver = (cs: readonly Candidate[], ctx: RuleContext) => Resolution;
export type ItemsResolver = (items: Readonly<Record<string, union.ItemFields>>, ctx: RuleContext,
                             fieldRule: union.FieldRule | null) => Map<string, union.ItemResolution>;
export type EntriesResolver = (entries: Iterable<Candidate>) => Candidate[];

export type RegisteredRule =
  | { readonly name: string; readonly shape: "field"; readonly resolver: FieldResolver }
  | { readonly name: string; readonly shape: "items"; readonly resolver: ItemsResolver }
  | { readonly name: string; readonly shape: "entries"; readonly resolver: EntriesResolver };

const JOB_LWW = ["customer_id", "title", "description", "address", "scheduled_start", "scheduled_end", "owner_id",
  "crew", "estimate", "deleted"] as const;

/** "kind.field" -> rule name. Kind "material" holds the fields of a job's material items. */
export const FIELD_RULES: Readonly<Record<string, string>> = Object.freeze({
  ...Object.fromEntries(["name", "phone", "email", "address", "notes", "deleted"].map((f) => [`customer.${f}`, "lww"])),
  ...Object.fromEntries(JOB_LWW.map((f) => [`job.${f}`, "lww"])),
  "job.status": "owner_wins",
  "job.materials": "union",
  "job.notes": "append",
  ...Object.fromEntries(["name", "quantity", "unit", "purchased", "cost"].map((f) => [`material.${f}`, "lww"])),
});

/** Reason code -> human sentence, for every code a registered rule can produce. */
export const REASONS: Record<string, string> = {};
const RULES = new Map<string, RegisteredRule>();

export function registerRule(rule: RegisteredRule, reasons: Readonly<Record<string, string>> = {}): RegisteredRule {
  if (!rule.name) throw new Error("a rule needs a non-empty name");
  if (RULES.has(rule.name)) throw new Error(`rule ${JSON.stringify(rule.name)} is already registered`);
  if (!SHAPES.includes(rule.shape)) throw new Error(`unknown rule shape ${String(rule.shape)}`);
  for (const [code, text] of Object.entries(reasons)) {
    if (code in REASONS && REASONS[code] !== text) {
      throw new Error(`reason code ${JSON.stringify(code)} is already declared with another meaning`);
    }
  }
  Object.assign(REASONS, reasons);
  RULES.set(rule.name, rule);
  return rule;
}

export function unregisterRule(name: string): void {
  if (!RULES.has(name)) throw new Error(`unknown conflict rule ${JSON.stringify(name)}`);
  const users = Object.entries(FIELD_RULES).filter(([, r]) => r === name).map(([k]) => k).sort();
  if (users.length > 0) throw new Error(`rule ${JSON.stringify(name)} is still used by ${users.join(", ")}`);
  RULES.delete(name);
}

export function getRule(name: string): RegisteredRule {
  const r = RULES.get(name);
  if (r === undefined) throw new Error(`unknown conflict rule ${JSON.stringify(name)}; registered: ${ruleNames().join(", ")}`);
  return r;
}

export function ruleNames(): string[] {
  return [...RULES.keys()].sort();
}

export function ruleFor(kind: string, field: string): string {
  const r = FIELD_RULES[`${kind}.${field}`];
  if (r === undefined) throw new Error(`no conflict rule declared for field ${kind}.${field}`);
  return r;
}

export function isDeclared(kind: string, field: string, shape: Shape): boolean {
  const name = FIELD_RULES[`${kind}.${field}`];
  return name !== undefined && RULES.get(name)?.shape === shape;
}

/** Resolve one scalar field with its declared rule (throws for collection rules). */
export function resolveField(kind: string, field: string, candidates: readonly Candidate[],
                             ctx: RuleContext = EMPTY_CONTEXT): Resolution {
  const rule = getRule(ruleFor(kind, field));
  if (rule.shape !== "field") {
    throw new TypeError(`${kind}.${field} uses the ${rule.shape}-shaped rule ${JSON.stringify(rule.name)}, not a field rule`);
  }
  return rule.resolver(candidates, ctx);
}

export function reasonText(code: string): string {
  return REASONS[code] ?? code;
}

registerRule({ name: lww.NAME, shape: "field", resolver: lww.resolve }, lww.REASONS);
registerRule({ name: ownerWins.NAME, shape: "field", resolver: ownerWins.resolve }, { ...lww.REASONS, ...ownerWins.REASONS });
registerRule({ name: union.NAME, shape: "items", resolver: union.resolveItems }, { ...lww.REASONS, ...union.REASONS });
registerRule({ name: append.NAME, shape: "entries", resolver: append.order }, append.REASONS);
