// The PWA bench driver (run by bench/engine_pwa.py): real Chromium (Debian's, via playwright-core
// from pwa/node_modules) against a running `syncd serve` whose database holds a crew user with N
// assigned jobs.
//
//   node pwa_bench.mjs <config.json>
//
// Config: {base, chromium, profile (a scratch directory), email, password, jobs (N),
//          edits: {jobs, perJob}, cold: {runs}, slow3g: {runs, withJobs, timeoutMs}, phases: [..]}
// Phases (in this order; "cold" needs "online" first):
//   online  fresh persistent profile: sign in through the login form, full sync, service worker
//           installed; then local edits through real input events (CDP Input.dispatch*), timed
//           in the page from the input event to the frame that shows the change.
//   cold    the same profile, the browser started again with every target offline (CDP
//           Network.emulateNetworkConditions {offline: true} on the page and the service worker,
//           via playwright's context offline option): time from navigation start to the job list
//           with all N jobs painted.
//   slow3g  a fresh in-memory profile (no cache, no service worker yet) behind DevTools' "Slow 3G"
//           preset: time until the login form is usable, then (withJobs) sign in and time until
//           the N jobs are listed.
// Progress goes to stderr; the result is one line `RESULT {json}` on stdout.
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(new URL("../../pwa/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"));
const base = cfg.base.replace(/\/$/, "");
const T = 60_000;
const log = (...a) => console.error(`[pwa-bench ${new Date().toISOString().slice(11, 23)}]`, ...a);
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];
const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 1 };
// Chromium DevTools' "Slow 3G" preset (front_end/core/sdk/NetworkManager.ts; "3G" in newer DevTools):
// 500 kbit/s x 0.8 = 400 kbit/s both ways, 400 ms RTT x 5 = 2000 ms added to every request.
export const SLOW_3G = { offline: false, latency: 400 * 5, downloadThroughput: (500 * 1000) / 8 * 0.8,
  uploadThroughput: (500 * 1000) / 8 * 0.8 };

// ----------------------------------------------------------------------------------------------
// In-page instrumentation (installed before any script of the app runs).
//
// "On screen" = the end of the first frame rendered after the DOM shows the change: a
// requestAnimationFrame callback requested once the change is in the DOM runs at the start of the
// next rendering update, which then styles, lays out and paints the current DOM; a task posted
// from that callback (scheduler.postTask, priority "user-blocking") runs right after that update
// (the frame has been handed to the compositor).
// The input time is the trusted event's own timestamp (when the browser received the input).
const HARNESS = () => {
  const H = (window.__bench = { events: [] });
  const afterFrame = () => new Promise((resolve) => {
    requestAnimationFrame((frameTs) => {
      const raf = performance.now();
      const done = () => resolve({ frameTs, raf, painted: performance.now() });
      // the first task after this frame's rendering update; "user-blocking" runs ahead of the
      // app's ordinary tasks already queued (IndexedDB callbacks...), which would otherwise be
      // counted as part of the frame
      const sched = globalThis.scheduler;
      if (sched && typeof sched.postTask === "function") void sched.postTask(done, { priority: "user-blocking" });
      else {
        const ch = new MessageChannel();
        ch.port1.onmessage = done;
        ch.port2.postMessage(0);
      }
    });
  });
  H.afterFrame = afterFrame;
  /** Resolve when check() holds (checked at once and after every DOM mutation), with the time it
   * first held and the end of the frame that renders it. */
  H.when = (check) => new Promise((resolve) => {
    let done = false;
    let mo = null;
    const test = () => {
      if (done) return;
      let ok = false;
      try { ok = !!check(); } catch { ok = false; }
      if (!ok) return;
      done = true;
      const dom = performance.now();
      mo?.disconnect();
      void afterFrame().then((f) => resolve({ dom, ...f }));
    };
    mo = new MutationObserver(test);
    mo.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
    test();
  });
  // Event Timing (the browser's own input -> next presented frame, 8 ms granularity; only
  // entries >= 16 ms are reported)
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) H.events.push({ name: e.name, start: e.startTime, duration: e.duration,
        processingStart: e.processingStart, processingEnd: e.processingEnd });
    }).observe({ type: "event", durationThreshold: 16, buffered: true });
  } catch { /* not supported */ }
  /** Arm one sample: the next trusted `trigger` event starts the clock; `check` (source of a
   * function body) must become true after it. */
  H.arm = (trigger, checkSrc, arg) => {
    const check = new Function("arg", checkSrc);
    let input = null;
    let handlerAt = null;
    const onEvent = (e) => {
      if (!e.isTrusted || input !== null) return;
      input = e.timeStamp;
      handlerAt = performance.now();
    };
    window.addEventListener(trigger, onEvent, { capture: true });
    H.pending = H.when(() => input !== null && check(arg)).then((r) => {
      window.removeEventListener(trigger, onEvent, { capture: true });
      return { input, handlerAt, ...r };
    });
    return true;
  };
};

// ----------------------------------------------------------------------------------------------
function pct(xs, p) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}
const median = (xs) => pct(xs, 50);
/** `p`, or an error after `ms` (in-page waits have no timeout of their own). */
function within(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}
const r1 = (x) => (x === null || x === undefined ? null : Math.round(x * 10) / 10);

async function launch(profile, extra = {}) {
  const ctx = await chromium.launchPersistentContext(profile, { executablePath: cfg.chromium, args: ARGS, ...PHONE, ...extra });
  await ctx.addInitScript(HARNESS);
  return ctx;
}

const errors = [];
function watch(page, name) {
  page.on("pageerror", (e) => { errors.push(`${name}: ${e.message}`); log(name, "pageerror", e.message); });
}

async function signIn(page) {
  await page.getByLabel("Email").fill(cfg.email);
  await page.getByLabel("Password").fill(cfg.password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** In-page check source: the Today list shows all N jobs, each with its customer's name. */
const LIST_READY = `
  const cards = document.querySelectorAll("[data-testid=job-list] .job-card");
  if (cards.length < arg) return false;
  for (const c of cards) if (!c.querySelector(".job-cust")?.textContent) return false;
  return true;`;

async function waitListed(page, n, timeout = T) {
  await page.waitForFunction(([src, k]) => new Function("arg", src)(k), [LIST_READY, n], { timeout, polling: 100 });
}

// --- phase: online (first visit, full sync, local edits) -------------------------------------
async function online(result) {
  const ctx = await launch(cfg.profile);
  try {
    const page = ctx.pages()[0] ?? await ctx.newPage();
    watch(page, "online");
    await page.goto(`${base}/`);
    const t0 = Date.now();
    await signIn(page);
    await waitListed(page, cfg.jobs, 120_000);
    result.online = { first_sync_ms: Date.now() - t0 };
    log(`signed in, ${cfg.jobs} jobs listed after ${Date.now() - t0} ms`);
    // the service worker controls the app and has precached it (what the offline start needs)
    await page.waitForFunction(async () => {
      if (!navigator.serviceWorker.controller) return false;
      return (await caches.keys()).length > 0;
    }, null, { timeout: 30_000, polling: 200 }).catch(async () => {
      await page.reload(); // the first load is only controlled after clientsClaim; a reload is
      await page.waitForFunction(() => !!navigator.serviceWorker.controller, null, { timeout: 15_000 });
    });
    const sw = await page.evaluate(async () => ({ controlled: !!navigator.serviceWorker.controller, caches: (await caches.keys()).length }));
    result.online.service_worker = sw;
    if (cfg.phases.includes("edits")) {
      await edits(page, result, "edits", 0);
      if (cfg.edits.offline) {
        // the same edits with the network off: no push, no live sync, and no server work
        // competing for the box's 2 cores
        await page.context().setOffline(true);
        await edits(page, result, "edits_offline", 1);
        await page.context().setOffline(false);
      }
    }
    // everything acknowledged by the server before the browser closes
    await page.waitForFunction(() => window.__fieldsync.state.pending === 0, null, { timeout: 60_000, polling: 200 });
  } finally {
    await ctx.close();
  }
}

/** Sample kinds: [trigger event, action, check source, argument]. */
async function edits(page, result, key, offset) {
  const ids = await page.evaluate(() => {
    const e = window.__fieldsync;
    const me = JSON.parse(localStorage.getItem("fieldsync.session")).user.id;
    return e.docIds("job").filter((id) => (e.view(id).record.crew || []).includes(me)).map((id) => id.slice(4));
  });
  const samples = [];
  const step = Math.max(1, Math.floor(ids.length / cfg.edits.jobs));
  const chosen = ids.filter((_, i) => i % step === offset % step).slice(0, cfg.edits.jobs);
  const measureOne = async (kind, trigger, checkSrc, arg, act) => {
    await page.evaluate(([t, c, a]) => window.__bench.arm(t, c, a), [trigger, checkSrc, arg]);
    await act();
    const r = await within(page.evaluate(() => window.__bench.pending), 20_000, `${kind} shown`);
    samples.push({ kind, dom: r.dom - r.input, screen: r.painted - r.input, frameStart: r.raf - r.input,
      frameWork: r.painted - r.raf, handlerQueue: r.handlerAt - r.input, input: r.input });
  };
  // diagnostics (BENCH_PWA_PROFILE=file.cpuprofile): a CPU profile of the page during the edits
  const prof = process.env.BENCH_PWA_PROFILE ? await page.context().newCDPSession(page) : null;
  if (prof) {
    await prof.send("Profiler.enable");
    await prof.send("Profiler.setSamplingInterval", { interval: 100 });
    await prof.send("Profiler.start");
  }
  let k = 0;
  for (const jobId of chosen) {
    // open the job from the list, as a user does
    await page.getByRole("link", { name: "Today" }).click();
    await waitListed(page, cfg.jobs);
    await page.locator(`a.job-card[href="/jobs/${jobId}"]`).click();
    await page.waitForSelector("[data-testid=job-detail]");
    for (let i = 0; i < cfg.edits.perJob; i++, k++) {
      const names = await page.locator("[data-testid=materials] li[data-material]").evaluateAll(
        (lis) => lis.map((li) => li.getAttribute("data-material")));
      const kind = ["tick", "plus", "tick", "status", "note", "tick", "plus", "material"][i % 8];
      const name = names[(i + k) % names.length];
      if (kind === "tick") {
        // the row's class and the "(x/y bought)" count are rendered from the resolved document
        // (the checkbox's own checked state flips natively before any app code runs)
        const before = await page.locator(`li[data-material="${name}"]`).first().evaluate((li) => li.classList.contains("bought"));
        await measureOne("tick a material", "click", `
          const li = document.querySelector('li[data-material="' + CSS.escape(arg.name) + '"]');
          return li && li.classList.contains("bought") === arg.want;`, { name, want: !before },
        () => page.getByRole("checkbox", { name: `Bought: ${name}` }).first().click());
      } else if (kind === "plus") {
        const q = await page.getByRole("spinbutton", { name: `Quantity of ${name}` }).first().inputValue();
        await measureOne("quantity +1", "click", `
          const li = document.querySelector('li[data-material="' + CSS.escape(arg.name) + '"]');
          return li && li.querySelector(".qty-input").value === arg.want;`, { name, want: String(Number(q) + 1) },
        () => page.getByRole("button", { name: `Increase ${name}` }).first().click());
      } else if (kind === "status") {
        const cur = await page.getByTestId("job-status").textContent();
        const [label, want] = cur === "In progress" ? ["On hold", "On hold"] : cur === "On hold" ? ["Resume", "In progress"]
          : ["In progress", "In progress"];
        await measureOne("status button", "click", `
          return document.querySelector("[data-testid=job-status]")?.textContent === arg;`, want,
        () => page.getByRole("button", { name: label, exact: true }).click());
      } else if (kind === "note") {
        const body = `bench note ${k}`;
        await page.getByLabel("New note").fill(body); // typing is not timed; the edit is the submit
        await measureOne("add a note", "click", `
          return [...document.querySelectorAll("[data-testid=notes] li p")].some((p) => p.textContent === arg);`, body,
        () => page.getByRole("button", { name: "Add note" }).click());
      } else {
        const item = `bench item ${k}`;
        await page.getByLabel("Item").fill(item);
        await measureOne("add a material", "click", `
          return !!document.querySelector('li[data-material="' + CSS.escape(arg) + '"]');`, item,
        () => page.getByRole("button", { name: "Add item" }).click());
      }
    }
  }
  // The app's own path, without the browser's input routing: a script click() on a material's
  // checkbox (React's onChange, the Yjs write, the outbox, resolve, render, commit) -> the row's
  // class in the DOM; one per frame
  const synthetic = await within(page.evaluate(async (n) => {
    const out = [];
    for (let i = 0; i < n; i++) {
      const cb = document.querySelector("[data-testid=materials] input[type=checkbox]");
      const li = cb.closest("li");
      const want = !li.classList.contains("bought");
      out.push(await new Promise((resolve) => {
        const mo = new MutationObserver(() => {
          if (li.classList.contains("bought") === want) { mo.disconnect(); resolve(performance.now() - t0); }
        });
        mo.observe(li, { attributes: true });
        const t0 = performance.now();
        cb.click();
      }));
      await window.__bench.afterFrame();
      await window.__bench.afterFrame();
    }
    return out;
  }, cfg.edits.synthetic ?? 40), 60_000, "script clicks");
  if (prof) {
    const { profile } = await prof.send("Profiler.stop");
    const { writeFileSync } = await import("node:fs");
    writeFileSync(process.env.BENCH_PWA_PROFILE, JSON.stringify(profile));
  }
  // Event Timing entries (>= 16 ms from input to the next presented frame) of our clicks
  const events = await page.evaluate(() => window.__bench.events);
  const clicks = new Map(events.filter((e) => e.name === "click").map((e) => [Math.round(e.start * 10), e.duration]));
  let over = 0;
  for (const s of samples) {
    const d = clicks.get(Math.round(s.input * 10));
    s.eventTiming = d ?? null; // null: under 16 ms (not reported by the browser)
    if (d !== undefined && d > 16) over++;
  }
  const kinds = {};
  for (const s of samples) (kinds[s.kind] ??= []).push(s);
  result[key] = {
    n: samples.length,
    jobs: chosen.length,
    screen_p50: r1(median(samples.map((s) => s.screen))), screen_p95: r1(pct(samples.map((s) => s.screen), 95)),
    screen_max: r1(Math.max(...samples.map((s) => s.screen))),
    dom_p50: r1(median(samples.map((s) => s.dom))), dom_p95: r1(pct(samples.map((s) => s.dom), 95)),
    frame_work_p95: r1(pct(samples.map((s) => s.frameWork), 95)),
    // how long the frame that shows the change waited after the DOM change (vsync alignment)
    wait_p50: r1(median(samples.map((s) => s.frameStart - s.dom))),
    busy_p95: r1(pct(samples.map((s) => s.dom + s.frameWork), 95)),
    busy_p50: r1(median(samples.map((s) => s.dom + s.frameWork))),
    event_timing_over_16: over,
    app_p50: r1(median(synthetic)), app_p95: r1(pct(synthetic, 95)), app_n: synthetic.length,
    event_timing_reported: samples.filter((s) => s.eventTiming !== null).length,
    by_kind: Object.fromEntries(Object.entries(kinds).map(([kd, xs]) => [kd, {
      n: xs.length, screen_p50: r1(median(xs.map((s) => s.screen))), screen_p95: r1(pct(xs.map((s) => s.screen), 95)),
      dom_p95: r1(pct(xs.map((s) => s.dom), 95)) }])),
  };
  if (process.env.BENCH_PWA_SAMPLES) result[key].samples = samples;
  log(key, JSON.stringify(result[key]));
}

// --- phase: cold start offline ------------------------------------------------------------------
async function cold(result) {
  const runs = [];
  for (let r = 0; r < cfg.cold.runs; r++) {
    const ctx = await launch(cfg.profile, { offline: true });
    try {
      const page = ctx.pages()[0] ?? await ctx.newPage();
      watch(page, "cold");
      const network = [];
      page.on("request", (req) => { if (!req.url().startsWith("data:")) network.push(req); });
      // arm the "usable" watcher from the init script side: it starts with the document
      await ctx.addInitScript(([src, n]) => {
        const check = new Function("arg", src);
        window.__bench.ready = window.__bench.when(() => check(n));
      }, [LIST_READY, cfg.jobs]);
      const resp = await page.goto(`${base}/`, { waitUntil: "commit" });
      const r0 = await within(page.evaluate(() => window.__bench.ready), T, `${cfg.jobs} jobs listed offline`);
      const nav = await page.evaluate(() => {
        const n = performance.getEntriesByType("navigation")[0];
        const fcp = performance.getEntriesByName("first-contentful-paint")[0];
        return { responseEnd: n?.responseEnd ?? null, domContentLoaded: n?.domContentLoadedEventEnd ?? null,
          fcp: fcp?.startTime ?? null, online: navigator.onLine, controlled: !!navigator.serviceWorker.controller };
      });
      // usable: the list is painted; and a tap on a job opens it (the page answers input)
      const tap0 = Date.now();
      await page.locator("a.job-card").first().click();
      await page.waitForSelector("[data-testid=job-detail]", { timeout: T });
      const tap = Date.now() - tap0;
      const viaNetwork = [];
      for (const req of network) {
        const res = await req.response().catch(() => null);
        if (res && !res.fromServiceWorker()) viaNetwork.push(`${req.method()} ${req.url()} ${res.status()}`);
      }
      runs.push({ usable: r1(r0.painted), dom: r1(r0.dom), fcp: r1(nav.fcp), responseEnd: r1(nav.responseEnd),
        online: nav.online, controlled: nav.controlled, fromSW: resp?.fromServiceWorker() ?? null, tap_ms: tap,
        network: viaNetwork });
      log(`cold run ${r + 1}: ${JSON.stringify(runs.at(-1))}`);
    } finally {
      await ctx.close();
    }
  }
  result.cold = { runs, usable_median: median(runs.map((x) => x.usable)), usable_max: Math.max(...runs.map((x) => x.usable)) };
}

// --- phase: first load on slow 3G -------------------------------------------------------------------
async function slow3g(result) {
  const runs = [];
  for (let r = 0; r < cfg.slow3g.runs; r++) {
    const browser = await chromium.launch({ executablePath: cfg.chromium, args: ARGS });
    try {
      const ctx = await browser.newContext(PHONE);
      await ctx.addInitScript(HARNESS);
      await ctx.addInitScript(() => {
        const B = window.__bench;
        // usable login: email, password and an enabled submit button, on a form whose submit the
        // app handles (data-ready)
        B.loginReady = B.when(() => {
          const f = document.querySelector("form[data-ready]");
          return !!(f && f.querySelector("#email") && f.querySelector("#password")
            && f.querySelector("button[type=submit]:not([disabled])"));
        });
      });
      const page = await ctx.newPage();
      watch(page, "slow3g");
      const cdp = await ctx.newCDPSession(page);
      await cdp.send("Network.enable");
      await cdp.send("Network.emulateNetworkConditions", SLOW_3G);
      let bytes = 0;
      const reqs = [];
      cdp.on("Network.loadingFinished", (e) => { bytes += e.encodedDataLength; });
      page.on("request", (req) => reqs.push(req.url().replace(base, "")));
      const encodings = new Set();
      page.on("response", (res) => {
        if (/\/assets\/.*\.js$/.test(res.url())) encodings.add(res.headers()["content-encoding"] ?? "none");
      });
      await page.goto(`${base}/`, { waitUntil: "commit", timeout: 120_000 });
      const login = await within(page.evaluate(() => window.__bench.loginReady), 120_000, "a usable login form");
      const run = { login_usable: r1(login.painted), login_dom: r1(login.dom), requests_before_login: reqs.length };
      {
        // sign in on whichever form is there (index.html's, before the app script has arrived)
        const [t0] = await page.evaluate(() => [performance.now()]);
        await page.locator("#email").fill(cfg.email);
        await page.locator("#password").fill(cfg.password);
        const [clicked, form] = await page.evaluate(() => [performance.now(),
          document.getElementById("boot") ? "index.html's form (before the app script arrived)" : "the app's form"]);
        await page.locator("button[type=submit]").click();
        await page.evaluate(([src, n]) => {
          window.__bench.jobsReady = window.__bench.when(() => new Function("arg", src)(n));
          // signed in: the app's screens replace the form (the session is stored)
          window.__bench.shellReady = window.__bench.when(() => !!document.querySelector(".crew-shell, .office-shell")
            && !!localStorage.getItem("fieldsync.session"));
        }, [LIST_READY, cfg.jobs]);
        const shell = await within(page.evaluate(() => window.__bench.shellReady), 120_000, "signed in");
        run.typing_ms = r1(clicked - t0);
        run.signed_in_on = form;
        run.shell_usable = r1(shell.painted);
        if (cfg.slow3g.withJobs) {
          const jobs = await Promise.race([
            page.evaluate(() => window.__bench.jobsReady),
            new Promise((res) => setTimeout(() => res(null), cfg.slow3g.timeoutMs)),
          ]);
          run.jobs_usable = jobs ? r1(jobs.painted) : null; // from navigation start
          run.jobs_after_submit = jobs ? r1(jobs.painted - clicked) : null;
          run.timed_out_ms = jobs ? null : cfg.slow3g.timeoutMs;
        }
      }
      run.bytes = bytes;
      run.js_encoding = [...encodings].join(",");
      run.requests = reqs.length;
      runs.push(run);
      log(`slow3g run ${r + 1}: ${JSON.stringify(run)}`);
    } finally {
      await browser.close();
    }
  }
  result.slow3g = { runs, preset: SLOW_3G, login_median: median(runs.map((x) => x.login_usable)),
    jobs_median: cfg.slow3g.withJobs && runs.every((x) => x.jobs_usable !== null) ? median(runs.map((x) => x.jobs_usable)) : null };
}

const result = { ok: false };
try {
  mkdirSync(cfg.profile, { recursive: true });
  if (cfg.phases.includes("online")) await online(result);
  if (cfg.phases.includes("cold")) await cold(result);
  if (cfg.phases.includes("slow3g")) await slow3g(result);
  result.errors = errors;
  result.ok = true;
} catch (e) {
  result.error = String((e && e.stack) || e);
  log("ERROR", result.error);
}
console.log("RESULT " + JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
