// Put the precache list into dist/sw.js (replaces `self.__WB_MANIFEST`): every file of the
// build but the service worker itself; hashed assets need no revision, the others get their
// content hash so a new build replaces them.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";

const dist = new URL("../dist/", import.meta.url).pathname;
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else files.push(relative(dist, p).split("\\").join("/"));
  }
};
walk(dist);
const entries = files
  .filter((f) => f !== "sw.js" && /\.(js|css|html|svg|png|webmanifest|json)$/.test(f))
  .sort()
  .map((f) => ({
    url: `/${f}`,
    revision: f.startsWith("assets/") ? null : createHash("sha256").update(readFileSync(join(dist, f))).digest("hex").slice(0, 16),
  }));
const swPath = join(dist, "sw.js");
const sw = readFileSync(swPath, "utf8");
const marker = "self.__WB_MANIFEST";
const count = sw.split(marker).length - 1;
if (count !== 1) {
  console.error(`dist/sw.js must reference ${marker} exactly once (found ${count})`);
  process.exit(1);
}
writeFileSync(swPath, sw.replace(marker, JSON.stringify(entries)));
console.log(`service worker precaches ${entries.length} files`);
