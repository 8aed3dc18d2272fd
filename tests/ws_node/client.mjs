// A stock y-websocket client (WebsocketProvider over `ws`) driven by JSON lines on stdin.
//
// Commands (one JSON object per line):
//   {"cmd":"connect","url":"ws://host/ws","room":"job:<uuid>","token":"...",
//    "user":"<user id>","role":"office","device":"<device id>"}
//   {"cmd":"set","field":"title","value":"..."}   write a field with the schema/documents.py
//                                                 key scheme: "{field}/{ts}/{device}" ->
//                                                 {v, a: user, r: role}, superseding what it saw
//   {"cmd":"wait","field":"title","value":"...","timeout":10000}
//   {"cmd":"dump"}        {"cmd":"close"}
// Events (one JSON object per line on stdout):
//   {"event":"synced"} {"event":"done","key":...} {"event":"seen"} {"event":"timeout"}
//   {"event":"dump","fields":{...}} {"event":"close","code":...,"reason":...} {"event":"error",...}

import * as readline from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

let doc = null
let provider = null
let who = null
let lastMs = 0
let counter = 0

const now = () => {
  const ms = Date.now()
  if (ms > lastMs) {
    lastMs = ms
    counter = 0
  } else {
    counter += 1
  }
  return `${String(lastMs).padStart(13, '0')}.${String(counter).padStart(5, '0')}`
}

const fieldValue = (field) => {
  const fields = doc.getMap('fields')
  let best = null
  for (const [key, entry] of fields.entries()) {
    const [f, ts, dev] = key.split('/')
    if (f !== field) continue
    const tag = `${ts}/${dev}`
    if (best === null || tag > best.tag) best = { tag, value: entry.v }
  }
  return best === null ? undefined : best.value
}

const handlers = {
  connect (msg) {
    doc = new Y.Doc()
    who = { user: msg.user, role: msg.role, device: msg.device }
    provider = new WebsocketProvider(msg.url, msg.room, doc, {
      params: { token: msg.token },
      WebSocketPolyfill: WebSocket,
      disableBc: true
    })
    provider.on('sync', (synced) => { if (synced) emit({ event: 'synced' }) })
    provider.on('connection-close', (event) => {
      emit({ event: 'close', code: event ? event.code : null, reason: event ? String(event.reason) : '' })
    })
  },
  set (msg) {
    const fields = doc.getMap('fields')
    const key = `${msg.field}/${now()}/${who.device}`
    doc.transact(() => {
      for (const k of Array.from(fields.keys())) {
        if (k.startsWith(`${msg.field}/`)) fields.delete(k)
      }
      fields.set(key, { v: msg.value, a: who.user, r: who.role })
    })
    emit({ event: 'done', key })
  },
  wait (msg) {
    const check = () => JSON.stringify(fieldValue(msg.field)) === JSON.stringify(msg.value)
    if (check()) return emit({ event: 'seen' })
    const timer = setTimeout(() => {
      doc.off('update', onUpdate)
      emit({ event: 'timeout', fields: dumpFields() })
    }, msg.timeout || 10000)
    const onUpdate = () => {
      if (check()) {
        clearTimeout(timer)
        doc.off('update', onUpdate)
        emit({ event: 'seen' })
      }
    }
    doc.on('update', onUpdate)
  },
  dump () {
    emit({ event: 'dump', fields: dumpFields() })
  },
  close () {
    if (provider) provider.destroy()
    process.exit(0)
  }
}

const dumpFields = () => {
  const out = {}
  for (const key of doc.getMap('fields').keys()) {
    const f = key.split('/')[0]
    out[f] = fieldValue(f)
  }
  return out
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return
  try {
    const msg = JSON.parse(line)
    handlers[msg.cmd](msg)
  } catch (e) {
    emit({ event: 'error', message: String(e && e.stack ? e.stack : e) })
  }
}).on('close', () => {
  if (provider) provider.destroy()
  process.exit(0)
})
