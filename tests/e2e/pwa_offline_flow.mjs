// Browser test of the PWA against a running `syncd serve` (driven by test_pwa_e2e.py).
//
//   node pwa_offline_flow.mjs <base-url> <artifacts-dir>
//
// Crew phone and office desktop in separate browser contexts. The crew goes offline, ticks a
// material, adds one, moves the status and adds a note; the office edits the same job; the
// crew page is reloaded while offline (served by the service worker) and still shows its
// edits; the network returns and both converge without a reload. Prints one JSON line
// (RESULT {...}) for the Python side, which checks the SQL projection.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(new URL("../../pwa/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [base, artifacts] = [process.argv[2].replace(/\/$/, ""), process.argv[3]];
mkdirSync(artifacts, { recursive: true });
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const T = 20_000;
const log = (...a) => console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...a);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const crewCtx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 1 });
const officeCtx = await browser.newContext({ viewport: { width: 1366, height: 900 } });
if (process.env.E2E_NO_WS === "1") {
  // HTTP push/pull only (as when the server offers no /ws)
  for (const c of [crewCtx, officeCtx]) await c.addInitScript(() => { window.__FIELDSYNC_ENGINE_OPTIONS__ = { websocket: false }; });
}
const crew = await crewCtx.newPage();
const office = await officeCtx.newPage();
const errors = [];
for (const [name, p] of [["crew", crew], ["office", office]]) {
  p.on("pageerror", (e) => { errors.push(`${name}: ${e.message}`); log(name, "pageerror", e.message); });
  p.on("console", (m) => { if (m.type() === "error") log(name, "console.error", m.text()); });
}
const shot = (p, name) => p.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
const result = { checks: [] };
const check = (name, ok, detail = "") => {
  result.checks.push({ name, ok: !!ok, detail: String(detail) });
  log(ok ? "PASS" : "FAIL", name, detail);
  if (!ok) throw new Error(`check failed: ${name} ${detail}`);
};

async function signIn(p, email) {
  await p.goto(`${base}/`);
  await p.getByLabel("Email").fill(email);
  await p.getByLabel("Password").fill("demo-password");
  await p.getByRole("button", { name: "Sign in" }).click();
  await p.waitForFunction(() => window.__fieldsync && window.__fieldsync.state.lastSync !== null, null, { timeout: T });
}

/** The resolved view of a job on a page, normalized for comparison between replicas. */
const viewOf = (p, docId) => p.evaluate((id) => {
  const v = window.__fieldsync.view(id);
  if (!v) return null;
  return JSON.stringify({
    record: v.record,
    materials: v.materials.map((m) => ({ id: m.id, fields: m.fields, removed: m.removed })),
    notes: v.notes.map((n) => ({ id: n.id, body: n.body })),
  });
}, docId);
const pending = (p) => p.evaluate(() => window.__fieldsync.state.pending);

/** Interactive elements without an accessible name, and (phone) touch targets under 48px. */
const a11yProblems = (p, minTarget) => p.evaluate((min) => {
  const out = [];
  const nameOf = (el) => {
    const t = (s) => (s || "").replace(/\s+/g, " ").trim();
    if (t(el.getAttribute("aria-label"))) return t(el.getAttribute("aria-label"));
    const by = el.getAttribute("aria-labelledby");
    if (by) return t(by.split(" ").map((id) => document.getElementById(id)?.textContent).join(" "));
    if (el.id) { const l = document.querySelector(`label[for="${CSS.escape(el.id)}"]`); if (l && t(l.textContent)) return t(l.textContent); }
    const wrap = el.closest("label");
    if (wrap && t(wrap.textContent)) return t(wrap.textContent);
    if (["A", "BUTTON", "SUMMARY"].includes(el.tagName)) return t(el.textContent) || t(el.getAttribute("title"));
    return t(el.getAttribute("title"));
  };
  for (const el of document.querySelectorAll("a[href], button, input, select, textarea, [role=button], [tabindex]:not([tabindex='-1'])")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    const desc = `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className}`;
    if (!nameOf(el)) out.push(`no accessible name: ${desc}`);
    if (min) {
      const target = el.type === "checkbox" ? el.closest("label") ?? el : el;
      const h = target.getBoundingClientRect().height;
      if (h < min - 0.5 && !el.classList.contains("skip")) out.push(`touch target ${Math.round(h)}px < ${min}px: ${desc}`);
    }
  }
  return out;
}, minTarget);

async function waitFor(desc, fn, timeout = T) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    last = await fn().catch((e) => `error: ${e.message}`);
    if (last === true) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  const st = await office.evaluate(() => JSON.stringify(window.__fieldsync.state)).catch(() => "?");
  throw new Error(`timed out waiting for ${desc} (last: ${JSON.stringify(last)}) office=${st}`);
}

try {
  // --- first visit: sign in, service worker installs ---------------------------------------
  await signIn(crew, "crew1@demo.test");
  await signIn(office, "office@demo.test");
  await crew.evaluate(() => navigator.serviceWorker.ready.then(() => true));
  await waitFor("the service worker to control the crew page", () => crew.evaluate(async () => {
    if (!navigator.serviceWorker.controller) return false;
    const keys = await caches.keys();
    return keys.length > 0;
  }), 30_000).catch(async () => {
    await crew.reload(); // first load is not controlled until clientsClaim; a reload is
    await waitFor("SW control after reload", () => crew.evaluate(() => !!navigator.serviceWorker.controller), 15_000);
  });
  check("service worker controls the app after the first visit", await crew.evaluate(() => !!navigator.serviceWorker.controller));

  const ids = await office.evaluate(() => {
    const e = window.__fieldsync;
    const out = {};
    for (const id of e.docIds("job")) out[e.view(id).record.title] = id;
    return out;
  });
  log("jobs", ids);
  const docId = ids["Kitchen remodel"];
  const jobId = docId.slice(4);
  result.doc_id = docId;
  result.job_id = jobId;

  // --- a crew never sees an unassigned job ----------------------------------------------------
  const me = await crew.evaluate(() => JSON.parse(localStorage.getItem("fieldsync.session")).user.id);
  await crew.getByRole("link", { name: "Upcoming" }).click();
  const upcoming = await crew.locator(".job-card .job-title").allTextContents();
  const homeProblems = await a11yProblems(crew, 48);
  check("crew list (phone): every control is named and >= 48px", homeProblems.length === 0, homeProblems.join("; "));
  await crew.getByRole("link", { name: "Today" }).click();
  const todays = await crew.locator(".job-card .job-title").allTextContents();
  const listed = [...todays, ...upcoming];
  result.crew_listed = listed;
  const unassigned = await office.evaluate((crewId) => {
    const e = window.__fieldsync;
    return e.docIds("job").filter((id) => !(e.view(id).record.crew || []).includes(crewId)).map((id) => [id, e.view(id).record.title]);
  }, me);
  check("crew lists only its assigned jobs", unassigned.length > 0 && unassigned.every(([, t]) => !listed.includes(t)),
        `listed=${JSON.stringify(listed)} unassigned=${JSON.stringify(unassigned.map((u) => u[1]))}`);
  await crew.goto(`${base}/jobs/${unassigned[0][0].slice(4)}`);
  await crew.waitForSelector("text=Job not available", { timeout: T });
  check("an unassigned job opened by URL is not shown", true);
  await shot(crew, "crew-unassigned-job");

  // --- open the same job on both ----------------------------------------------------------------
  await crew.goto(`${base}/jobs/${jobId}`);
  await crew.waitForSelector("[data-testid=job-detail]", { timeout: T });
  await office.goto(`${base}/jobs/${jobId}`);
  await office.waitForSelector("[data-testid=job-detail]", { timeout: T });
  await shot(crew, "crew-job-before");
  await shot(office, "office-job-before");
  for (const [name, p, min] of [["crew job (phone)", crew, 48], ["office job (desktop)", office, 0]]) {
    const problems = await a11yProblems(p, min);
    check(`${name}: every control is named${min ? " and >= 48px" : ""}`, problems.length === 0, problems.join("; "));
  }
  // keyboard: the office can reach and use the status select and the why button with the keyboard
  await office.getByLabel("Status", { exact: true }).focus();
  check("office status select is keyboard focusable", await office.evaluate(() => document.activeElement?.id === "job-status-select"));

  // --- crew goes offline and edits ------------------------------------------------------------
  const screwsBefore = await crew.locator("[data-material='drywall screws']").count();
  await crewCtx.setOffline(true);
  await crew.getByRole("checkbox", { name: "Bought: 2x4 studs" }).check();
  await crew.getByLabel("Item").fill("drywall screws");
  await crew.getByLabel("Qty", { exact: true }).fill("5");
  await crew.getByLabel("Unit", { exact: true }).fill("box");
  await crew.getByRole("button", { name: "Add item" }).click();
  await crew.getByRole("button", { name: "Increase tile adhesive" }).click(); // 3 -> 4, concurrent with the office's 5
  await crew.getByRole("button", { name: "In progress" }).click();
  await crew.getByLabel("New note").fill("Offline: studs bought, starting demo");
  await crew.getByRole("button", { name: "Add note" }).click();
  await waitFor("crew edits shown locally", async () =>
    (await crew.getByTestId("job-status").textContent()) === "In progress"
    && (await crew.locator("[data-material='drywall screws']").count()) === screwsBefore + 1
    && (await crew.getByRole("checkbox", { name: "Bought: 2x4 studs" }).isChecked()));
  const crewPending = await pending(crew);
  check("offline crew edits wait in the outbox", crewPending >= 4, `pending=${crewPending}`);
  const badge = await crew.getByTestId("sync-badge").textContent();
  check("badge shows offline, changes waiting and the last sync time",
    /Offline/.test(badge) && /changes? waiting/.test(badge) && /synced \d{1,2}[:.]\d{2}/.test(badge), badge);
  await shot(crew, "crew-offline-edits");

  // --- office edits the same job (online) --------------------------------------------------------
  await office.getByLabel("Status", { exact: true }).selectOption("on_hold");
  await office.getByRole("spinbutton", { name: "Quantity of tile adhesive" }).fill("5");
  await office.getByRole("spinbutton", { name: "Quantity of tile adhesive" }).press("Enter");
  await office.getByLabel("New note").fill("Office: customer called, hold until Monday");
  await office.getByRole("button", { name: "Add note" }).click();
  await waitFor("office changes acknowledged", async () => (await pending(office)) === 0
    && (await office.evaluate(() => window.__fieldsync.state.online)));
  await shot(office, "office-edits");

  // --- crew reloads while offline: the service worker serves the app, IndexedDB the edits ---
  await crew.reload();
  await crew.waitForSelector("[data-testid=job-detail]", { timeout: T });
  await waitFor("crew edits after offline reload", async () =>
    (await crew.getByTestId("job-status").textContent()) === "In progress"
    && (await crew.locator("[data-material='drywall screws']").count()) === screwsBefore + 1
    && (await crew.getByRole("checkbox", { name: "Bought: 2x4 studs" }).isChecked())
    && (await crew.getByText("Offline: studs bought, starting demo").count()) === 1);
  check("offline reload keeps the crew's edits", true, `pending=${await pending(crew)}`);
  await shot(crew, "crew-offline-reload");

  // a new tab while offline also starts from the service worker
  const tab = await crewCtx.newPage();
  await tab.goto(`${base}/upcoming`);
  await tab.waitForSelector("[data-testid=job-list]", { timeout: T });
  check("app starts offline in a new tab", true);
  await tab.close();

  // --- network returns: both converge without reload ---------------------------------------
  await crewCtx.setOffline(false);
  let cv, ov;
  await waitFor("convergence", async () => {
    if ((await pending(crew)) !== 0 || (await pending(office)) !== 0) return "pending";
    cv = await viewOf(crew, docId);
    ov = await viewOf(office, docId);
    return cv !== null && cv === ov ? true : "views differ";
  }, 45_000);
  const view = JSON.parse(cv);
  result.view = view;
  check("status follows owner-wins (office owner's on_hold beats the offline crew)", view.record.status === "on_hold", view.record.status);
  await crew.waitForFunction(() => document.querySelector("[data-testid=job-status]")?.textContent === "On hold", null, { timeout: T });
  await office.waitForSelector("text=Offline: studs bought, starting demo", { timeout: T });
  await office.waitForFunction((n) => document.querySelectorAll("[data-material='drywall screws']").length === n,
                               screwsBefore + 1, { timeout: T });
  check("both screens converge without reload", true);
  await shot(crew, "crew-converged");
  await shot(office, "office-converged");

  // --- the why view on the office ------------------------------------------------------------
  await office.getByRole("button", { name: "Why does this job have this status?" }).click();
  const dialog = office.getByTestId("why-dialog");
  await dialog.waitFor({ timeout: T });
  const why = await dialog.textContent();
  check("why view explains the owner_wins conflict", /owner_wins/.test(why) && /in_progress/.test(why) && /on_hold/.test(why), why.slice(0, 200));
  await shot(office, "office-why");
  await office.keyboard.press("Escape");
  await office.getByTestId("why-dialog").waitFor({ state: "detached", timeout: T });
  check("the why dialog closes with Escape", true);
  await office.getByRole("button", { name: "Why does tile adhesive look like this? (concurrent edits)" }).click();
  const itemWhy = await office.getByTestId("why-dialog").textContent();
  check("why view of a material shows the concurrent quantity writes", /Field “quantity” = 5/.test(itemWhy) && /latest timestamp/i.test(itemWhy),
        itemWhy.slice(0, 300));
  await shot(office, "office-why-material");
  await office.getByRole("button", { name: "Close" }).click();
  for (const path of ["/", "/customers"]) {
    await office.getByRole("link", { name: path === "/" ? "Jobs" : "Customers" }).click();
    await office.getByTestId(path === "/" ? "board" : "customers").waitFor({ state: "visible" });
    const problems = await a11yProblems(office, 0);
    check(`office ${path}: every control is named`, problems.length === 0, problems.join("; "));
    await shot(office, path === "/" ? "office-board" : `office${path.replace("/", "-")}`);
  }

  // --- office creates a customer and a job, assigns the crew: it appears live on the phone ---
  await office.getByRole("link", { name: "Customers" }).click();
  await office.getByLabel("Name").fill("E2E Customer");
  await office.getByLabel("Phone").fill("+1 555 0177");
  await office.getByRole("button", { name: "Create customer" }).click();
  await office.waitForSelector("text=E2E Customer", { timeout: T });
  await office.getByRole("link", { name: "Jobs" }).click();
  await office.getByLabel("Customer").selectOption({ label: "E2E Customer" });
  await office.getByLabel("Title").fill("E2E porch light");
  await office.getByRole("button", { name: "Create job" }).click();
  await office.waitForSelector("[data-testid=job-detail]", { timeout: T });
  result.new_job_id = new URL(office.url()).pathname.split("/").pop();
  await office.locator(`input[data-user="${me}"]`).check();
  await crew.goto(`${base}/upcoming`);
  await crew.waitForSelector(".job-card:has-text('E2E porch light')", { timeout: 30_000 });
  check("a newly assigned job reaches the crew without reload", true);
  await shot(crew, "crew-new-assignment");
  await office.locator(`input[data-user="${me}"]`).uncheck();
  await crew.waitForSelector(".job-card:has-text('E2E porch light')", { state: "detached", timeout: 30_000 });
  check("an unassigned job disappears from the crew without reload", true);
  await waitFor("office changes acknowledged", async () => (await pending(office)) === 0);

  // --- background sync: the service worker pushes the outbox with the app closed ----------
  await crew.goto(`${base}/jobs/${jobId}`);
  await crew.waitForSelector("[data-testid=job-detail]", { timeout: T });
  await crewCtx.setOffline(true);
  await crew.getByLabel("New note").fill("Written offline, sent by the service worker");
  await crew.getByRole("button", { name: "Add note" }).click();
  await waitFor("the note queued", async () => (await pending(crew)) === 1);
  await crew.close(); // the app is closed
  await crewCtx.setOffline(false);
  const blank = await crewCtx.newPage();
  const cdp = await crewCtx.newCDPSession(blank);
  const registrations = [];
  cdp.on("ServiceWorker.workerRegistrationUpdated", (ev) => registrations.push(...ev.registrations));
  await cdp.send("ServiceWorker.enable");
  await waitFor("the service worker registration", async () => registrations.some((r) => r.scopeURL.startsWith(base)));
  const reg = registrations.find((r) => r.scopeURL.startsWith(base));
  await cdp.send("ServiceWorker.dispatchSyncEvent", { origin: new URL(base).origin, registrationId: reg.registrationId,
    tag: "fieldsync-outbox", lastChance: false });
  await office.goto(`${base}/jobs/${jobId}`);
  await office.waitForSelector("text=Written offline, sent by the service worker", { timeout: 30_000 });
  check("the service worker pushed the outbox while the app was closed", true);
  await blank.close();

  // --- signing out clears the device's local data ------------------------------------------
  await office.getByRole("link", { name: "Sync" }).click();
  await office.getByRole("button", { name: "Sign out and clear this device" }).click();
  await office.getByRole("button", { name: "Sign in" }).waitFor({ timeout: T });
  const leftovers = await office.evaluate(async () => ({
    dbs: (await indexedDB.databases()).map((d) => d.name).filter((n) => n && n.startsWith("fieldsync")),
    keys: Object.keys(localStorage).filter((k) => k.startsWith("fieldsync.")),
  }));
  check("sign out deletes IndexedDB databases and stored session", leftovers.dbs.length === 0 && leftovers.keys.length === 0,
        JSON.stringify(leftovers));

  result.errors = errors;
  check("no uncaught page errors", errors.length === 0, errors.join(" | "));
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e && e.stack || e);
  log("ERROR", result.error);
  await shot(crew, "failure-crew").catch(() => {});
  await shot(office, "failure-office").catch(() => {});
} finally {
  console.log("RESULT " + JSON.stringify(result));
  await browser.close();
}
process.exit(result.ok ? 0 : 1);
