/** Office tools on a job: edit, schedule, assign crew, status, bulk material updates, timeline. */
import { useEffect, useState } from "react";
import { api, ApiError, NetworkError } from "../../api";
import { docIdFor } from "../../doc/codec";
import { EditError, removeMaterials, setStatus, updateMaterials, updateRecord } from "../../edits";
import { useApp } from "../../store";
import { blankNull, checkDate, checkLine, checkMoney, checkName, checkText, JOB_STATUSES, STATUS_LABEL } from "../../validate";
import { fmtQty, liveMaterials, useCustomers, useJobs, useRev } from "../hooks";
import { personName, usePeople, type Person } from "../people";
import { tsLabel } from "../Why";

const FIELDS: { f: string; label: string; type?: string; check: (v: string) => string | null; multiline?: boolean }[] = [
  { f: "title", label: "Title", check: checkName },
  { f: "description", label: "Description", check: (v) => checkText(v), multiline: true },
  { f: "address", label: "Address", check: (v) => checkLine(v, 500) },
  { f: "scheduled_start", label: "Start (YYYY-MM-DD)", type: "date", check: checkDate },
  { f: "scheduled_end", label: "End (YYYY-MM-DD)", type: "date", check: checkDate },
  { f: "estimate", label: "Estimate", type: "number", check: (v) => checkMoney(Number(v)) },
];

export default function JobOfficePanel({ jobId, onWhy }: { jobId: string; onWhy: (path: string) => void }) {
  useRev();
  const engine = useApp((s) => s.engine)!;
  const session = useApp((s) => s.session)!;
  const byId = usePeople((s) => s.byId);
  const customers = useCustomers();
  const jobs = useJobs();
  const view = engine.view(docIdFor("job", jobId))!;
  const r = view.record;
  const [draft, setDraft] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [bulkUnit, setBulkUnit] = useState("");
  const status = typeof r["status"] === "string" ? (r["status"] as string) : "lead";
  const crew = Array.isArray(r["crew"]) ? (r["crew"] as string[]) : [];
  // crew members: from the server's user list when available, else ids seen on jobs
  const crewPeople: Person[] = Object.values(byId).filter((p) => p.role === "crew");
  for (const j of jobs) for (const id of j.crew) if (!crewPeople.some((p) => p.id === id)) crewPeople.push({ id, name: personName(byId, id), role: "crew" });
  const val = (f: string) => draft[f] ?? (r[f] === null || r[f] === undefined ? "" : String(r[f]));
  const act = (fn: () => void) => {
    setError(null);
    try {
      fn();
    } catch (e) {
      setError(e instanceof EditError ? e.message : String(e));
    }
  };
  const items = liveMaterials(view);
  return (
    <>
      <section className="card" aria-labelledby="edit-h">
        <h2 id="edit-h">Edit job</h2>
        <div className="field">
          <label htmlFor="job-status-select">Status</label>
          <select id="job-status-select" value={status} onChange={(e) => act(() => setStatus(engine, jobId, e.target.value, session.user.role))}>
            {JOB_STATUSES.map((s) => <option key={s} value={s}>{STATUS_LABEL[s]}</option>)}
          </select>
        </div>
        <div className="field">
          <label htmlFor="job-customer">Customer</label>
          <select id="job-customer" value={String(r["customer_id"] ?? "")}
                  onChange={(e) => act(() => updateRecord(engine, "job", jobId, { customer_id: e.target.value }))}>
            {customers.map((c) => <option key={c.id} value={c.id}>{c.name}</option>)}
          </select>
        </div>
        <form className="grid-form" onSubmit={(e) => {
          e.preventDefault();
          setError(null);
          const values: Record<string, unknown> = {};
          for (const { f, label, check, type } of FIELDS) {
            if (draft[f] === undefined) continue;
            const raw = blankNull(draft[f]!);
            if (raw === null && f === "title") return setError("Title: must not be blank");
            const err = raw === null ? null : check(raw);
            if (err) return setError(`${label}: ${err}`);
            const v = raw === null ? null : type === "number" ? Number(raw) : raw;
            if (v !== (r[f] ?? null)) values[f] = v;
          }
          const start = (values["scheduled_start"] ?? r["scheduled_start"]) as string | null | undefined;
          const end = (values["scheduled_end"] ?? r["scheduled_end"]) as string | null | undefined;
          if (start && end && end < start) return setError("The end must not be before the start.");
          updateRecord(engine, "job", jobId, values);
          setDraft({});
        }}>
          {FIELDS.map(({ f, label, type, multiline }) => (
            <div className="field" key={f}>
              <label htmlFor={`je-${f}`}>{label}</label>
              {multiline ? <textarea id={`je-${f}`} rows={2} value={val(f)} onChange={(e) => setDraft({ ...draft, [f]: e.target.value })} />
                : <input id={`je-${f}`} type={type === "number" ? "number" : "text"} value={val(f)} step="any"
                         onChange={(e) => setDraft({ ...draft, [f]: e.target.value })} />}
            </div>
          ))}
          <div className="actions">
            <button type="submit" className="btn btn-primary" disabled={Object.keys(draft).length === 0}>Save changes</button>
            {r["deleted"] === true
              ? <button type="button" className="btn" onClick={() => updateRecord(engine, "job", jobId, { deleted: false })}>Restore job</button>
              : <button type="button" className="btn btn-danger" onClick={() => {
                  if (confirm("Delete this job? (It can be restored.)")) updateRecord(engine, "job", jobId, { deleted: true });
                }}>Delete job</button>}
          </div>
        </form>
        {error && <p className="error" role="alert">{error}</p>}
      </section>

      <section className="card" aria-labelledby="assign-h">
        <h2 id="assign-h">Assigned crew <button type="button" className="btn-link" onClick={() => onWhy("crew")}>Why?</button></h2>
        {crewPeople.length === 0 && <p className="muted">No crew members known on this device.</p>}
        <ul className="plain">
          {crewPeople.map((p) => (
            <li key={p.id}>
              <label className="check">
                <input type="checkbox" data-user={p.id} checked={crew.includes(p.id)} onChange={(e) => act(() => updateRecord(engine, "job", jobId, {
                  crew: e.target.checked ? [...crew, p.id] : crew.filter((x) => x !== p.id),
                }))} />
                {p.name}
              </label>
            </li>
          ))}
        </ul>
      </section>

      <section className="card" aria-labelledby="bulk-h">
        <h2 id="bulk-h">Materials: bulk update</h2>
        <table className="table">
          <thead><tr><th scope="col">
            <input type="checkbox" aria-label="Select all materials" checked={items.length > 0 && selected.size === items.length}
                   onChange={(e) => setSelected(e.target.checked ? new Set(items.map((m) => m.id)) : new Set())} />
          </th><th scope="col">Item</th><th scope="col">Qty</th><th scope="col">Unit</th><th scope="col">Bought</th><th scope="col">Why</th></tr></thead>
          <tbody>
            {items.map((m) => {
              const n = String(m.fields["name"] ?? "");
              return (
                <tr key={m.id}>
                  <td><input type="checkbox" aria-label={`Select ${n}`} checked={selected.has(m.id)} onChange={(e) => {
                    const next = new Set(selected);
                    if (e.target.checked) next.add(m.id);
                    else next.delete(m.id);
                    setSelected(next);
                  }} /></td>
                  <td>{n}</td><td>{fmtQty(m.fields["quantity"])}</td><td>{String(m.fields["unit"] ?? "")}</td>
                  <td>{m.fields["purchased"] === true ? "yes" : "no"}</td>
                  <td><button type="button" className="btn-link" onClick={() => onWhy(`materials/${m.id}`)} aria-label={`Why is ${n} here?`}>item</button></td>
                </tr>
              );
            })}
          </tbody>
        </table>
        <div className="actions">
          <button type="button" className="btn" disabled={selected.size === 0}
                  onClick={() => act(() => updateMaterials(engine, jobId, [...selected], { purchased: true }))}>Mark bought</button>
          <button type="button" className="btn" disabled={selected.size === 0}
                  onClick={() => act(() => updateMaterials(engine, jobId, [...selected], { purchased: false }))}>Mark not bought</button>
          <div className="field inline">
            <label htmlFor="bulk-unit">Unit</label>
            <input id="bulk-unit" value={bulkUnit} maxLength={20} onChange={(e) => setBulkUnit(e.target.value)} />
          </div>
          <button type="button" className="btn" disabled={selected.size === 0}
                  onClick={() => act(() => updateMaterials(engine, jobId, [...selected], { unit: blankNull(bulkUnit) }))}>Set unit</button>
          <button type="button" className="btn btn-danger" disabled={selected.size === 0}
                  onClick={() => act(() => { removeMaterials(engine, jobId, [...selected]); setSelected(new Set()); })}>Remove</button>
        </div>
      </section>

      <Timeline jobId={jobId} />
    </>
  );
}

interface EventRow {
  id: number;
  type: string;
  record_type?: string;
  payload?: unknown;
  actor?: string | null;
  ts?: string | null;
  created_at?: string | null;
}

/** One line for an event: the known kinds in words, anything else as its payload. */
function describe(e: EventRow): string {
  const p = (e.payload ?? {}) as Record<string, unknown>;
  const s = (k: string) => (p[k] === null || p[k] === undefined ? "" : String(p[k]));
  switch (e.type) {
    case "job.created": return `Job created: ${s("title")} (${s("status")})`;
    case "job.status_changed": return `Status ${s("from")} → ${s("to")}`;
    case "job.deleted": return "Job deleted";
    case "job.restored": return "Job restored";
    case "job.updated":
    case "material.updated": {
      const ch = (p["changes"] ?? {}) as Record<string, [unknown, unknown]>;
      return Object.entries(ch).map(([k, [a, b]]) => `${k}: ${a ?? "—"} → ${b ?? "—"}`).join("; ") || "Updated";
    }
    case "job.assigned": return `Crew assigned (${Array.isArray(p["crew"]) ? (p["crew"] as unknown[]).length : 0})`;
    case "material.added": return `Material added: ${s("name")} × ${s("quantity")} ${s("unit")}`.trim();
    case "material.purchased": return `Material bought: ${s("name")}`;
    case "material.removed": return `Material removed${s("name") ? `: ${s("name")}` : ""}`;
    case "material.restored": return `Material kept/restored: ${s("name")}`;
    case "note.added": return `Note: ${s("body")}`;
    default: return JSON.stringify(p);
  }
}

function Timeline({ jobId }: { jobId: string }) {
  const byId = usePeople((s) => s.byId);
  const rev = useRev();
  const [events, setEvents] = useState<EventRow[] | null>(null);
  const [note, setNote] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    api<EventRow[] | { events: EventRow[] }>("GET", `/api/jobs/${jobId}/events?order=desc&limit=50`).then(({ data }) => {
      if (live) setEvents(Array.isArray(data) ? data : data?.events ?? []);
    }).catch((e) => {
      if (!live) return;
      setNote(e instanceof NetworkError ? "The timeline needs a connection." : e instanceof ApiError && e.status === 404
        ? "The timeline is not available from this server yet." : String(e));
    });
    return () => { live = false; };
  }, [jobId, Math.floor(rev / 20)]);
  return (
    <section className="card" aria-labelledby="tl-h">
      <h2 id="tl-h">Timeline</h2>
      {note && <p className="muted">{note}</p>}
      {events && events.length === 0 && <p className="muted">No events yet.</p>}
      {events && events.length > 0 && (
        <ol className="timeline">
          {events.map((e, i) => (
            <li key={String(e.id ?? i)}>
              <strong>{e.type}</strong>{" "}
              <small>{e.ts ? tsLabel(e.ts) : e.created_at ?? ""}{e.actor ? ` · ${personName(byId, e.actor)}` : ""}</small>
              <span className="ev-data">{describe(e)}</span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
