// Hocuspocus 4.7 with its default configuration (no extensions: no persistence), for
// bench/engine_server.py. Usage: node hocuspocus.mjs PORT  -> prints {"event":"listening","port":N}
import { Server } from '@hocuspocus/server'

const port = Number(process.argv[2] || 0)
const server = new Server({ port, address: '127.0.0.1', quiet: true })
await server.listen()
process.stdout.write(JSON.stringify({ event: 'listening', port: server.address.port }) + '\n')
