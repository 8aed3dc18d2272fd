import { lazy, Suspense, useState } from "react";
import { docIdFor, isValidRecordId } from "../doc/codec";
import { addJobNote, addMaterial, EditError, setStatus, updateMaterials } from "../edits";
import type { Explanation } from "../rules/explain";
import { isOffice } from "../session";
import { useApp } from "../store";
import { CREW_STATUS_MOVES, STATUS_LABEL } from "../validate";
import { customerName, fmtQty, liveMaterials, useRev } from "./hooks";
import { personName, usePeople } from "./people";
import { tsLabel, WhyDialog } from "./Why";
import { IconPhone, IconPin } from "./icons";

const JobOfficePanel = lazy(() => import("./office/JobOfficePanel"));

function str(v: unknown): string | null {
  return typeof v === "string" && v ? v : null;
}

export function JobDetail({ jobId }: { jobId: string }) {
  useRev();
  const engine = useApp((s) => s.engine);
  const session = useApp((s) => s.session);
  const byId = usePeople((s) => s.byId);
  const [why, setWhy] = useState<Explanation | null>(null);
  const [error, setError] = useState<string | null>(null);
  if (!engine || !session) return null;
  if (!isValidRecordId(jobId)) return <p className="card">No such job.</p>;
  const docId = docIdFor("job", jobId);
  const known = engine.docIds("job").includes(docId);
  const view = known ? engine.view(docId) : null;
  const role = session.user.role;
  const crew = Array.isArray(view?.record["crew"]) ? (view!.record["crew"] as string[]) : [];
  if (!view || view.record["title"] === undefined || (role === "crew" && !crew.includes(session.user.id))) {
    return <section className="card"><h1>Job not available</h1><p>This job is not on this device or not assigned to you.</p></section>;
  }
  const r = view.record;
  const status = str(r["status"]) ?? "lead";
  const customerId = str(r["customer_id"]);
  let customer: Record<string, unknown> = {};
  try {
    customer = customerId ? engine.view(docIdFor("customer", customerId))?.record ?? {} : {};
  } catch { /* invalid id */ }
  const phone = str(customer["phone"]);
  const address = str(r["address"]) ?? str(customer["address"]);
  const statusConcurrent = (view.recordResolutions["status"]?.candidates.length ?? 0) > 1;
  const moves = role === "crew" ? CREW_STATUS_MOVES[status] ?? [] : [];
  const act = (fn: () => void) => {
    setError(null);
    try {
      fn();
    } catch (e) {
      setError(e instanceof EditError ? e.message : String(e));
    }
  };
  const explain = (path: string) => setWhy(engine.explain(docId, path));
  const concurrentFields = Object.entries(view.recordResolutions).filter(([, res]) => res.candidates.length > 1).map(([f]) => f);
  return (
    <article className="job" aria-labelledby="job-h" data-testid="job-detail">
      <header className="card job-head">
        <h1 id="job-h">{str(r["title"])}{r["deleted"] === true ? " (deleted)" : ""}</h1>
        <p className="job-status">
          Status: <strong className={`pill st-${status}`} data-testid="job-status">{STATUS_LABEL[status] ?? status}</strong>
          <button type="button" className="btn-link" onClick={() => explain("status")}
                  aria-label="Why does this job have this status?">{statusConcurrent ? "Conflict: why?" : "Why?"}</button>
        </p>
        {concurrentFields.filter((f) => f !== "status").length > 0 && (
          <p className="conflicts">Concurrent edits resolved:{" "}
            {concurrentFields.filter((f) => f !== "status").map((f) => (
              <button key={f} type="button" className="btn-link" onClick={() => explain(f)}>why {f}?</button>
            ))}
          </p>
        )}
        {str(r["scheduled_start"]) && <p>Scheduled: {str(r["scheduled_start"])}{str(r["scheduled_end"]) ? ` → ${str(r["scheduled_end"])}` : ""}</p>}
        {str(r["description"]) && <p className="desc">{str(r["description"])}</p>}
      </header>

      <section className="card" aria-labelledby="cust-h">
        <h2 id="cust-h">Customer</h2>
        <p className="cust-name" data-testid="customer-name">{customerName(engine, customerId) || "Unknown customer"}</p>
        <div className="actions">
          {phone && <a className="btn" href={`tel:${phone.replace(/[^0-9+]/g, "")}`} aria-label={`Call ${phone}`}><IconPhone /> {phone}</a>}
          {address && <a className="btn" target="_blank" rel="noopener noreferrer"
                         href={`https://www.openstreetmap.org/search?query=${encodeURIComponent(address)}`}
                         aria-label={`Open map for ${address}`}><IconPin /> {address}</a>}
        </div>
      </section>

      {role === "crew" && (
        <section className="card" aria-labelledby="st-h">
          <h2 id="st-h">Move status</h2>
          {moves.length === 0 ? <p>No status change available from {STATUS_LABEL[status] ?? status}.</p> : (
            <div className="actions">
              {moves.map((m) => (
                <button key={m} type="button" className={`btn btn-status st-${m}`}
                        onClick={() => act(() => setStatus(engine, jobId, m, role))}>
                  {m === "in_progress" && status === "on_hold" ? "Resume" : STATUS_LABEL[m]}
                </button>
              ))}
            </div>
          )}
        </section>
      )}
      {error && <p className="error" role="alert">{error}</p>}

      <Materials jobId={jobId} onWhy={explain} />

      <section className="card" aria-labelledby="notes-h">
        <h2 id="notes-h">Notes</h2>
        <ul className="notes" data-testid="notes">
          {view.notes.map((n) => (
            <li key={n.id}>
              <p>{String(n.body)}</p>
              <small>{personName(byId, n.author, session.user.id)} · {tsLabel(n.time)}</small>
            </li>
          ))}
          {view.notes.length === 0 && <li className="muted">No notes yet.</li>}
        </ul>
        <NoteForm onAdd={(body) => act(() => { addJobNote(engine, jobId, body); })} />
      </section>

      {isOffice(role) && (
        <Suspense fallback={<p className="card">Loading office tools…</p>}>
          <JobOfficePanel jobId={jobId} onWhy={explain} />
        </Suspense>
      )}
      {why && <WhyDialog explanation={why} onClose={() => setWhy(null)} />}
    </article>
  );
}

function NoteForm({ onAdd }: { onAdd: (body: string) => void }) {
  const [body, setBody] = useState("");
  return (
    <form className="stack" onSubmit={(e) => {
      e.preventDefault();
      if (!body.trim()) return;
      onAdd(body);
      setBody("");
    }}>
      <label htmlFor="note-body">New note</label>
      <textarea id="note-body" rows={3} value={body} onChange={(e) => setBody(e.target.value)} maxLength={5000} />
      <button type="submit" className="btn btn-primary" disabled={!body.trim()}>Add note</button>
    </form>
  );
}

export function Materials({ jobId, onWhy }: { jobId: string; onWhy: (path: string) => void }) {
  useRev();
  const engine = useApp((s) => s.engine)!;
  const docId = docIdFor("job", jobId);
  const view = engine.view(docId)!;
  const [name, setName] = useState("");
  const [qty, setQty] = useState("1");
  const [unit, setUnit] = useState("");
  const [error, setError] = useState<string | null>(null);
  const items = liveMaterials(view);
  const bought = items.filter((m) => m.fields["purchased"] === true).length;
  const act = (fn: () => void) => {
    setError(null);
    try {
      fn();
    } catch (e) {
      setError(e instanceof EditError ? e.message : String(e));
    }
  };
  return (
    <section className="card" aria-labelledby="mat-h">
      <h2 id="mat-h">Materials <small>({bought}/{items.length} bought)</small></h2>
      <ul className="materials" data-testid="materials">
        {items.map((m) => {
          const n = String(m.fields["name"] ?? "(unnamed)");
          const q = typeof m.fields["quantity"] === "number" ? (m.fields["quantity"] as number) : 0;
          const purchased = m.fields["purchased"] === true;
          return (
            <li key={m.id} className={purchased ? "bought" : ""} data-material={n}>
              <label className="check">
                <input type="checkbox" checked={purchased} aria-label={`Bought: ${n}`}
                       onChange={(e) => act(() => updateMaterials(engine, jobId, [m.id], { purchased: e.target.checked }))} />
                <span className="mat-name">{n}</span>
              </label>
              {(m.resolution.reason === "kept_concurrent_edit"
                || Object.values(m.resolution.fields).some((r) => r.candidates.length > 1)) && (
                <button type="button" className="btn-link" onClick={() => onWhy(`materials/${m.id}`)}
                        aria-label={`Why does ${n} look like this? (concurrent edits)`}>Conflict: why?</button>
              )}
              <div className="qty" role="group" aria-label={`Quantity of ${n}`}>
                <button type="button" className="btn-icon" aria-label={`Decrease ${n}`} disabled={q <= 0}
                        onClick={() => act(() => updateMaterials(engine, jobId, [m.id], { quantity: Math.max(0, q - 1) }))}>−</button>
                <QtyInput value={q} label={`Quantity of ${n}`}
                          onCommit={(v) => act(() => updateMaterials(engine, jobId, [m.id], { quantity: v }))} />
                <button type="button" className="btn-icon" aria-label={`Increase ${n}`}
                        onClick={() => act(() => updateMaterials(engine, jobId, [m.id], { quantity: q + 1 }))}>+</button>
                <span className="unit">{String(m.fields["unit"] ?? "")}</span>
              </div>
            </li>
          );
        })}
        {items.length === 0 && <li className="muted">No materials yet.</li>}
      </ul>
      {error && <p className="error" role="alert">{error}</p>}
      <form className="add-material" onSubmit={(e) => {
        e.preventDefault();
        act(() => {
          addMaterial(engine, jobId, name, Number(qty), unit.trim() || null);
          setName("");
          setQty("1");
          setUnit("");
        });
      }}>
        <div className="field grow">
          <label htmlFor="mat-name">Item</label>
          <input id="mat-name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={200} />
        </div>
        <div className="field narrow">
          <label htmlFor="mat-qty">Qty</label>
          <input id="mat-qty" type="number" inputMode="decimal" min="0" step="any" value={qty} onChange={(e) => setQty(e.target.value)} />
        </div>
        <div className="field narrow">
          <label htmlFor="mat-unit">Unit</label>
          <input id="mat-unit" value={unit} onChange={(e) => setUnit(e.target.value)} maxLength={20} />
        </div>
        <button type="submit" className="btn btn-primary" disabled={!name.trim()}>Add item</button>
      </form>
    </section>
  );
}

function QtyInput({ value, label, onCommit }: { value: number; label: string; onCommit: (v: number) => void }) {
  const [draft, setDraft] = useState<string | null>(null);
  const commit = () => {
    if (draft === null) return;
    const v = Number(draft);
    setDraft(null);
    if (draft.trim() !== "" && Number.isFinite(v) && v !== value) onCommit(v);
  };
  return (
    <input className="qty-input" type="number" inputMode="decimal" min="0" step="any" aria-label={label}
           value={draft ?? fmtQty(value)} onChange={(e) => setDraft(e.target.value)} onBlur={commit}
           onKeyDown={(e) => { if (e.key === "Enter") { e.preventDefault(); commit(); } }} />
  );
}
