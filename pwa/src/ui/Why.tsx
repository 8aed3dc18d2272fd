/** The "why" view: a field's concurrent candidates, their authors and times, the rule, the
 * winner and why (the same explanation `syncd explain` gives, computed by the TS rules). */
import { useEffect, useRef } from "react";
import type { Explanation } from "../rules/explain";
import { parseTs } from "../rules/hlc";
import { useApp } from "../store";
import { personName, usePeople, type Person } from "./people";

export function tsLabel(ts: string): string {
  try {
    return new Date(parseTs(ts).wall_ms).toLocaleString();
  } catch {
    return ts;
  }
}

function show(v: unknown): string {
  if (v === null || v === undefined) return "(empty)";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

export function WhyDialog({ explanation, onClose }: { explanation: Explanation; onClose: () => void }) {
  const byId = usePeople((s) => s.byId);
  const me = useApp((s) => s.session?.user.id);
  const closeRef = useRef<HTMLButtonElement>(null);
  const boxRef = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const prev = document.activeElement as HTMLElement | null;
    closeRef.current?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") onClose();
      if (e.key === "Tab" && boxRef.current) {
        // keep focus inside the dialog
        const f = [...boxRef.current.querySelectorAll<HTMLElement>("button, a[href], [tabindex]:not([tabindex='-1'])")];
        if (f.length === 0) return;
        const first = f[0]!, last = f[f.length - 1]!;
        if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
        else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
      }
    };
    window.addEventListener("keydown", onKey);
    return () => { window.removeEventListener("keydown", onKey); prev?.focus(); };
  }, [onClose]);
  const x = explanation;
  return (
    <div className="modal-backdrop" onClick={onClose}>
      <div ref={boxRef} className="modal" role="dialog" aria-modal="true" aria-labelledby="why-h" onClick={(e) => e.stopPropagation()}
           data-testid="why-dialog">
        <h2 id="why-h">{x.removed !== undefined
          ? `Why the item “${show((x.value as Record<string, unknown> | null)?.["name"])}” is ${x.removed ? "removed" : "kept"}`
          : `Why “${x.field}” is ${show(x.value)}`}</h2>
        <dl className="facts">
          <dt>Rule</dt><dd data-testid="why-rule">{x.rule}</dd>
          <dt>Reason</dt><dd data-testid="why-reason">{x.reason_text} <small>({x.reason})</small></dd>
          <dt>{x.removed !== undefined ? "Contested removal" : "Concurrent writes"}</dt><dd>{x.concurrent ? "yes" : "no"}</dd>
          {x.record_owner !== undefined && <><dt>Record owner</dt><dd>{x.record_owner ? personName(byId, x.record_owner, me) : "none"}</dd></>}
        </dl>
        <Candidates x={x} byId={byId} me={me} caption={x.removed !== undefined ? "Removals of this item" : undefined} />
        {x.fields && Object.entries(x.fields).filter(([, f]) => f.concurrent).map(([f, fx]) => (
          <section key={f}>
            <h3>Field “{f}” = {show(fx.value)}</h3>
            <p>{fx.reason_text}</p>
            <Candidates x={fx} byId={byId} me={me} />
          </section>
        ))}
        <button ref={closeRef} type="button" className="btn" onClick={onClose}>Close</button>
      </div>
    </div>
  );
}

function Candidates({ x, byId, me, caption }: { x: Explanation; byId: Record<string, Person>; me?: string | undefined;
  caption?: string | undefined }) {
  if (x.candidates.length === 0) return null;
  return (
    <table className="table">
      <caption>{caption ?? "Candidates (live writes that did not see each other)"}</caption>
      <thead><tr><th scope="col">Value</th><th scope="col">Author</th><th scope="col">Role</th><th scope="col">Device</th>
        <th scope="col">Time</th><th scope="col">Outcome</th></tr></thead>
      <tbody>
        {x.candidates.map((c) => (
          <tr key={c.key} className={c.winner ? "winner" : ""}>
            <td>{show(c.value)}</td>
            <td>{personName(byId, c.author, me)}</td>
            <td>{c.role}{c.owner_tier ? " (owner tier)" : ""}</td>
            <td><code>{c.device}</code></td>
            <td>{tsLabel(c.time)}</td>
            <td>{c.covers !== undefined ? (c.covers ? "saw every write: removes" : `missed ${c.missing?.length ?? 0} write(s): item kept`)
              : c.winner ? "Winner" : "Lost"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
