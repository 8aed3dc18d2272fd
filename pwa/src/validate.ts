/** Client-side checks mirroring schema/models.py validate_field, so the server does not refuse
 * what the UI lets a user write. Returns an error message or null. */

const CTRL_LINE = /[\u0000-\u001f\u007f-\u009f]/;
const CTRL_TEXT = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
const PHONE = /^[0-9 +\-()]*$/;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const ISO = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?$/;

export const JOB_STATUSES = ["lead", "estimate", "scheduled", "in_progress", "completed", "invoiced", "on_hold",
  "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export const STATUS_LABEL: Record<string, string> = {
  lead: "Lead", estimate: "Estimate", scheduled: "Scheduled", in_progress: "In progress", completed: "Completed",
  invoiced: "Invoiced", on_hold: "On hold", cancelled: "Cancelled",
};

/** The only status changes a crew member may make (schema/models.py CREW_STATUS_MOVES). */
export const CREW_STATUS_MOVES: Readonly<Record<string, readonly string[]>> = {
  scheduled: ["in_progress", "on_hold"],
  in_progress: ["completed", "on_hold"],
  on_hold: ["in_progress"],
};

export function crewMayMove(from: unknown, to: string): boolean {
  return typeof from === "string" && (CREW_STATUS_MOVES[from] ?? []).includes(to);
}

export function checkName(v: string): string | null {
  if (!v.trim()) return "must not be blank";
  if (v.length > 200) return "at most 200 characters";
  if (CTRL_LINE.test(v)) return "must not contain control characters or line breaks";
  return null;
}

export function checkPhone(v: string): string | null {
  if (v.length > 40) return "at most 40 characters";
  if (!PHONE.test(v) || !/\d/.test(v)) return "may contain only digits, spaces and + - ( ), and needs a digit";
  return null;
}

export function checkEmail(v: string): string | null {
  if (v.length > 254 || !EMAIL.test(v) || CTRL_LINE.test(v)) return "not a valid email address";
  return null;
}

export function checkLine(v: string, max: number): string | null {
  if (v.length > max) return `at most ${max} characters`;
  if (CTRL_LINE.test(v)) return "must not contain control characters or line breaks";
  return null;
}

export function checkText(v: string, max = 5000): string | null {
  if (v.length > max) return `at most ${max} characters`;
  if (CTRL_TEXT.test(v)) return "must not contain control characters";
  return null;
}

export function checkDate(v: string): string | null {
  if (!ISO.test(v) || Number.isNaN(Date.parse(v))) return "must be a date (YYYY-MM-DD) or date-time";
  return null;
}

export function checkQuantity(n: number): string | null {
  if (!Number.isFinite(n) || n < 0 || n > 1e6) return "must be a number between 0 and 1,000,000";
  return null;
}

export function checkMoney(n: number): string | null {
  if (!Number.isFinite(n) || n < 0 || n > 1e9) return "must be an amount between 0 and 1,000,000,000";
  return null;
}

/** Trim; blank becomes null (the REST models' edge normalization). */
export function blankNull(v: string): string | null {
  const t = v.trim();
  return t ? t : null;
}
