// Initial JS+CSS of the built app (what index.html loads before any lazy chunk, plus the CSS and
// script inlined into index.html), gzipped. Fails (exit 1) over the budget: 200 KB.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const dist = new URL("../dist/", import.meta.url).pathname;
const html = readFileSync(join(dist, "index.html"), "utf8");
const refs = [...html.matchAll(/(?:src|href)="\/?([^"]+\.(?:js|css))"/g)].map((m) => m[1]);
const inline = [...html.matchAll(/<(style|script)\b[^>]*>([\s\S]*?)<\/\1>/g)].map((m) => m[2]).join("");
const BUDGET = 200 * 1024;
let total = 0;
for (const r of refs) {
  const gz = gzipSync(readFileSync(join(dist, r)), { level: 9 }).length;
  total += gz;
  console.log(`  ${r.padEnd(48)} ${(gz / 1024).toFixed(1)} KB gz`);
}
if (inline) {
  const gz = gzipSync(Buffer.from(inline), { level: 9 }).length;
  total += gz;
  console.log(`  ${"(inline in index.html)".padEnd(48)} ${(gz / 1024).toFixed(1)} KB gz`);
}
const all = readdirSync(join(dist, "assets")).filter((f) => /\.(js|css)$/.test(f));
let lazy = 0;
for (const f of all) if (!refs.includes(`assets/${f}`)) lazy += gzipSync(readFileSync(join(dist, "assets", f)), { level: 9 }).length;
console.log(`initial JS+CSS: ${(total / 1024).toFixed(1)} KB gzipped (budget ${BUDGET / 1024} KB); lazy chunks: ${(lazy / 1024).toFixed(1)} KB`);
if (total > BUDGET) {
  console.error("over the bundle budget");
  process.exit(1);
}
