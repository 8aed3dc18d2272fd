/** Office screens (desktop), loaded on demand: customers, jobs board, job editing. */
import { useMemo, useState } from "react";
import { createCustomer, createJob, EditError, updateRecord } from "../../edits";
import { useApp } from "../../store";
import { blankNull, checkEmail, checkLine, checkName, checkPhone, checkText, JOB_STATUSES, STATUS_LABEL } from "../../validate";
import { useCustomers, useJobs } from "../hooks";
import { JobDetail } from "../JobDetail";
import { Link, match, navigate, usePath } from "../router";
import { Notices, SyncBadge, SyncPanel } from "../SyncBadge";

export default function OfficeApp() {
  const path = usePath();
  const session = useApp((s) => s.session)!;
  const job = match("/jobs/:id", path);
  const cust = match("/customers/:id", path);
  let page: React.ReactNode;
  if (job) page = <JobDetail jobId={job["id"]!} />;
  else if (cust) page = <CustomerEdit id={cust["id"]!} />;
  else if (path === "/customers") page = <Customers />;
  else if (path === "/sync") page = <SyncPanel />;
  else page = <Board />;
  const nav = (to: string, label: string) => {
    const current = to === "/" ? path === "/" || path.startsWith("/jobs") : path.startsWith(to);
    return <Link to={to} className={`nav-link ${current ? "current" : ""}`} aria-current={current ? "page" : undefined}>{label}</Link>;
  };
  return (
    <div className="office-shell">
      <a className="skip" href="#main">Skip to content</a>
      <header className="topbar office">
        <span className="brand">FieldSync CRM</span>
        <nav aria-label="Main" className="top-nav">
          {nav("/", "Jobs")}
          {nav("/customers", "Customers")}
          {nav("/sync", "Sync")}
        </nav>
        <span className="who">{session.user.name} ({session.user.role})</span>
        <SyncBadge />
      </header>
      <Notices />
      <main id="main" tabIndex={-1} className="office-main">{page}</main>
    </div>
  );
}

const BOARD: string[] = [...JOB_STATUSES];

function Board() {
  const jobs = useJobs().filter((j) => !j.deleted);
  const customers = useCustomers();
  const engine = useApp((s) => s.engine)!;
  const [q, setQ] = useState("");
  const [title, setTitle] = useState("");
  const [customerId, setCustomerId] = useState("");
  const [error, setError] = useState<string | null>(null);
  const needle = q.trim().toLowerCase();
  const shown = needle ? jobs.filter((j) => `${j.title} ${j.customerName}`.toLowerCase().includes(needle)) : jobs;
  return (
    <section aria-labelledby="board-h">
      <div className="row-between">
        <h1 id="board-h" className="page-title">Jobs</h1>
        <div className="field inline">
          <label htmlFor="job-q">Search jobs</label>
          <input id="job-q" type="search" value={q} onChange={(e) => setQ(e.target.value)} />
        </div>
      </div>
      <form className="card inline-form" aria-label="New job" onSubmit={(e) => {
        e.preventDefault();
        setError(null);
        try {
          if (!customerId) throw new EditError("Choose a customer.");
          const id = createJob(engine, customerId, title);
          setTitle("");
          navigate(`/jobs/${id}`);
        } catch (err) {
          setError(err instanceof Error ? err.message : String(err));
        }
      }}>
        <div className="field">
          <label htmlFor="nj-cust">Customer</label>
          <select id="nj-cust" value={customerId} onChange={(e) => setCustomerId(e.target.value)} required>
            <option value="">Choose…</option>
            {customers.map((c) => <option key={c.id} value={c.id}>{c.name}</option>)}
          </select>
        </div>
        <div className="field grow">
          <label htmlFor="nj-title">Title</label>
          <input id="nj-title" value={title} onChange={(e) => setTitle(e.target.value)} required maxLength={200} />
        </div>
        <button type="submit" className="btn btn-primary">Create job</button>
        {error && <p className="error" role="alert">{error}</p>}
      </form>
      <div className="board" data-testid="board">
        {BOARD.map((st) => {
          const col = shown.filter((j) => j.status === st);
          return (
            <section key={st} className="board-col" aria-labelledby={`col-${st}`}>
              <h2 id={`col-${st}`}><span className={`pill st-${st}`}>{STATUS_LABEL[st]}</span> <small>{col.length}</small></h2>
              <ul>
                {col.map((j) => (
                  <li key={j.id}>
                    <Link to={`/jobs/${j.id}`} className="board-card">
                      <strong>{j.title}</strong>
                      <span>{j.customerName}</span>
                      <small>{j.start ?? "unscheduled"} · {j.crew.length} crew</small>
                    </Link>
                  </li>
                ))}
              </ul>
            </section>
          );
        })}
      </div>
    </section>
  );
}

function Customers() {
  const [showDeleted, setShowDeleted] = useState(false);
  const customers = useCustomers(showDeleted);
  const engine = useApp((s) => s.engine)!;
  const [q, setQ] = useState("");
  const [name, setName] = useState("");
  const [phone, setPhone] = useState("");
  const [error, setError] = useState<string | null>(null);
  const needle = q.trim().toLowerCase();
  const shown = useMemo(() => (needle ? customers.filter((c) =>
    [c.name, c.phone, c.email, c.address].some((v) => v?.toLowerCase().includes(needle))) : customers), [customers, needle]);
  return (
    <section aria-labelledby="cust-h">
      <div className="row-between">
        <h1 id="cust-h" className="page-title">Customers</h1>
        <div className="field inline">
          <label htmlFor="cust-q">Search customers</label>
          <input id="cust-q" type="search" value={q} onChange={(e) => setQ(e.target.value)} />
        </div>
        <label className="check"><input type="checkbox" checked={showDeleted} onChange={(e) => setShowDeleted(e.target.checked)} /> Show deleted</label>
      </div>
      <form className="card inline-form" aria-label="New customer" onSubmit={(e) => {
        e.preventDefault();
        setError(null);
        try {
          const p = blankNull(phone);
          const err = p ? checkPhone(p) : null;
          if (err) throw new EditError(`Phone: ${err}`);
          const id = createCustomer(engine, { name, phone: p });
          setName("");
          setPhone("");
          navigate(`/customers/${id}`);
        } catch (err) {
          setError(err instanceof Error ? err.message : String(err));
        }
      }}>
        <div className="field grow">
          <label htmlFor="nc-name">Name</label>
          <input id="nc-name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={200} />
        </div>
        <div className="field">
          <label htmlFor="nc-phone">Phone</label>
          <input id="nc-phone" type="tel" value={phone} onChange={(e) => setPhone(e.target.value)} maxLength={40} />
        </div>
        <button type="submit" className="btn btn-primary">Create customer</button>
        {error && <p className="error" role="alert">{error}</p>}
      </form>
      <table className="table card" data-testid="customers">
        <thead><tr><th scope="col">Name</th><th scope="col">Phone</th><th scope="col">Email</th><th scope="col">Address</th></tr></thead>
        <tbody>
          {shown.map((c) => (
            <tr key={c.id} className={c.deleted ? "deleted" : ""}>
              <td><Link to={`/customers/${c.id}`}>{c.name}</Link>{c.deleted ? " (deleted)" : ""}</td>
              <td>{c.phone}</td><td>{c.email}</td><td>{c.address}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

const CUSTOMER_FIELDS: { f: string; label: string; check: (v: string) => string | null; multiline?: boolean; required?: boolean }[] = [
  { f: "name", label: "Name", check: checkName, required: true },
  { f: "phone", label: "Phone", check: checkPhone },
  { f: "email", label: "Email", check: checkEmail },
  { f: "address", label: "Address", check: (v) => checkLine(v, 500) },
  { f: "notes", label: "Notes", check: (v) => checkText(v), multiline: true },
];

function CustomerEdit({ id }: { id: string }) {
  const customers = useCustomers(true);
  const jobs = useJobs();
  const engine = useApp((s) => s.engine)!;
  const c = customers.find((x) => x.id === id);
  const [draft, setDraft] = useState<Record<string, string>>({});
  const [error, setError] = useState<string | null>(null);
  if (!c) return <p className="card">No such customer on this device.</p>;
  const rec = c.view.record;
  const val = (f: string) => draft[f] ?? (typeof rec[f] === "string" ? (rec[f] as string) : "");
  return (
    <section className="card" aria-labelledby="ce-h">
      <h1 id="ce-h">{c.name}{c.deleted ? " (deleted)" : ""}</h1>
      <form className="stack" onSubmit={(e) => {
        e.preventDefault();
        setError(null);
        const values: Record<string, unknown> = {};
        for (const { f, label, check, required } of CUSTOMER_FIELDS) {
          if (draft[f] === undefined) continue;
          const v = f === "notes" ? draft[f]!.replace(/\r\n/g, "\n").trim() || null : blankNull(draft[f]!);
          if (v === null && required) return setError(`${label}: must not be blank`);
          const err = v === null ? null : check(v);
          if (err) return setError(`${label}: ${err}`);
          if (v !== (rec[f] ?? null)) values[f] = v;
        }
        updateRecord(engine, "customer", id, values);
        setDraft({});
      }}>
        {CUSTOMER_FIELDS.map(({ f, label, multiline }) => (
          <div className="field" key={f}>
            <label htmlFor={`ce-${f}`}>{label}</label>
            {multiline ? <textarea id={`ce-${f}`} rows={3} value={val(f)} onChange={(e) => setDraft({ ...draft, [f]: e.target.value })} />
              : <input id={`ce-${f}`} value={val(f)} onChange={(e) => setDraft({ ...draft, [f]: e.target.value })} />}
          </div>
        ))}
        {error && <p className="error" role="alert">{error}</p>}
        <div className="actions">
          <button type="submit" className="btn btn-primary" disabled={Object.keys(draft).length === 0}>Save</button>
          {c.deleted
            ? <button type="button" className="btn" onClick={() => updateRecord(engine, "customer", id, { deleted: false })}>Restore</button>
            : <button type="button" className="btn btn-danger" onClick={() => {
                if (confirm(`Delete ${c.name}? (It can be restored.)`)) updateRecord(engine, "customer", id, { deleted: true });
              }}>Delete</button>}
        </div>
      </form>
      <h2>Jobs</h2>
      <ul>
        {jobs.filter((j) => j.customerId === id).map((j) => (
          <li key={j.id}><Link to={`/jobs/${j.id}`}>{j.title}</Link> — {STATUS_LABEL[j.status] ?? j.status}</li>
        ))}
      </ul>
    </section>
  );
}
