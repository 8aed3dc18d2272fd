import { lazy, Suspense, useEffect } from "react";
import { isOffice } from "../session";
import { useApp } from "../store";
import { CrewHome } from "./crew/CrewHome";
import { JobDetail } from "./JobDetail";
import { Login } from "./Login";
import { usePeople } from "./people";
import { Link, match, navigate, usePath } from "./router";
import { Notices, SyncBadge, SyncPanel } from "./SyncBadge";
import { IconSync, IconToday, IconUpcoming } from "./icons";

const OfficeApp = lazy(() => import("./office/OfficeApp"));

export function App() {
  const booting = useApp((s) => s.booting);
  const session = useApp((s) => s.session);
  const engine = useApp((s) => s.engine);
  const needsLogin = useApp((s) => s.needsLogin);
  const loadPeople = usePeople((s) => s.load);
  useEffect(() => {
    if (session && engine) void loadPeople();
  }, [session, engine, loadPeople]);
  if (booting) return <p className="splash" role="status">Loading…</p>;
  if (!session) return <Login />;
  if (needsLogin) return <Login reauth />;
  if (!engine) return <p className="splash" role="status">Opening local data…</p>;
  return isOffice(session.user.role) ? (
    <Suspense fallback={<p className="splash" role="status">Loading office…</p>}><OfficeApp /></Suspense>
  ) : <CrewShell />;
}

function CrewShell() {
  const path = usePath();
  const session = useApp((s) => s.session)!;
  const job = match("/jobs/:id", path);
  let page: React.ReactNode;
  if (job) page = <JobDetail jobId={job["id"]!} />;
  else if (path === "/upcoming") page = <CrewHome tab="upcoming" />;
  else if (path === "/sync") page = <SyncPanel />;
  else page = <CrewHome tab="today" />;
  const tab = (to: string, label: string, icon: React.ReactNode) => {
    const current = to === "/" ? path === "/" || !!job : path === to;
    return (
      <Link to={to} className={`tab ${current ? "current" : ""}`} aria-current={current ? "page" : undefined}>
        {icon}<span>{label}</span>
      </Link>
    );
  };
  return (
    <div className="crew-shell">
      <a className="skip" href="#main">Skip to content</a>
      <header className="topbar">
        {job ? <button type="button" className="btn-back" onClick={() => (history.length > 1 ? history.back() : navigate("/"))}
                       aria-label="Back">‹ Back</button> : <span className="brand">FieldSync</span>}
        <span className="who">{session.user.name}</span>
        <SyncBadge compact />
      </header>
      <Notices />
      <main id="main" tabIndex={-1}>{page}</main>
      <nav className="bottom-nav" aria-label="Main">
        {tab("/", "Today", <IconToday />)}
        {tab("/upcoming", "Upcoming", <IconUpcoming />)}
        {tab("/sync", "Sync", <IconSync />)}
      </nav>
    </div>
  );
}
