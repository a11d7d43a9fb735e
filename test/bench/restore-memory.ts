/**
 * The agent's memory over many restores of one backup, as a long-running agent (a systemd service)
 * sees it:
 *
 *     node dist/test/bench/restore-memory.js <mount|postgresql|redis> [restores] [--full] [--gc] [--snapshots a,b]
 *
 * Backs the case up once (zstd), then restores that backup `restores` times (10 by default), and
 * prints after each command the agent's peak RSS during it (VmHWM, reset before it by writing 5 to
 * /proc/<pid>/clear_refs, as the bench does) and its RSS then, split into the brk heap (glibc
 * malloc's main arena: native buffers such as Node's Buffers), the other anonymous memory (V8's
 * heap, other arenas, stacks) and file-backed memory (code). Data at `npm run bench -- --quick`
 * size (`--full`: the full size); a mount is the bench's copied tree, or the directory
 * `ENVSNAP_TIMELINE_TREE` names, used as it is.
 *
 * `--gc` also prints the agent's V8 heap after two full collections (memory-preload.ts), which is
 * what a leak of JavaScript objects grows; `--snapshots 2,10` writes V8 heap snapshots after those
 * restores (0: before the backup), to compare in Chrome DevTools. Both raise the RSS themselves:
 * read RSS from a run without them. `ENVSNAP_MEMORY_ENV=NAME=VALUE,...` sets variables for the
 * agent and the controller, e.g. glibc's `MALLOC_MMAP_THRESHOLD_=131072`.
 *
 * Long loops disturb others' timings: run it under `flock /tmp/bench.lock`.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPostgres, startRedis } from '../helpers/servers.js';
import { FULL_SIZES, QUICK_SIZES, fillPostgres, fillRedis, makeBenchTree } from './bench-data.js';
import { EnvsnapBench, type BenchTargets } from './envsnap-runner.js';

const MB = 1024 * 1024;

/** VmRSS of `pid`, in MB. */
function residentMb(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Math.round(Number(kb ?? 0) / 1024);
}

/** `pid`'s resident memory in MB by kind of mapping: brk heap, other anonymous, file-backed. */
function residentByKind(pid: number): { heap: number; anon: number; file: number } {
  const kb = { heap: 0, anon: 0, file: 0 };
  let kind: keyof typeof kb | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (mapping) {
      const name = mapping[1]!;
      kind = name === '[heap]' ? 'heap' : name === '' || name.startsWith('[') ? 'anon' : 'file';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && kind) kb[kind] += Number(rss[1]);
  }
  return {
    heap: Math.round(kb.heap / 1024),
    anon: Math.round(kb.anon / 1024),
    file: Math.round(kb.file / 1024),
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const kind = args[0];
  if (kind !== 'mount' && kind !== 'postgresql' && kind !== 'redis') {
    throw new Error(
      'usage: restore-memory.js <mount|postgresql|redis> [restores] [--full] [--gc] [--snapshots a,b]',
    );
  }
  const restores = Number(args.find((a, i) => i > 0 && /^\d+$/.test(a)) ?? 10);
  const sizes = args.includes('--full') ? FULL_SIZES : QUICK_SIZES;
  const withGc = args.includes('--gc') || args.includes('--snapshots');
  const snapshotsAt = new Set(
    (args[args.indexOf('--snapshots') + 1] ?? '').split(',').filter(Boolean).map(Number),
  );
  const work = await mkdtemp(path.join(tmpdir(), 'envsnap-memory-'));
  const stops: Array<() => Promise<unknown>> = [() => rm(work, { recursive: true, force: true })];
  try {
    const targets: BenchTargets = {};
    if (kind === 'mount') {
      targets.mount = process.env.ENVSNAP_TIMELINE_TREE ?? path.join(work, 'mount');
      if (!process.env.ENVSNAP_TIMELINE_TREE) await makeBenchTree(targets.mount, sizes.mountBytes);
    } else if (kind === 'postgresql') {
      const pg = await startPostgres();
      stops.unshift(() => pg.stop());
      await fillPostgres(pg, sizes);
      targets.pg = pg;
    } else {
      const redis = await startRedis();
      stops.unshift(() => redis.stop());
      await fillRedis(redis, sizes);
      targets.redis = redis;
    }
    const saved = { ...process.env };
    for (const pair of (process.env.ENVSNAP_MEMORY_ENV ?? '').split(',').filter(Boolean)) {
      const eq = pair.indexOf('=');
      process.env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    if (withGc) {
      const preload = new URL('./memory-preload.js', import.meta.url).href;
      process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --import=${preload}`.trim();
      process.env.ENVSNAP_BENCH_MEMORY_DIR = work;
    }
    let bench: EnvsnapBench;
    try {
      bench = await EnvsnapBench.start(targets);
    } finally {
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
      Object.assign(process.env, saved);
    }
    stops.unshift(() => bench.stop());
    const pid = bench.pids.agent;
    let seq = 0;
    const v8Heap = async (snapshot: string | undefined): Promise<string> => {
      if (!withGc) return '';
      if (snapshot) writeFileSync(path.join(work, 'snapshot-request'), snapshot);
      process.kill(pid, 'SIGUSR2');
      const file = path.join(work, `mem.${seq++}.json`);
      for (let i = 0; i < 600 && !existsSync(file); i++) await sleep(100);
      await sleep(100);
      const m = JSON.parse(readFileSync(file, 'utf8')) as NodeJS.MemoryUsage;
      const f = (n: number): string => (n / MB).toFixed(1);
      return ` | after GC: heapUsed ${f(m.heapUsed)} heapTotal ${f(m.heapTotal)} external ${f(m.external)} arrayBuffers ${f(m.arrayBuffers)}${snapshot ? ` snapshot ${snapshot}` : ''}`;
    };
    const snapshotFile = (n: number): string | undefined =>
      snapshotsAt.has(n) ? path.resolve(`restore-memory.${n}.heapsnapshot`) : undefined;
    /** `peakMb`: the agent's VmHWM during the command (EnvsnapBench resets it before each one). */
    const report = async (label: string, n: number, peakMb?: number): Promise<void> => {
      const r = residentByKind(pid);
      const heap = await v8Heap(snapshotFile(n));
      const peak = peakMb === undefined ? '' : `peak ${Math.round(peakMb)} MB, `;
      console.log(
        `${label.padEnd(11)} ${peak}RSS ${residentMb(pid)} MB (brk heap ${r.heap}, other anon ${r.anon}, file ${r.file})${heap}`,
      );
    };
    await report('start', 0);
    const backup = await bench.backup(`bench-${kind}`, 'zstd');
    await report('backup', -1, backup.agentRssMb);
    for (let i = 1; i <= restores; i++) {
      const restore = await bench.restore(backup.backupId!);
      await report(`restore ${i}`, i, restore.agentRssMb);
    }
  } finally {
    for (const stop of stops) await stop().catch(() => undefined);
  }
}

await main();
