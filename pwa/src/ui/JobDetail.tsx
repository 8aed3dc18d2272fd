import { lazy, memo, Suspense, useCallback, useRef, useState } from "react";
import { docIdFor, isValidRecordId } from "../doc/codec";
import type { MaterialView, NoteView } from "../doc/view";
import { addJobNote, addMaterial, EditError, setStatus, updateMaterials } from "../edits";
import type { Explanation } from "../rules/explain";
import { isOffice } from "../session";
import { useApp } from "../store";
import type { SyncEngine } from "../sync/engine";
import { CREW_STATUS_MOVES, STATUS_LABEL } from "../validate";
import { customerName, fmtQty, liveMaterials, useRev } from "./hooks";
import { personName, usePeople, type Person } from "./people";
import { tsLabel, WhyDialog } from "./Why";
import { IconPhone, IconPin } from "./icons";

const JobOfficePanel = lazy(() => import("./office/JobOfficePanel"));

// Every edit bumps the store's revision, so the screen re-renders from the new resolved view; the
// parts below are memoised on primitive props (and stable callbacks), so an edit re-renders and
// commits only what it changed (one material row, the status, the notes...).

function str(v: unknown): string | null {
  return typeof v === "string" && v ? v : null;
}

/** `act(fn)`: run an edit, showing an EditError (or anything thrown) in `error`. Stable. */
function useAct(): [string | null, (fn: () => void) => void] {
  const [error, setError] = useState<string | null>(null);
  const act = useCallback((fn: () => void) => {
    setError(null);
    try {
      fn();
    } catch (e) {
      setError(e instanceof EditError ? e.message : String(e));
    }
  }, []);
  return [error, act];
}

/** The previous array while every element is `same` as the new one (keeps memoised children). */
function useStableList<T>(list: T[], same: (a: T, b: T) => boolean): T[] {
  const ref = useRef(list);
  const prev = ref.current;
  if (prev !== list && (prev.length !== list.length || list.some((x, i) => !same(x, prev[i]!)))) ref.current = list;
  return ref.current;
}

const sameNote = (a: NoteView, b: NoteView) => a.id === b.id && a.body === b.body && a.author === b.author && a.time === b.time;

export function JobDetail({ jobId }: { jobId: string }) {
  useRev();
  const engine = useApp((s) => s.engine);
  const session = useApp((s) => s.session);
  const [why, setWhy] = useState<Explanation | null>(null);
  const [error, act] = useAct();
  const validId = isValidRecordId(jobId);
  const docId = validId ? docIdFor("job", jobId) : "";
  const view = engine && validId && engine.entries.has(docId) ? engine.view(docId) : null;
  const notes = useStableList(view?.notes ?? NO_NOTES, sameNote);
  const explain = useCallback((path: string) => {
    if (engine) setWhy(engine.explain(docId, path));
  }, [engine, docId]);
  const closeWhy = useCallback(() => setWhy(null), []);
  const role = session?.user.role ?? "crew";
  const move = useCallback((to: string) => {
    if (engine) act(() => setStatus(engine, jobId, to, role));
  }, [engine, jobId, act, role]);
  const addNote = useCallback((body: string) => {
    if (engine) act(() => { addJobNote(engine, jobId, body); });
  }, [engine, jobId, act]);
  if (!engine || !session) return null;
  if (!validId) return <p className="card">No such job.</p>;
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
  const otherConcurrent = Object.entries(view.recordResolutions)
    .filter(([f, res]) => f !== "status" && res.candidates.length > 1).map(([f]) => f).join("\n");
  return (
    <article className="job" aria-labelledby="job-h" data-testid="job-detail">
      <JobHeader title={str(r["title"])} deleted={r["deleted"] === true} status={status} statusConcurrent={statusConcurrent}
                 otherConcurrent={otherConcurrent} start={str(r["scheduled_start"])} end={str(r["scheduled_end"])}
                 description={str(r["description"])} onWhy={explain} />
      <CustomerCard name={customerName(engine, customerId) || "Unknown customer"} phone={phone} address={address} />
      {role === "crew" && <StatusMoves status={status} onMove={move} />}
      {error && <p className="error" role="alert">{error}</p>}

      <Materials jobId={jobId} onWhy={explain} />

      <Notes notes={notes} me={session.user.id} onAdd={addNote} />

      {isOffice(role) && (
        <Suspense fallback={<p className="card">Loading office tools…</p>}>
          <JobOfficePanel jobId={jobId} onWhy={explain} />
        </Suspense>
      )}
      {why && <WhyDialog explanation={why} onClose={closeWhy} />}
    </article>
  );
}

const NO_NOTES: NoteView[] = [];

const JobHeader = memo(function JobHeader({ title, deleted, status, statusConcurrent, otherConcurrent, start, end, description, onWhy }: {
  title: string | null; deleted: boolean; status: string; statusConcurrent: boolean;
  /** fields other than status with concurrent candidates, one per line */
  otherConcurrent: string; start: string | null; end: string | null; description: string | null;
  onWhy: (path: string) => void;
}) {
  const others = otherConcurrent ? otherConcurrent.split("\n") : [];
  return (
    <header className="card job-head">
      <h1 id="job-h">{title}{deleted ? " (deleted)" : ""}</h1>
      <p className="job-status">
        Status: <strong className={`pill st-${status}`} data-testid="job-status">{STATUS_LABEL[status] ?? status}</strong>
        <button type="button" className="btn-link" onClick={() => onWhy("status")}
                aria-label="Why does this job have this status?">{statusConcurrent ? "Conflict: why?" : "Why?"}</button>
      </p>
      {others.length > 0 && (
        <p className="conflicts">Concurrent edits resolved:{" "}
          {others.map((f) => (
            <button key={f} type="button" className="btn-link" onClick={() => onWhy(f)}>why {f}?</button>
          ))}
        </p>
      )}
      {start && <p>Scheduled: {start}{end ? ` → ${end}` : ""}</p>}
      {description && <p className="desc">{description}</p>}
    </header>
  );
});

const CustomerCard = memo(function CustomerCard({ name, phone, address }: { name: string; phone: string | null; address: string | null }) {
  return (
    <section className="card" aria-labelledby="cust-h">
      <h2 id="cust-h">Customer</h2>
      <p className="cust-name" data-testid="customer-name">{name}</p>
      <div className="actions">
        {phone && <a className="btn" href={`tel:${phone.replace(/[^0-9+]/g, "")}`} aria-label={`Call ${phone}`}><IconPhone /> {phone}</a>}
        {address && <a className="btn" target="_blank" rel="noopener noreferrer"
                       href={`https://www.openstreetmap.org/search?query=${encodeURIComponent(address)}`}
                       aria-label={`Open map for ${address}`}><IconPin /> {address}</a>}
      </div>
    </section>
  );
});

/** A crew's status moves. */
const StatusMoves = memo(function StatusMoves({ status, onMove }: { status: string; onMove: (to: string) => void }) {
  const moves = CREW_STATUS_MOVES[status] ?? [];
  return (
    <section className="card" aria-labelledby="st-h">
      <h2 id="st-h">Move status</h2>
      {moves.length === 0 ? <p>No status change available from {STATUS_LABEL[status] ?? status}.</p> : (
        <div className="actions">
          {moves.map((m) => (
            <button key={m} type="button" className={`btn btn-status st-${m}`} onClick={() => onMove(m)}>
              {m === "in_progress" && status === "on_hold" ? "Resume" : STATUS_LABEL[m]}
            </button>
          ))}
        </div>
      )}
    </section>
  );
});

const Notes = memo(function Notes({ notes, me, onAdd }: { notes: NoteView[]; me: string; onAdd: (body: string) => void }) {
  const byId = usePeople((s) => s.byId);
  return (
    <section className="card" aria-labelledby="notes-h">
      <h2 id="notes-h">Notes</h2>
      <NoteList notes={notes} me={me} byId={byId} />
      <NoteForm onAdd={onAdd} />
    </section>
  );
});

const NoteList = memo(function NoteList({ notes, me, byId }: { notes: NoteView[]; me: string; byId: Record<string, Person> }) {
  return (
    <ul className="notes" data-testid="notes">
      {notes.map((n) => <NoteItem key={n.id} body={String(n.body)} who={personName(byId, n.author, me)} time={n.time} />)}
      {notes.length === 0 && <li className="muted">No notes yet.</li>}
    </ul>
  );
});

const NoteItem = memo(function NoteItem({ body, who, time }: { body: string; who: string; time: string }) {
  return (
    <li>
      <p>{body}</p>
      <small>{who} · {tsLabel(time)}</small>
    </li>
  );
});

const NoteForm = memo(function NoteForm({ onAdd }: { onAdd: (body: string) => void }) {
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
});

function hasConflict(m: MaterialView): boolean {
  if (m.resolution.reason === "kept_concurrent_edit") return true;
  for (const f in m.resolution.fields) if (m.resolution.fields[f]!.candidates.length > 1) return true;
  return false;
}

export function Materials({ jobId, onWhy }: { jobId: string; onWhy: (path: string) => void }) {
  useRev();
  const engine = useApp((s) => s.engine)!;
  const docId = docIdFor("job", jobId);
  const view = engine.view(docId)!;
  const [error, act] = useAct();
  const update = useCallback((id: string, values: Record<string, unknown>) => {
    act(() => updateMaterials(engine, jobId, [id], values));
  }, [engine, jobId, act]);
  const items = liveMaterials(view);
  let bought = 0;
  for (const m of items) if (m.fields["purchased"] === true) bought++;
  return (
    <section className="card" aria-labelledby="mat-h">
      <h2 id="mat-h">Materials <small>({bought}/{items.length} bought)</small></h2>
      <ul className="materials" data-testid="materials">
        {items.map((m) => (
          <MaterialRow key={m.id} id={m.id} name={String(m.fields["name"] ?? "(unnamed)")}
                       quantity={typeof m.fields["quantity"] === "number" ? (m.fields["quantity"] as number) : 0}
                       purchased={m.fields["purchased"] === true} unit={String(m.fields["unit"] ?? "")}
                       conflict={hasConflict(m)} onUpdate={update} onWhy={onWhy} />
        ))}
        {items.length === 0 && <li className="muted">No materials yet.</li>}
      </ul>
      {error && <p className="error" role="alert">{error}</p>}
      <AddMaterial engine={engine} jobId={jobId} act={act} />
    </section>
  );
}

const MaterialRow = memo(function MaterialRow({ id, name: n, quantity: q, purchased, unit, conflict, onUpdate, onWhy }: {
  id: string; name: string; quantity: number; purchased: boolean; unit: string; conflict: boolean;
  onUpdate: (id: string, values: Record<string, unknown>) => void; onWhy: (path: string) => void;
}) {
  return (
    <li className={purchased ? "bought" : ""} data-material={n}>
      <label className="check">
        <input type="checkbox" checked={purchased} aria-label={`Bought: ${n}`}
               onChange={(e) => onUpdate(id, { purchased: e.target.checked })} />
        <span className="mat-name">{n}</span>
      </label>
      {conflict && (
        <button type="button" className="btn-link" onClick={() => onWhy(`materials/${id}`)}
                aria-label={`Why does ${n} look like this? (concurrent edits)`}>Conflict: why?</button>
      )}
      <div className="qty" role="group" aria-label={`Quantity of ${n}`}>
        <button type="button" className="btn-icon" aria-label={`Decrease ${n}`} disabled={q <= 0}
                onClick={() => onUpdate(id, { quantity: Math.max(0, q - 1) })}>−</button>
        <QtyInput value={q} label={`Quantity of ${n}`} onCommit={(v) => onUpdate(id, { quantity: v })} />
        <button type="button" className="btn-icon" aria-label={`Increase ${n}`}
                onClick={() => onUpdate(id, { quantity: q + 1 })}>+</button>
        <span className="unit">{unit}</span>
      </div>
    </li>
  );
});

const AddMaterial = memo(function AddMaterial({ engine, jobId, act }: {
  engine: SyncEngine; jobId: string; act: (fn: () => void) => void;
}) {
  const [name, setName] = useState("");
  const [qty, setQty] = useState("1");
  const [unit, setUnit] = useState("");
  return (
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
  );
});

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
