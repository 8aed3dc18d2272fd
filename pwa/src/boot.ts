/** The sign-in form of index.html (usable before this script has arrived on a slow network) and
 * its hand-over to the React app: what was typed, where the caret was, and a sign-in already
 * sent by the form's inline script (`window.__fieldsyncBootLogin`). */

/** What the inline script's `fetch("/api/auth/login")` resolved to. */
export interface BootResponse {
  ok: boolean;
  status: number;
  statusText: string;
  text: string;
}

export interface BootLogin {
  email: string;
  password: string;
  /** id of the focused field ("email" | "password") and its selection */
  focus: { id: string; start: number | null; end: number | null } | null;
  /** a sign-in the form already sent (the React form waits for it instead of sending again) */
  pending: { email: string; password: string; response: Promise<BootResponse> } | null;
}

let taken: BootLogin | null = null;

/** Read the boot form (if shown) and remove it; the app renders its own form in the same task,
 * so no keystroke can fall in between. Returns null when there is no boot form. */
export function takeBootLogin(): BootLogin | null {
  const root = document.getElementById("boot");
  if (!root) return null;
  const form = root.querySelector("form");
  const w = window as unknown as { __fieldsyncBootLogin?: BootLogin["pending"] };
  let out: BootLogin | null = null;
  if (form && !root.hidden) {
    const field = (id: string) => form.querySelector<HTMLInputElement>(`#${id}`);
    const active = document.activeElement;
    const focus = active instanceof HTMLInputElement && form.contains(active)
      ? { id: active.id, start: active.selectionStart, end: active.selectionEnd } : null;
    out = { email: field("email")?.value ?? "", password: field("password")?.value ?? "", focus,
      pending: w.__fieldsyncBootLogin ?? null };
  }
  w.__fieldsyncBootLogin = null;
  root.remove();
  taken = out;
  return out;
}

/** The hand-over, once (the React form reads it on its first render). */
export function bootLogin(): BootLogin | null {
  const t = taken;
  taken = null;
  return t;
}

/** Put the caret back where it was in the boot form. */
export function restoreFocus(b: BootLogin | null): void {
  if (!b?.focus) return;
  const el = document.getElementById(b.focus.id);
  if (!(el instanceof HTMLInputElement)) return;
  el.focus();
  try {
    if (b.focus.start !== null && b.focus.end !== null) el.setSelectionRange(b.focus.start, b.focus.end);
  } catch { /* type=email has no selection API */ }
}
