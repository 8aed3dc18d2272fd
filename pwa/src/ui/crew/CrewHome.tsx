import { useApp } from "../../store";
import { STATUS_LABEL } from "../../validate";
import { localDate, today, useJobs, type JobItem } from "../hooks";
import { Link } from "../router";

/** A crew member's jobs: only those assigned to them, never deleted ones. */
export function useMyJobs(): JobItem[] {
  const me = useApp((s) => s.session?.user.id);
  return useJobs().filter((j) => me !== undefined && j.crew.includes(me) && !j.deleted);
}

const ACTIVE = new Set(["scheduled", "in_progress", "on_hold"]);

export function CrewHome({ tab }: { tab: "today" | "upcoming" }) {
  const jobs = useMyJobs();
  const t = today();
  const todays = jobs.filter((j) => (localDate(j.start) !== null && localDate(j.start)! <= t && ACTIVE.has(j.status))
    || j.status === "in_progress");
  const upcoming = jobs.filter((j) => !todays.includes(j) && (localDate(j.start) === null || localDate(j.start)! > t)
    && !["completed", "invoiced", "cancelled"].includes(j.status));
  const list = tab === "today" ? todays : upcoming;
  return (
    <section aria-labelledby="crew-h">
      <h1 id="crew-h" className="page-title">{tab === "today" ? "Today's jobs" : "Upcoming jobs"}</h1>
      <ul className="job-list" data-testid="job-list">
        {list.map((j) => (
          <li key={j.id}>
            <Link to={`/jobs/${j.id}`} className="job-card" aria-label={`${j.title}, ${j.customerName}, ${STATUS_LABEL[j.status] ?? j.status}`}>
              <span className="job-title">{j.title}</span>
              <span className="job-cust">{j.customerName}</span>
              <span className="job-meta">{j.start ?? "Not scheduled"} · <span className={`pill st-${j.status}`}>{STATUS_LABEL[j.status] ?? j.status}</span></span>
            </Link>
          </li>
        ))}
      </ul>
      {list.length === 0 && <p className="card muted">{tab === "today" ? "No jobs today." : "No upcoming jobs."}</p>}
    </section>
  );
}
