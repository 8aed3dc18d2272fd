/** Hybrid logical clocks (port of conflict_rules/hlc.py).
 *
 * A timestamp is the string `"{wall_ms:013d}.{counter:05d}"`: fixed width, so string order is
 * time order in Python and TypeScript alike. */

export const MAX_COUNTER = 99_999;
export const DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000;
const TS_RE = /^(\d{13})\.(\d{5})$/;

export interface Timestamp {
  readonly wall_ms: number;
  readonly counter: number;
}

export class ClockSkewError extends Error {
  constructor(readonly ts: string, readonly nowMs: number, readonly maxSkewMs: number) {
    super(`timestamp ${ts} is more than ${maxSkewMs} ms ahead of the server clock (${nowMs})`);
    this.name = "ClockSkewError";
  }
}

export function formatTs(wallMs: number, counter: number): string {
  if (!Number.isInteger(wallMs) || !Number.isInteger(counter) || wallMs < 0 || wallMs >= 1e13 || counter < 0 ||
      counter > MAX_COUNTER) {
    throw new RangeError(`timestamp out of range: ${wallMs}.${counter}`);
  }
  return `${String(wallMs).padStart(13, "0")}.${String(counter).padStart(5, "0")}`;
}

export function parseTs(ts: string): Timestamp {
  const m = typeof ts === "string" ? TS_RE.exec(ts) : null;
  if (m === null) throw new RangeError(`not a hybrid-logical-clock timestamp: ${JSON.stringify(ts)}`);
  return { wall_ms: Number(m[1]), counter: Number(m[2]) };
}

export function isValidTs(ts: unknown): ts is string {
  return typeof ts === "string" && TS_RE.test(ts);
}

/** A hybrid logical clock, monotonic per device. `offsetMs` corrects a device clock known
 * to be off (learned from the server's `server_time`). */
export class HLC {
  private wall: number;
  private counter: number;
  offsetMs: number;
  private readonly clock: () => number;

  constructor(last: string | null = null, opts: { clock?: () => number; offsetMs?: number } = {}) {
    this.clock = opts.clock ?? (() => Date.now());
    this.offsetMs = opts.offsetMs ?? 0;
    const t = last ? parseTs(last) : { wall_ms: 0, counter: 0 };
    this.wall = t.wall_ms;
    this.counter = t.counter;
  }

  get last(): string {
    return formatTs(this.wall, this.counter);
  }

  physicalMs(): number {
    return Math.floor(this.clock() + this.offsetMs);
  }

  /** A new timestamp, greater than every timestamp this clock issued or received. */
  now(): string {
    const pt = this.physicalMs();
    if (pt > this.wall) {
      this.wall = pt;
      this.counter = 0;
    } else {
      this.tick();
    }
    return this.last;
  }

  /** Merge a remote timestamp so later local writes order after it. */
  receive(remote: string): string {
    const r = parseTs(remote);
    const pt = this.physicalMs();
    if (pt > this.wall && pt > r.wall_ms) {
      this.wall = pt;
      this.counter = 0;
    } else if (r.wall_ms > this.wall) {
      this.wall = r.wall_ms;
      this.counter = r.counter;
      this.tick();
    } else if (r.wall_ms === this.wall) {
      this.counter = Math.max(this.counter, r.counter);
      this.tick();
    } else {
      this.tick();
    }
    return this.last;
  }

  private tick(): void {
    if (this.counter >= MAX_COUNTER) {
      this.wall += 1;
      this.counter = 0;
    } else {
      this.counter += 1;
    }
  }

  static checkSkew(ts: string, nowMs: number, maxSkewMs: number = DEFAULT_MAX_SKEW_MS): void {
    if (parseTs(ts).wall_ms > nowMs + maxSkewMs) throw new ClockSkewError(ts, nowMs, maxSkewMs);
  }
}
