import { useMemo } from "react";
import { docIdFor } from "../doc/codec";
import type { DocView, MaterialView } from "../doc/view";
import { useApp } from "../store";

export interface JobItem {
  id: string;
  docId: string;
  view: DocView;
  title: string;
  status: string;
  customerId: string | null;
  customerName: string;
  crew: string[];
  start: string | null;
  deleted: boolean;
}

export interface CustomerItem {
  id: string;
  view: DocView;
  name: string;
  phone: string | null;
  email: string | null;
  address: string | null;
  deleted: boolean;
}

function str(v: unknown): string | null {
  return typeof v === "string" ? v : null;
}

export function useRev(): number {
  return useApp((s) => s.rev);
}

export function useCustomers(includeDeleted = false): CustomerItem[] {
  const rev = useRev();
  const engine = useApp((s) => s.engine);
  return useMemo(() => {
    if (!engine) return [];
    const out: CustomerItem[] = [];
    for (const docId of engine.docIds("customer")) {
      const view = engine.view(docId);
      if (!view) continue;
      const r = view.record;
      const item: CustomerItem = {
        id: docId.slice("customer:".length), view, name: str(r["name"]) ?? "(unnamed)", phone: str(r["phone"]),
        email: str(r["email"]), address: str(r["address"]), deleted: r["deleted"] === true,
      };
      if (includeDeleted || !item.deleted) out.push(item);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [engine, rev, includeDeleted]);
}

export function customerName(engine: { view: (id: string) => DocView | null }, customerId: string | null): string {
  if (!customerId) return "";
  try {
    const v = engine.view(docIdFor("customer", customerId));
    return str(v?.record["name"]) ?? "";
  } catch {
    return "";
  }
}

export function useJobs(): JobItem[] {
  const rev = useRev();
  const engine = useApp((s) => s.engine);
  return useMemo(() => {
    if (!engine) return [];
    const out: JobItem[] = [];
    for (const docId of engine.docIds("job")) {
      const view = engine.view(docId);
      if (!view || view.record["title"] === undefined) continue;
      const r = view.record;
      const customerId = str(r["customer_id"]);
      out.push({
        id: docId.slice("job:".length), docId, view, title: str(r["title"]) ?? "(untitled)",
        status: str(r["status"]) ?? "lead", customerId, customerName: customerName(engine, customerId),
        crew: Array.isArray(r["crew"]) ? (r["crew"] as unknown[]).filter((x): x is string => typeof x === "string") : [],
        start: str(r["scheduled_start"]), deleted: r["deleted"] === true,
      });
    }
    return out.sort((a, b) => ((a.start ?? "9") < (b.start ?? "9") ? -1 : (a.start ?? "9") > (b.start ?? "9") ? 1
      : a.title < b.title ? -1 : 1));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [engine, rev]);
}

/** The items not removed, by name (then id, so equal names keep one order everywhere). */
export function liveMaterials(view: DocView): MaterialView[] {
  const name = (m: MaterialView) => String(m.fields["name"] ?? "").toLowerCase();
  return view.materials.filter((m) => !m.removed)
    .sort((a, b) => (name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Local calendar date (YYYY-MM-DD) of a schedule value. */
export function localDate(v: string | null): string | null {
  if (!v) return null;
  if (/^\d{4}-\d{2}-\d{2}$/.test(v)) return v;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return v.slice(0, 10);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

export function today(): string {
  return localDate(new Date().toISOString())!;
}

/** Hours and minutes of a sync time ("never" before the first one). */
export function fmtShortTime(ms: number | null): string {
  if (!ms) return "never";
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function fmtTime(ms: number | null): string {
  if (!ms) return "never";
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtQty(n: unknown): string {
  return typeof n === "number" ? String(Math.round(n * 1000) / 1000) : "";
}
