// WebSocket / HTTP load generator for bench/engine_server.py: one Node process drives every
// simulated client, so the per-message cost on the client side stays small (no Y.Doc apply
// on receive: incoming frames are scanned for markers).
//
// Usage: node loadgen.mjs CONFIG.json, then JSON lines on stdin / stdout:
//   {"cmd":"connect"}                              -> {"event":"connected", ...}
//   {"cmd":"step","rate":800,"seconds":5,"drain":3} -> {"event":"step", ...}
//   {"cmd":"prime","rate":300,"drain":3}          -> {"event":"step", ...}: each sender writes once
//   {"cmd":"close"}                                -> exits
//
// CONFIG (JSON):
//   protocol      "y" (y-websocket / y-protocols framing: our server, pycrdt-websocket)
//                 "hocuspocus" (every message prefixed with the document name, auth first)
//                 "http" (POST /api/sync/push, one update per request, one queue per device)
//   http_url      base URL for "http" (e.g. http://127.0.0.1:8000)
//   connect_concurrency  WebSocket handshakes in flight while connecting (default 64)
//   devices       [{user, role, device, token}]   who writes (keys are stamped with these)
//   connections   [{url, doc, device: index into devices, send: {root, item, field, weight} | null}]
//                 url is the full WebSocket URL (ws) or unused (http).
//
// A write is a valid schema/documents.py write: key "{field}/{ts}/{device}" (or
// "{item}/{field}/{ts}/{device}" in root materials), value {v, a, r}, deleting the previous write
// of the same connection (the only one of that field it has seen: connections never apply what
// they receive, so nothing else is superseded). v is a marker "~~" + 10-digit edit id. A receiver
// finds the markers in the raw frame bytes (ContentAny keeps strings verbatim), so latency is
// measured per (edit, receiving connection): first time a receiver sees the edit minus the time
// the sender handed it to its socket. Both ends live in this process: one monotonic clock.
// Duplicates (an echo, a re-sent merge) are ignored per receiver: ids of one sender grow, so a
// receiver keeps the last id it saw from each sender.

import { readFileSync } from 'node:fs'
import * as readline from 'node:readline'
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const PROTO = cfg.protocol
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const now = () => performance.now()

// --- latency histogram: 20 µs buckets below 200 ms, 1 ms buckets to 60 s, then overflow ---
const FINE = 10000
const COARSE = 59800
class Hist {
  constructor () { this.b = new Float64Array(FINE + COARSE + 1); this.n = 0; this.max = 0; this.sum = 0 }
  add (ms, count = 1) {
    let i
    if (ms < 200) i = Math.max(0, Math.floor(ms * 50))
    else i = FINE + Math.min(COARSE, Math.floor(ms - 200))
    this.b[i] += count
    this.n += count
    this.sum += ms * count
    if (ms > this.max) this.max = ms
  }
  pct (q) {
    if (this.n === 0) return null
    const target = Math.ceil(q / 100 * this.n)
    let c = 0
    for (let i = 0; i < this.b.length; i++) {
      c += this.b[i]
      if (c >= target) return i < FINE ? (i + 1) / 50 : 200 + (i - FINE + 1)
    }
    return Infinity
  }
}

// --- device clocks (schema ts: 13-digit ms "." 5-digit counter, monotonic per device) ---
const devices = cfg.devices.map((d) => ({ ...d, lastMs: 0, counter: 0 }))
const stamp = (dev) => {
  const ms = Date.now()
  if (ms > dev.lastMs) { dev.lastMs = ms; dev.counter = 0 } else dev.counter += 1
  return `${String(dev.lastMs).padStart(13, '0')}.${String(dev.counter).padStart(5, '0')}`
}

// --- edits ---------------------------------------------------------------------------------
let sendTime = new Float64Array(1 << 16)
let senderOf = new Int32Array(1 << 16)
let nextId = 0
let stepFirstId = 0
let stepEndId = 0
let hist = new Hist()
let delivered = 0
let expected = 0
let outOfOrder = 0
let echoes = 0
let closes = []
let errors = []
let timeline = null // max latency per 100 ms of send time (cfg.timeline: diagnostics)
let stepT0 = 0

const grow = () => {
  const t = new Float64Array(sendTime.length * 2); t.set(sendTime); sendTime = t
  const s = new Int32Array(senderOf.length * 2); s.set(senderOf); senderOf = s
}

const MARK0 = 0x7e // '~'
const markerOf = (id) => '~~' + String(id).padStart(10, '0')

// receiving connections per document (for the expected delivery count)
const docMembers = new Map()

class Conn {
  constructor (i, spec) {
    this.i = i
    this.url = spec.url
    this.doc = spec.doc
    this.dev = devices[spec.device]
    this.send = spec.send || null
    this.ws = null
    this.open = false
    this.synced = false
    this.lastSeen = new Map() // sender conn index -> last edit id seen
    this.prevKey = null
    this.ydoc = null
    this.ymap = null
    this.captured = null
    this.addr = null // hocuspocus message address prefix (varString doc name)
    this.httpBusy = false
    this.httpQueue = []
    if (PROTO === 'hocuspocus') {
      const e = encoding.createEncoder()
      encoding.writeVarString(e, this.doc)
      this.addr = encoding.toUint8Array(e)
    }
    if (this.send) {
      this.ydoc = new Y.Doc()
      this.ymap = this.ydoc.getMap(this.send.root)
      this.ydoc.on('update', (u) => { this.captured = u })
    }
  }

  frame (write) {
    const e = encoding.createEncoder()
    if (this.addr) encoding.writeUint8Array(e, this.addr)
    write(e)
    return encoding.toUint8Array(e)
  }

  stateVector () {
    return this.ydoc ? Y.encodeStateVector(this.ydoc) : new Uint8Array([0])
  }

  connect () {
    return new Promise((resolve) => {
      const ws = new WebSocket(this.url, { perMessageDeflate: false, handshakeTimeout: 60000 })
      this.ws = ws
      ws.binaryType = 'nodebuffer'
      let settled = false
      const done = (ok, why) => { if (!settled) { settled = true; resolve({ ok, why }) } }
      ws.on('open', () => {
        this.open = true
        if (PROTO === 'hocuspocus') {
          ws.send(this.frame((e) => {
            encoding.writeVarUint(e, 2) // Auth
            encoding.writeVarUint(e, 0) // Token
            encoding.writeVarString(e, '')
          }))
        }
        ws.send(this.frame((e) => {
          encoding.writeVarUint(e, 0) // sync
          encoding.writeVarUint(e, 0) // step 1
          encoding.writeVarUint8Array(e, this.stateVector())
        }))
      })
      ws.on('message', (data) => {
        try {
          this.onMessage(data)
          if (this.synced) done(true)
        } catch (err) {
          errors.push(String(err && err.stack ? err.stack : err).slice(0, 500))
        }
      })
      ws.on('close', (code, reason) => {
        if (this.open) closes.push({ conn: this.i, code, reason: String(reason).slice(0, 200) })
        this.open = false
        this.synced = false
        done(false, `closed ${code} ${String(reason).slice(0, 200)}`)
      })
      ws.on('error', (err) => { done(false, String(err).slice(0, 200)) })
    })
  }

  onMessage (buf) {
    const d = decoding.createDecoder(buf)
    if (this.addr) decoding.readVarString(d)
    const type = decoding.readVarUint(d)
    if (type === 0 || type === 4) {
      const sub = decoding.readVarUint(d)
      if (sub === 0) { // the server's step 1: answer with what it lacks
        const sv = decoding.readVarUint8Array(d)
        const update = this.ydoc ? Y.encodeStateAsUpdate(this.ydoc, sv) : new Uint8Array([0, 0])
        this.ws.send(this.frame((e) => {
          encoding.writeVarUint(e, 0)
          encoding.writeVarUint(e, 1)
          encoding.writeVarUint8Array(e, update)
        }))
        return
      }
      if (sub === 1) this.synced = true
      this.scan(buf)
    }
    // awareness, auth answers, sync status acks: nothing to do
  }

  scan (buf) {
    let i = buf.indexOf(MARK0)
    const n = buf.length
    while (i !== -1 && i + 12 <= n) {
      if (buf[i + 1] !== MARK0) { i = buf.indexOf(MARK0, i + 1); continue }
      let id = 0
      let ok = true
      for (let k = i + 2; k < i + 12; k++) {
        const c = buf[k] - 48
        if (c < 0 || c > 9) { ok = false; break }
        id = id * 10 + c
      }
      if (ok) this.seen(id)
      i = buf.indexOf(MARK0, i + (ok ? 12 : 1))
    }
  }

  seen (id) {
    if (id >= nextId) return
    const s = senderOf[id]
    if (s === this.i) { echoes++; return }
    const last = this.lastSeen.get(s)
    if (last !== undefined && id <= last) {
      if (id < last) outOfOrder++
      return
    }
    this.lastSeen.set(s, id)
    if (id < stepFirstId || id >= stepEndId) return
    delivered++
    const lat = now() - sendTime[id]
    hist.add(lat)
    if (timeline !== null) {
      const b = Math.floor((sendTime[id] - stepT0) / 100)
      if (b >= 0 && b < timeline.length && lat > timeline[b]) timeline[b] = lat
    }
  }

  write () {
    const id = nextId++
    if (id >= sendTime.length) grow()
    senderOf[id] = this.i
    const dev = this.dev
    const s = this.send
    const ts = stamp(dev)
    const key = s.root === 'materials' ? `${s.item}/${s.field}/${ts}/${dev.device}` : `${s.field}/${ts}/${dev.device}`
    const prev = this.prevKey
    this.captured = null
    this.ydoc.transact(() => {
      if (prev !== null) this.ymap.delete(prev)
      this.ymap.set(key, { v: markerOf(id), a: dev.user, r: dev.role })
    })
    this.prevKey = key
    const update = this.captured
    const members = docMembers.get(this.doc) || 0
    expected += Math.max(0, members - 1)
    if (PROTO === 'http') {
      this.httpQueue.push({ id, update, scheduled: now() })
      if (!this.httpBusy) this.pumpHttp()
      return
    }
    const msg = this.frame((e) => {
      encoding.writeVarUint(e, 0)
      encoding.writeVarUint(e, 2)
      encoding.writeVarUint8Array(e, update)
    })
    sendTime[id] = now()
    if (this.open) this.ws.send(msg)
  }

  async pumpHttp () {
    this.httpBusy = true
    while (this.httpQueue.length > 0) {
      const { id, update, scheduled } = this.httpQueue.shift()
      const body = JSON.stringify({ doc_id: this.doc, update: Buffer.from(update).toString('base64') })
      const t0 = now()
      sendTime[id] = t0
      try {
        const r = await fetch(cfg.http_url + '/api/sync/push', {
          method: 'POST',
          headers: { authorization: 'Bearer ' + this.dev.token, 'content-type': 'application/json' },
          body
        })
        const text = await r.text()
        const t1 = now()
        if (r.status === 200) {
          if (id >= stepFirstId && id < stepEndId) {
            delivered++
            hist.add(t1 - scheduled)
            httpService.add(t1 - t0)
          }
        } else if (errors.length < 20) errors.push(`HTTP ${r.status}: ${text.slice(0, 300)}`)
        else errors.push('')
      } catch (err) {
        errors.push(String(err).slice(0, 200))
      }
    }
    this.httpBusy = false
  }
}

let httpService = new Hist()
const conns = cfg.connections.map((c, i) => new Conn(i, c))
for (const c of conns) docMembers.set(c.doc, (docMembers.get(c.doc) || 0) + 1)
if (PROTO === 'http') for (const c of conns) docMembers.set(c.doc, 2) // one ack per push

const senders = conns.filter((c) => c.send)
const cum = []
{
  let acc = 0
  for (const c of senders) { acc += c.send.weight ?? 1; cum.push(acc) }
}
const pick = () => {
  const r = Math.random() * cum[cum.length - 1]
  let lo = 0; let hi = cum.length - 1
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (cum[mid] > r) hi = mid; else lo = mid + 1
  }
  return senders[lo]
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function connectAll () {
  const t0 = now()
  if (PROTO === 'http') return { n: conns.length, failed: 0, ms: 0 }
  const limit = cfg.connect_concurrency || 64
  const failures = []
  // the first connection of each document alone, then the others: pycrdt-websocket can leave
  // connections unserved when several race to create a room
  const firsts = new Map()
  for (const c of conns) if (!firsts.has(c.doc)) firsts.set(c.doc, c)
  const order = [...firsts.values(), ...conns.filter((c) => firsts.get(c.doc) !== c)]
  const wave = async (list) => {
    let next = 0
    const worker = async () => {
      while (next < list.length) {
        const c = list[next++]
        const r = await c.connect()
        if (!r.ok) failures.push({ conn: c.i, doc: c.doc, why: r.why })
      }
    }
    await Promise.all(Array.from({ length: limit }, worker))
  }
  await wave(order.slice(0, firsts.size))
  await wave(order.slice(firsts.size))
  if (PROTO === 'hocuspocus') {
    // Hocuspocus closes a connection that sent nothing for `timeout` (60 s): pure receivers
    // ask for awareness now and then (cheap, no document work)
    setInterval(() => {
      for (const c of conns) if (c.open && !c.send) c.ws.send(c.frame((e) => encoding.writeVarUint(e, 3)))
    }, 20000).unref()
  }
  return { n: conns.length, failed: failures.length, failures: failures.slice(0, 5), ms: now() - t0 }
}

// every sending connection writes once, in order, at `rate`: a server's first-write work per
// connection (ours: binding the Yjs client id to the device) happens here, not in the steps
async function prime ({ rate, drain = 3 }) {
  const order = senders.slice()
  let i = 0
  return step({ rate, seconds: order.length / rate, drain, next: () => order[i++ % order.length] })
}

async function step ({ rate, seconds, drain = 3, next = pick }) {
  hist = new Hist()
  httpService = new Hist()
  delivered = 0
  expected = 0
  outOfOrder = 0
  echoes = 0
  closes = []
  errors = []
  stepFirstId = nextId
  stepEndId = Number.MAX_SAFE_INTEGER
  const cpu0 = process.cpuUsage()
  const t0 = now()
  stepT0 = t0
  timeline = cfg.timeline ? new Array(Math.ceil(seconds * 10) + 1).fill(0) : null
  const end = t0 + seconds * 1000
  let sent = 0
  let maxLag = 0
  let lagSum = 0
  let ticks = 0
  let lastTick = t0
  while (true) {
    const t = now()
    if (t >= end) break
    const lag = t - lastTick
    if (lag > maxLag) maxLag = lag
    lagSum += lag; ticks++
    const due = Math.floor(rate * (t - t0) / 1000) - sent
    for (let k = 0; k < due; k++) { next().write(); sent++ }
    lastTick = now()
    await sleep(1)
  }
  const sendElapsed = (now() - t0) / 1000
  stepEndId = nextId
  const cpuSend = process.cpuUsage(cpu0)
  // drain: wait until every expected delivery arrived or the drain time is up
  const dEnd = now() + drain * 1000
  while (now() < dEnd && delivered < expected) await sleep(5)
  const elapsed = (now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  const missing = Math.max(0, expected - delivered)
  const h = hist
  const p50 = h.pct(50)
  const p99Delivered = h.pct(99)
  if (missing > 0) h.add(1e9, missing) // undelivered counts as infinitely late
  return {
    event: 'step',
    rate,
    seconds,
    sent,
    send_rate: sent / sendElapsed,
    expected,
    delivered,
    missing,
    p50_ms: p50,
    p99_ms: h.pct(99),
    p99_delivered_ms: p99Delivered,
    max_ms: missing > 0 ? null : h.max,
    mean_ms: delivered ? (h.sum - (missing > 0 ? 1e9 * missing : 0)) / delivered : null,
    http_service_p50_ms: PROTO === 'http' ? httpService.pct(50) : undefined,
    http_service_p99_ms: PROTO === 'http' ? httpService.pct(99) : undefined,
    out_of_order: outOfOrder,
    echoes,
    closes: closes.length,
    close_samples: closes.slice(0, 3),
    errors: errors.length,
    error_samples: errors.filter((e) => e).slice(0, 3),
    open: conns.filter((c) => c.open).length,
    loadgen_cpu_send_pct: 100 * (cpuSend.user + cpuSend.system) / 1e6 / sendElapsed,
    loadgen_cpu_pct: 100 * (cpu.user + cpu.system) / 1e6 / elapsed,
    loadgen_tick_lag_max_ms: maxLag,
    loadgen_tick_lag_mean_ms: ticks ? lagSum / ticks : 0,
    elapsed_s: elapsed,
    timeline: timeline ? timeline.map((x) => Math.round(x)) : undefined
  }
}

const queue = []
let busy = false
const run = async () => {
  if (busy) return
  busy = true
  while (queue.length) {
    const msg = queue.shift()
    try {
      if (msg.cmd === 'connect') emit({ event: 'connected', ...(await connectAll()) })
      else if (msg.cmd === 'step') emit(await step({ rate: msg.rate, seconds: msg.seconds, drain: msg.drain }))
      else if (msg.cmd === 'prime') emit(await prime(msg))
      else if (msg.cmd === 'close') {
        for (const c of conns) if (c.ws) c.ws.terminate()
        process.exit(0)
      } else emit({ event: 'error', message: `unknown command ${msg.cmd}` })
    } catch (e) {
      emit({ event: 'error', message: String(e && e.stack ? e.stack : e) })
    }
  }
  busy = false
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return
  queue.push(JSON.parse(line))
  run()
}).on('close', () => process.exit(0))

emit({ event: 'ready', connections: conns.length, senders: senders.length })
