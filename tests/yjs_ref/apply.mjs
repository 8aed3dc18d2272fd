// Yjs reference harness: apply Yjs v1 updates with the real Yjs and report the result.
//
// Batch mode (default):
//   node apply.mjs < request.json
//   request: {"sessions": [{"updates": ["<base64>", ...], "roots"?: [...]}, ...],
//             "roots"?: ["fields", "materials", "notes"]}
//   output:  one JSON line per session, in the order of "sessions".
//
// Serve mode (one long-lived process, line-delimited JSON both ways):
//   node apply.mjs --serve
//   each input line is a request as above plus an optional "id";
//   each output line is {"id": <same id>, "results": [<session result>, ...]}
//   or {"id": ..., "error": "<message>"} when the request itself is malformed.
//   The process exits when stdin closes.
//
// Session result:
//   {"state_vector": b64(Y.encodeStateVector(doc)),
//    "state": b64(Y.encodeStateAsUpdate(doc)),
//    "json": {"<root>": doc.get<Type>(root).toJSON(), ...},
//    "pending": Boolean(doc.store.pendingStructs || doc.store.pendingDs),
//    "pending_missing": {"<client>": <clock>, ...} | null,   // what pending structs wait for
//    "clocks": {"<client>": <clock>, ...},                    // decoded state vector
//    "error": null | "<message>", "error_index": null | <index of the failing update>}
//
// Each session gets a fresh Y.Doc; updates are applied IN THE GIVEN ORDER with
// Y.applyUpdate (Yjs buffers structs whose dependencies are missing and integrates them once
// they arrive). If applying an update throws, the error is reported and the remaining updates
// of that session are not applied.
//
// Roots: a plain name is a Y.Map; "name:map" | "name:array" | "name:text" | "name:xml" selects
// the type explicitly. Values Yjs cannot put in JSON are tagged: Uint8Array ->
// {"__bytes_b64__": "<base64>"}, BigInt -> number when safe, else {"__bigint__": "<decimal>"}.

import * as Y from 'yjs'
import { createInterface } from 'node:readline'

const DEFAULT_ROOTS = ['fields', 'materials', 'notes']

const b64 = (u8) => Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength).toString('base64')
const unb64 = (s) => {
  if (typeof s !== 'string') throw new TypeError('an update must be a base64 string')
  const buf = Buffer.from(s, 'base64')
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
}

function replacer (_key, value) {
  if (value instanceof Uint8Array) return { __bytes_b64__: b64(value) }
  if (typeof value === 'bigint') {
    const n = Number(value)
    return Number.isSafeInteger(n) ? n : { __bigint__: value.toString() }
  }
  return value
}

function getRoot (doc, spec) {
  if (typeof spec !== 'string' || spec.length === 0) throw new TypeError(`bad root spec ${JSON.stringify(spec)}`)
  const i = spec.lastIndexOf(':')
  const name = i < 0 ? spec : spec.slice(0, i)
  const type = i < 0 ? 'map' : spec.slice(i + 1)
  switch (type) {
    case 'map': return [name, doc.getMap(name)]
    case 'array': return [name, doc.getArray(name)]
    case 'text': return [name, doc.getText(name)]
    case 'xml': return [name, doc.getXmlFragment(name)]
    default: throw new TypeError(`unknown root type ${JSON.stringify(type)} in ${JSON.stringify(spec)}`)
  }
}

function toJSONValue (type) {
  // Y.Text.toJSON() returns the string; XmlFragment.toJSON() its XML string.
  return type.toJSON()
}

function clocksOf (sv) {
  const out = {}
  for (const [client, clock] of Y.decodeStateVector(sv)) out[String(client)] = clock
  return out
}

function runSession (session, defaultRoots) {
  if (session === null || typeof session !== 'object' || !Array.isArray(session.updates)) {
    throw new TypeError('a session must be an object with an "updates" array')
  }
  const roots = session.roots ?? defaultRoots
  if (!Array.isArray(roots)) throw new TypeError('"roots" must be an array')
  const doc = new Y.Doc({ gc: true })
  let error = null
  let errorIndex = null
  for (let i = 0; i < session.updates.length; i++) {
    try {
      Y.applyUpdate(doc, unb64(session.updates[i]), 'reference')
    } catch (e) {
      error = String(e && e.stack ? e.stack.split('\n')[0] : e)
      errorIndex = i
      break
    }
  }
  const json = {}
  for (const spec of roots) {
    const [name, type] = getRoot(doc, spec)
    json[name] = toJSONValue(type)
  }
  const sv = Y.encodeStateVector(doc)
  const ps = doc.store.pendingStructs
  let pendingMissing = null
  if (ps) {
    pendingMissing = {}
    for (const [client, clock] of ps.missing) pendingMissing[String(client)] = clock
  }
  const result = {
    state_vector: b64(sv),
    state: b64(Y.encodeStateAsUpdate(doc)),
    json,
    pending: Boolean(doc.store.pendingStructs || doc.store.pendingDs),
    pending_missing: pendingMissing,
    clocks: clocksOf(sv),
    error,
    error_index: errorIndex
  }
  doc.destroy()
  return result
}

function runRequest (req) {
  if (req === null || typeof req !== 'object' || !Array.isArray(req.sessions)) {
    throw new TypeError('a request must be an object with a "sessions" array')
  }
  const roots = req.roots ?? DEFAULT_ROOTS
  return req.sessions.map((s) => runSession(s, roots))
}

function write (line) {
  // Synchronous-enough for a pipe; keep ordering by writing whole lines.
  process.stdout.write(line + '\n')
}

async function readAll (stream) {
  const chunks = []
  for await (const c of stream) chunks.push(c)
  return Buffer.concat(chunks).toString('utf8')
}

async function main () {
  if (process.argv.includes('--serve')) {
    const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
    for await (const line of rl) {
      if (line.trim() === '') continue
      let id = null
      try {
        const req = JSON.parse(line)
        id = req && typeof req === 'object' ? (req.id ?? null) : null
        const results = runRequest(req)
        write(JSON.stringify({ id, results }, replacer))
      } catch (e) {
        write(JSON.stringify({ id, error: String(e && e.message ? e.message : e) }))
      }
    }
    return
  }
  const text = await readAll(process.stdin)
  const results = runRequest(JSON.parse(text))
  for (const r of results) write(JSON.stringify(r, replacer))
}

main().catch((e) => {
  process.stderr.write(`apply.mjs: ${e && e.stack ? e.stack : e}\n`)
  process.exitCode = 1
})
