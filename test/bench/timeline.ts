/**
 * The timeline of envsnap backups (and, with `--restore`, restores) of one case against its raw
 * pipeline, on the same data, back to back:
 *
 *     node dist/test/bench/timeline.js <mariadb|postgresql|redis> [runs] [--full] [--restore]
 *
 * Data at `npm run bench -- --quick` size (`--full`: the full size; MariaDB honours
 * `ENVSNAP_TIMELINE_TABLES` and `ENVSNAP_TIMELINE_ROWS`, e.g. 4 and 400000 for the earlier MariaDB
 * timeline), 3 runs by default. Prints, per run, the wall and CPU seconds of the raw pipeline and of
 * envsnap split by process (CLI, controller, agent with its reaped tools, the database server), and
 * every controller and agent log line of the envsnap run with its time from the CLI's start, and the
 * CLI's exit. JSON lines with a `time` and `msg` that a process writes to stdout or stderr (the
 * CLI's included) show as well: add such lines by hand to time phases the logs do not name, e.g.
 * the final fsync or the dump tool's exit.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { repoRoot } from '../helpers/datasets.js';
import { startMariadb, startPostgres, startRedis } from '../helpers/servers.js';
import { FULL_SIZES, QUICK_SIZES, changeRedis, fillMariadb, fillPostgres, fillRedis } from './bench-data.js';
import { BENCH_NODE, EnvsnapBench, type BenchTargets } from './envsnap-runner.js';
import { processCpuSeconds, timed, timeShell } from './measure.js';
import {
  mariadbBackups,
  postgresBackups,
  redisBackups,
  restores,
  type RawContext,
  type RawPipeline,
} from './raw-pipelines.js';

const args = process.argv.slice(2);
const flags = new Set(args.filter((a) => a.startsWith('--')));
const [kind = 'mariadb', runs = '3'] = args.filter((a) => !a.startsWith('--'));
if (kind !== 'mariadb' && kind !== 'postgresql' && kind !== 'redis')
  throw new Error(`unknown case "${kind}": use mariadb, postgresql or redis`);
const sizes = {
  ...(flags.has('--full') ? FULL_SIZES : QUICK_SIZES),
  ...(process.env.ENVSNAP_TIMELINE_TABLES
    ? { mariadbTables: Number(process.env.ENVSNAP_TIMELINE_TABLES) }
    : {}),
  ...(process.env.ENVSNAP_TIMELINE_ROWS ? { mariadbRows: Number(process.env.ENVSNAP_TIMELINE_ROWS) } : {}),
};

interface LogLine {
  t: number;
  who: string;
  msg: string;
}

/** The JSON lines (pino's, or any with `time` and `msg`) of `text` from `from` (ms) on. */
function logLines(text: string, who: string, from: number): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line) as { time?: string; msg?: string };
      const t = Date.parse(j.time ?? '');
      if (t >= from) out.push({ t, who, msg: j.msg ?? line.slice(0, 200) });
    } catch {
      // not a log line
    }
  }
  return out;
}

/**
 * The lines of a redis-server log (`pid:role 02 Dec 2026 00:53:01.123 * text`, local time) from
 * `from` (ms) on: the server prints when a replica asks for a sync, when the transfer ends and how
 * long its load took.
 */
function redisLogLines(text: string, who: string, from: number): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    const m = /^\d+:[A-Z] (\d+ \w+ \d+ [\d:.]+) [#*.-] (.*)$/.exec(line);
    const t = m ? Date.parse(m[1]!) : NaN;
    if (m && t >= from) out.push({ t, who, msg: m[2]! });
  }
  return out;
}

/** CPU seconds of a process itself (utime + stime, without its reaped children). */
async function selfCpu(pid: number): Promise<number> {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

const targets: BenchTargets = {};
let server: { pid: number; stop(): Promise<void> };
if (kind === 'mariadb') {
  const maria = await startMariadb({ name: 'timeline' });
  await fillMariadb(maria, sizes);
  targets.maria = maria;
  server = maria;
} else if (kind === 'postgresql') {
  const pg = await startPostgres({ name: 'timeline' });
  await fillPostgres(pg, sizes);
  targets.pg = pg;
  server = pg;
} else {
  const redis = await startRedis({ name: 'timeline' });
  await fillRedis(redis, sizes);
  targets.redis = redis;
  server = redis;
}
const bench = await EnvsnapBench.start(targets);
const raw: RawContext = { out: bench.cluster.dir, ...targets };
const backups = { mariadb: mariadbBackups, postgresql: postgresBackups, redis: redisBackups }[kind](raw);
// The `| zstd` pipeline envsnap's zstd backup is compared with, and the restore's (which reads
// what the first, unpaired pipeline kept).
const rawBackup = backups.find((p) => p.paired && p.compare === 'envsnap-zstd')!;
const rawRestore = restores(raw, kind).find((p) => p.paired)!;

/** One envsnap CLI command, measured and with its log lines. */
async function envsnap(label: string, cliArgs: string[]): Promise<string> {
  const { agent, controller } = bench.pids;
  const self0 = await selfCpu(agent);
  const before = await Promise.all([agent, controller, server.pid].map(processCpuSeconds));
  const t0 = Date.now();
  const cli = await timed([
    process.execPath,
    path.join(repoRoot(), 'bin', 'envsnap.js'),
    '--controller',
    bench.cluster.address,
    ...cliArgs,
  ]);
  const t1 = Date.now();
  const after = await Promise.all([agent, controller, server.pid].map(processCpuSeconds));
  const [a, c, s] = after.map((v, k) => v - before[k]!);
  const self = (await selfCpu(agent)) - self0;
  console.log(
    `${label} envsnap: wall ${cli.wallSeconds.toFixed(2)} s, CPU ${(cli.cpuSeconds + a! + c!).toFixed(2)} s ` +
      `(CLI ${cli.cpuSeconds.toFixed(2)}, controller ${c!.toFixed(2)}, agent ${self.toFixed(2)}, ` +
      `agent's tools ${(a! - self).toFixed(2)}), server ${s!.toFixed(2)} s`,
  );
  const lines = [
    ...logLines(cli.stderr, 'cli', t0),
    ...logLines(await readFile(path.join(bench.cluster.dir, 'controller.log'), 'utf8'), 'controller', t0),
    ...logLines(await readFile(path.join(bench.cluster.dir, `agent-${BENCH_NODE}.log`), 'utf8'), 'agent', t0),
    ...(targets.redis
      ? redisLogLines(await readFile(path.join(targets.redis.dir, 'redis.log'), 'utf8'), 'redis', t0)
      : []),
  ].sort((x, y) => x.t - y.t);
  for (const l of lines) console.log(`  +${((l.t - t0) / 1000).toFixed(3)} ${l.who}: ${l.msg.slice(0, 160)}`);
  console.log(`  +${((t1 - t0) / 1000).toFixed(3)} CLI exited`);
  return cli.stdout;
}

async function rawRun(label: string, p: RawPipeline): Promise<void> {
  if (p.setup) await timeShell(p.setup);
  const m0 = await processCpuSeconds(server.pid);
  const r = await timeShell(p.script);
  const m1 = await processCpuSeconds(server.pid);
  console.log(
    `${label} raw (${p.label}): wall ${r.wallSeconds.toFixed(2)} s, CPU ${r.cpuSeconds.toFixed(2)} s, server ${(m1 - m0).toFixed(2)} s`,
  );
}

try {
  // Warm-up (buffer pool, page cache) of both sides, unmeasured; the first pipeline also keeps
  // the file the raw restore reads.
  for (const p of backups.filter((x) => x.keep || x === rawBackup)) await timeShell(p.script);
  let keep: string | undefined;
  for (let i = 0; i < Number(runs); i++) {
    await rawRun(`run ${i + 1} backup`, rawBackup);
    const out = await envsnap(`run ${i + 1} backup`, [
      'backup:create',
      '-e',
      `bench-${kind}`,
      '--yes',
      '--compression',
      'zstd',
    ]);
    const id = /Backup ID: (\S+)/.exec(out)?.[1];
    if (keep && id) await bench.delete(keep);
    keep = id;
  }
  if (flags.has('--restore') && keep) {
    for (let i = 0; i < Number(runs); i++) {
      await rawRun(`run ${i + 1} restore`, rawRestore);
      if (targets.redis) await changeRedis(targets.redis);
      await envsnap(`run ${i + 1} restore`, ['backup:restore', keep, '--yes']);
    }
  }
} finally {
  await bench.stop();
  await server.stop();
}
