/** The document codec: key format, writers identical to schema/documents.py, and interop with
 * the Python codec and rules (pycrdt <-> Yjs) through tests/fixtures/pydoc.py. */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import * as Y from "yjs";
import {
  addNote, docIdFor, makeKey, maxTimestamp, parseDocId, parseEntry, parseKey, readRaw, removeMaterial, rootMap,
  writeField, writeMaterialField, type Stamp,
} from "../src/doc/codec";
import { explainPath, resolveDoc, viewToJson } from "../src/doc/view";
import { HLC, formatTs, parseTs } from "../src/rules/hlc";
import { cmpStr } from "../src/rules/compare";

const REPO = resolve(__dirname, "../..");
const PY = resolve(REPO, ".venv/bin/python");
const HAVE_PY = existsSync(PY);

const OWNER = "0b0b0b0b-0000-4000-8000-000000000001";
const CREW = "0c0c0c0c-0000-4000-8000-000000000002";
const M1 = "11111111-1111-4111-8111-111111111111";
const M2 = "22222222-2222-4222-8222-222222222222";
const N1 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const N2 = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

const o = (ts: string): Stamp => ({ ts, device: "dev-office", author: OWNER, role: "office" });
const c = (ts: string): Stamp => ({ ts, device: "dev-crew-1", author: CREW, role: "crew" });

function sync(a: Y.Doc, b: Y.Doc): void {
  Y.applyUpdate(a, Y.encodeStateAsUpdate(b, Y.encodeStateVector(a)));
  Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)));
}

function py(args: string[], input?: string): any {
  const out = execFileSync(PY, [resolve(__dirname, "fixtures/pydoc.py"), ...args], {
    cwd: REPO, input, encoding: "utf8", env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1", PYTHONPATH: REPO },
  });
  return JSON.parse(out);
}

/** The same scenario as pydoc.py's build(), written with the TypeScript writers. */
function buildTs(): Y.Doc {
  const office = new Y.Doc();
  const crew = new Y.Doc();
  office.transact(() => {
    writeField(office, "owner_id", OWNER, o("1700000000000.00000"));
    writeField(office, "title", "Kitchen", o("1700000000000.00000"));
    writeField(office, "status", "scheduled", o("1700000000000.00000"));
    writeField(office, "crew", [CREW], o("1700000000000.00000"));
    writeMaterialField(office, M1, "name", "2x4 studs", o("1700000000000.00001"));
    writeMaterialField(office, M1, "quantity", 12, o("1700000000000.00001"));
    writeMaterialField(office, M2, "name", "drywall screws", o("1700000000000.00002"));
  });
  sync(office, crew);
  crew.transact(() => {
    writeField(crew, "status", "in_progress", c("1700000900000.00000"));
    writeField(crew, "title", "Kitchen remodel", c("1700000900000.00000"));
    writeMaterialField(crew, M2, "purchased", true, c("1700000900000.00001"));
    addNote(crew, N1, "arrived", c("1700000900000.00002"));
  });
  office.transact(() => {
    writeField(office, "status", "on_hold", o("1700000100000.00000"));
    removeMaterial(office, M2, o("1700000100000.00001"));
    removeMaterial(office, M1, o("1700000100000.00002"));
    addNote(office, N2, "call customer", o("1700000100000.00003"));
  });
  sync(office, crew);
  return office;
}

function describeTs(doc: Y.Doc, kind: "job" | "customer"): any {
  const view = resolveDoc(doc, kind);
  const paths = kind === "job" ? ["status", "title"] : ["name"];
  if (kind === "job") {
    const ids = view.materials.map((m) => m.id);
    paths.push(...ids.map((m) => `materials/${m}`), ...ids.map((m) => `materials/${m}/name`), "notes");
  }
  const explain: Record<string, unknown> = {};
  for (const p of paths) explain[p] = explainPath(doc, kind, p, "r");
  return JSON.parse(JSON.stringify({ view: viewToJson(view), explain }));
}

describe("keys and entries", () => {
  it("formats and parses keys like schema/documents.py", () => {
    expect(makeKey("fields", { field: "title", ts: "1700000000000.00000", device: "d1" })).toBe("title/1700000000000.00000/d1");
    expect(makeKey("materials", { item: M1, field: "name", ts: "1700000000000.00000", device: "d1" }))
      .toBe(`${M1}/name/1700000000000.00000/d1`);
    expect(makeKey("notes", { item: N1, ts: "1700000000000.00000", device: "d1" })).toBe(`${N1}/1700000000000.00000/d1`);
    expect(parseKey("materials", `${M1}/_removed/1700000000000.00000/d1`).field).toBe("_removed");
    for (const [root, bad] of [["fields", "Title/1700000000000.00000/d1"], ["fields", "title/170.0/d1"],
      ["fields", "title/1700000000000.00000/bad device"], ["materials", "x/name/1700000000000.00000/d1"],
      ["notes", `${N1}/1700000000000.00000`]] as const) {
      expect(() => parseKey(root, bad)).toThrow();
    }
    expect(parseDocId(docIdFor("job", M1))).toEqual(["job", M1]);
    expect(() => parseDocId("job:nope")).toThrow();
    expect(() => parseEntry({ v: 1, a: "x" })).toThrow();
    expect(parseEntry({ v: 1, a: "x", r: "crew" })).toEqual([1, "x", "crew"]);
  });

  it("a write supersedes what it saw; a concurrent one stays a candidate", () => {
    const a = new Y.Doc();
    const b = new Y.Doc();
    writeField(a, "title", "one", o("1700000000000.00000"));
    writeField(a, "title", "two", o("1700000000001.00000"));
    expect([...rootMap(a, "fields").keys()]).toEqual(["title/1700000000001.00000/dev-office"]);
    sync(a, b);
    writeField(b, "title", "crew", c("1700000000002.00000"));
    writeField(a, "title", "office", o("1700000000003.00000"));
    sync(a, b);
    const raw = readRaw(a, "job");
    expect(raw.record["title"]!.map((x) => x.key).sort(cmpStr)).toEqual([
      "title/1700000000002.00000/dev-crew-1", "title/1700000000003.00000/dev-office"]);
    expect(resolveDoc(a, "job").record["title"]).toBe("office");
    expect(maxTimestamp(a)).toBe("1700000000003.00000");
  });

  it("a removal lists the item's writes it saw, sorted", () => {
    const d = new Y.Doc();
    writeMaterialField(d, M1, "quantity", 2, o("1700000000000.00001"));
    writeMaterialField(d, M1, "name", "screws", o("1700000000000.00000"));
    const key = removeMaterial(d, M1, o("1700000000000.00002"));
    const entry = rootMap(d, "materials").get(key) as { v: string[] };
    expect(entry.v).toEqual([`${M1}/name/1700000000000.00000/dev-office`, `${M1}/quantity/1700000000000.00001/dev-office`]);
    expect(resolveDoc(d, "job").materials[0]!.removed).toBe(true);
  });

  it("skips malformed writes instead of crashing", () => {
    const d = new Y.Doc();
    rootMap(d, "fields").set("garbage", { v: 1, a: "x", r: "crew" });
    rootMap(d, "fields").set("title/1700000000000.00000/d1", { v: "x" });
    writeField(d, "title", "ok", o("1700000000000.00000"));
    expect(resolveDoc(d, "job").record).toEqual({ title: "ok" });
  });
});

describe("hybrid logical clock", () => {
  it("formats fixed width and stays monotonic", () => {
    expect(formatTs(1700000000000, 7)).toBe("1700000000000.00007");
    expect(parseTs("1700000000000.00007")).toEqual({ wall_ms: 1700000000000, counter: 7 });
    let now = 1000;
    const h = new HLC(null, { clock: () => now });
    expect(h.now()).toBe("0000000001000.00000");
    expect(h.now()).toBe("0000000001000.00001");
    expect(h.receive("0000000005000.00003")).toBe("0000000005000.00004");
    now = 6000;
    expect(h.now()).toBe("0000000006000.00000");
    const h2 = new HLC("0000000001000.99999", { clock: () => 0 });
    expect(h2.now()).toBe("0000000001001.00000");
  });
});

describe.skipIf(!HAVE_PY)("interop with the Python codec (pycrdt)", () => {
  it("reads a Python-written document exactly as Python resolves and explains it", () => {
    const fixture = py(["build"]);
    const doc = new Y.Doc();
    Y.applyUpdate(doc, Buffer.from(fixture.update, "base64"));
    const got = describeTs(doc, "job");
    expect(got.view).toEqual(fixture.view);
    expect(got.explain).toEqual(fixture.explain);
    // the brief's cases, through the document: owner's on_hold beats the offline crew
    expect(got.view.record.status).toBe("on_hold");
    expect(got.view.materials[M2].removed).toBe(false); // edit concurrent with removal keeps it
    expect(got.view.materials[M1].removed).toBe(true);
  });

  it("writes documents Python resolves the same way (writers are identical)", () => {
    const doc = buildTs();
    const update = Buffer.from(Y.encodeStateAsUpdate(doc)).toString("base64");
    const fromPy = py(["read", "job"], update);
    expect(describeTs(doc, "job")).toEqual(fromPy);
    expect(fromPy).toEqual((({ update: _u, ...rest }) => rest)(py(["build"])));
  });
});
