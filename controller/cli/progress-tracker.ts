/**
 * Bytes, rate and ETA of an activity's artifacts and of the whole activity, from the progress
 * events of `WatchActivity`. Pure bookkeeping (no terminal): follow.ts draws it.
 *
 * - Rate: bytes per second over the last {@link RATE_WINDOW_MS} (a moving window, so that it
 *   follows changes of speed and falls when a transfer stalls); unknown until two samples exist.
 * - Total: the agent's `total_bytes` when it sends one, else the expected size given at
 *   construction (exact for restores: the manifest's sizes; an estimate for backups: the same
 *   artifact's size in the previous complete backup).
 * - ETA: (total - bytes) / rate; unknown without a total or a rate, and once the bytes passed an
 *   estimated total (the estimate was wrong; a guess would be too).
 * - Overall: every artifact seen or expected; an artifact not yet started counts with its expected
 *   size, a finished one with its final size.
 */
import type { WireProgress } from '../../shared/wire.js';

/** Width of the moving window the rates are measured over, milliseconds. */
export const RATE_WINDOW_MS = 5_000;

/** What is known of one artifact, or of the whole activity. */
export interface ProgressView {
  /** Artifact name, or "total". */
  name: string;
  /** Bytes done (stored bytes for backups, downloaded bytes for restores). */
  bytes: number;
  /** Expected bytes; undefined when unknown. */
  total?: number;
  /** True when `total` is an estimate (previous backup's size). */
  estimated: boolean;
  /** 0..1 of `total`; undefined without a total. Below 1 until done. */
  fraction?: number;
  /** Bytes per second over the window; undefined until measurable. */
  rate?: number;
  /** Seconds left; undefined when unknown. */
  etaSeconds?: number;
  done: boolean;
  /** Milliseconds from the first event to done (or to now). */
  elapsedMs: number;
}

/** Expected artifact sizes, bytes, by artifact name; `estimated` when not exact. */
export interface ExpectedSizes {
  sizes: Map<string, number>;
  estimated: boolean;
}

class Meter {
  private samples: Array<[number, number]> = [];

  add(now: number, bytes: number): void {
    this.samples.push([now, bytes]);
    // Keep one sample at or before the window's start, so that the window is always covered.
    while (this.samples.length > 2 && this.samples[1]![0] <= now - RATE_WINDOW_MS) this.samples.shift();
  }

  rate(now: number): number | undefined {
    const first = this.samples[0];
    const last = this.samples.at(-1);
    if (!first || !last || this.samples.length < 2) return undefined;
    const span = Math.max(now, last[0]) - first[0];
    return span > 0 ? (last[1] - first[1]) / (span / 1000) : undefined;
  }
}

interface ArtifactState {
  bytes: number;
  agentTotal: number;
  done: boolean;
  started: number;
  finished?: number;
  meter: Meter;
}

/** Tracks the progress of one activity's artifacts (see the file comment). */
export class ProgressTracker {
  private readonly artifacts = new Map<string, ArtifactState>();
  private readonly overallMeter = new Meter();
  private firstEvent: number | undefined;

  constructor(private readonly expected: ExpectedSizes = { sizes: new Map(), estimated: false }) {}

  /** Records one progress event at time `now` (ms); returns the artifact's view. */
  update(p: WireProgress, now = Date.now()): ProgressView {
    this.firstEvent ??= now;
    let a = this.artifacts.get(p.artifact);
    if (!a) {
      a = { bytes: 0, agentTotal: 0, done: false, started: now, meter: new Meter() };
      this.artifacts.set(p.artifact, a);
    }
    a.bytes = Number(p.bytes);
    a.agentTotal = Number(p.totalBytes);
    a.meter.add(now, a.bytes);
    if (p.done && !a.done) {
      a.done = true;
      a.finished = now;
    }
    this.overallMeter.add(now, this.sumBytes());
    return this.view(p.artifact, now);
  }

  /** Names of the artifacts seen so far, in order of their first event. */
  names(): string[] {
    return [...this.artifacts.keys()];
  }

  /** True once an event was seen. */
  get started(): boolean {
    return this.firstEvent !== undefined;
  }

  /** The view of one artifact at time `now`. */
  view(name: string, now = Date.now()): ProgressView {
    const a = this.artifacts.get(name);
    if (!a) throw new Error(`no progress for ${name}`);
    const expected = this.expected.sizes.get(name);
    const total = a.agentTotal > 0 ? a.agentTotal : a.done ? a.bytes : expected;
    const estimated = a.agentTotal === 0 && !a.done && expected !== undefined && this.expected.estimated;
    const rate = a.done ? undefined : a.meter.rate(now);
    return {
      name,
      bytes: a.bytes,
      total,
      estimated,
      ...fractionAndEta(a.bytes, total, estimated, rate, a.done),
      rate: a.done ? this.averageRate(a.bytes, a.started, a.finished!) : rate,
      done: a.done,
      elapsedMs: (a.finished ?? now) - a.started,
    };
  }

  /** The whole activity at time `now`: every artifact seen or expected. */
  overall(now = Date.now()): ProgressView {
    const bytes = this.sumBytes();
    let total = 0;
    let known = true;
    let estimated = false;
    let allDone = this.artifacts.size > 0;
    for (const name of new Set([...this.expected.sizes.keys(), ...this.artifacts.keys()])) {
      const a = this.artifacts.get(name);
      if (!a?.done) allDone = false;
      const v = a ? this.view(name, now) : undefined;
      const expected = this.expected.sizes.get(name);
      if (v?.total !== undefined) total += Math.max(v.total, v.bytes);
      else if (!a && expected !== undefined) total += expected;
      else known = false;
      if (v ? v.estimated : this.expected.estimated) estimated = true;
    }
    const done = allDone && this.artifacts.size >= this.expected.sizes.size;
    const rate = this.overallMeter.rate(now);
    const totalOrUndefined = known && total > 0 ? total : undefined;
    return {
      name: 'total',
      bytes,
      total: totalOrUndefined,
      estimated,
      ...fractionAndEta(bytes, totalOrUndefined, estimated, rate, done),
      rate,
      done,
      elapsedMs: this.firstEvent === undefined ? 0 : now - this.firstEvent,
    };
  }

  private sumBytes(): number {
    let sum = 0;
    for (const a of this.artifacts.values()) sum += a.bytes;
    return sum;
  }

  private averageRate(bytes: number, started: number, finished: number): number | undefined {
    return finished > started ? bytes / ((finished - started) / 1000) : undefined;
  }
}

function fractionAndEta(
  bytes: number,
  total: number | undefined,
  estimated: boolean,
  rate: number | undefined,
  done: boolean,
): { fraction?: number; etaSeconds?: number } {
  if (done) return { fraction: 1, etaSeconds: 0 };
  if (total === undefined || total <= 0) return {};
  // Not done yet: never show 100 %, and no ETA once the bytes passed an estimate.
  const fraction = Math.min(bytes / total, 0.99);
  if (bytes >= total && estimated) return { fraction };
  const etaSeconds = rate && rate > 0 ? Math.max(0, (total - bytes) / rate) : undefined;
  return { fraction, etaSeconds };
}

/** Seconds for people: "42s", "3m05s", "1h02m". */
export function humanDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
