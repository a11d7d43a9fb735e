/**
 * The timeline of envsnap backups (and, with `--restore`, restores) of one case against its raw
 * pipeline, on the same data, back to back:
 *
 *     node dist/test/bench/timeline.js <mariadb|postgresql|redis|mount> [runs] [--full] [--restore] [--profile] [--server-log]
 *
 * Data at `npm run bench -- --quick` size (`--full`: the full size; a mount is the bench's copied
 * tree, or the directory `ENVSNAP_TIMELINE_TREE` names, used as it is; MariaDB honours
 * `ENVSNAP_TIMELINE_TABLES` and `ENVSNAP_TIMELINE_ROWS`, e.g. 4 and 400000 for the earlier MariaDB
 * timeline), 3 runs by default. Prints, per run, the wall and CPU seconds of the raw pipeline and of
 * envsnap split by process (CLI, controller, agent with its reaped tools, the database server), and
 * every controller and agent log line of the envsnap run with its time from the CLI's start, and the
 * CLI's exit. JSON lines with a `time` and `msg` that a process writes to stdout or stderr (the
 * CLI's included) show as well: add such lines by hand to time phases the logs do not name, e.g.
 * the final fsync or the dump tool's exit. `--profile` runs the agent and the controller under V8's
 * CPU profiler (cpu-profile-preload.ts) and prints, after each envsnap command, where the agent's
 * main thread spent its CPU during that command alone. `--server-log` (PostgreSQL) turns on the
 * server's log of connections, disconnections, checkpoints and statements over 100 ms, and prints
 * its lines with the other ones (raw pipelines included), so that both sides' server work shows.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/datasets.js';
import { startMariadb, startPostgres, startRedis } from '../helpers/servers.js';
import {
  FULL_SIZES,
  QUICK_SIZES,
  changeRedis,
  fillMariadb,
  fillPostgres,
  fillRedis,
  makeBenchTree,
} from './bench-data.js';
import { BENCH_NODE, EnvsnapBench, type BenchTargets } from './envsnap-runner.js';
import { processCpuSeconds, timed, timeShell } from './measure.js';
import { profileMarkdown, profilesOf, summarizeProfile } from './profile-summary.js';
import {
  mariadbBackups,
  mountBackups,
  postgresBackups,
  redisBackups,
  restores,
  type RawContext,
  type RawPipeline,
} from './raw-pipelines.js';

const args = process.argv.slice(2);
const flags = new Set(args.filter((a) => a.startsWith('--')));
const [kind = 'mariadb', runs = '3'] = args.filter((a) => !a.startsWith('--'));
if (kind !== 'mariadb' && kind !== 'postgresql' && kind !== 'redis' && kind !== 'mount')
  throw new Error(`unknown case "${kind}": use mariadb, postgresql, redis or mount`);
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
/** The PostgreSQL server's log, read with `--server-log`. */
let pgLog: string | undefined;

/** The server log's lines (`%m` prefix: `2026-12-02 01:02:03.456 UTC`) from `from` (ms) on. */
async function serverLines(from: number): Promise<LogLine[]> {
  if (!pgLog) return [];
  const out: LogLine[] = [];
  for (const line of (await readFile(pgLog, 'utf8')).split('\n')) {
    const m = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC (.*)$/.exec(line);
    const t = m ? Date.parse(`${m[1]!.replace(' ', 'T')}Z`) : NaN;
    if (t >= from) out.push({ t, who: 'server', msg: m![2]! });
  }
  return out;
}
/** The process whose CPU the raw and envsnap runs share (a database server); none for a mount. */
let server: { pid?: number; stop(): Promise<void> };
if (kind === 'mount') {
  const given = process.env.ENVSNAP_TIMELINE_TREE;
  const dir = given ?? (await mkdtemp(path.join(tmpdir(), 'envsnap-timeline-mount-')));
  if (!given) await makeBenchTree(dir, sizes.mountBytes);
  targets.mount = dir;
  server = { stop: () => (given ? Promise.resolve() : rm(dir, { recursive: true, force: true })) };
} else if (kind === 'mariadb') {
  const maria = await startMariadb({ name: 'timeline' });
  await fillMariadb(maria, sizes);
  targets.maria = maria;
  server = maria;
} else if (kind === 'postgresql') {
  const pg = await startPostgres({ name: 'timeline' });
  await fillPostgres(pg, sizes);
  if (flags.has('--server-log')) {
    pgLog = path.join(pg.dir, 'postgres.log');
    await pg.psql(
      [
        'log_connections = on',
        'log_disconnections = on',
        'log_checkpoints = on',
        'log_min_duration_statement = 100',
        `log_line_prefix = '%m [%p] %d %a: '`,
      ]
        .map((setting) => `ALTER SYSTEM SET ${setting};\n`)
        .join('') + 'SELECT pg_reload_conf();\n',
    );
  }
  targets.pg = pg;
  server = pg;
} else {
  const redis = await startRedis({ name: 'timeline' });
  await fillRedis(redis, sizes);
  targets.redis = redis;
  server = redis;
}
const profileDir = flags.has('--profile')
  ? await mkdtemp(path.join(tmpdir(), 'envsnap-timeline-profiles-'))
  : undefined;
if (profileDir) console.log(`CPU profiles in ${profileDir}`);
const bench = await EnvsnapBench.start(targets, profileDir);

/**
 * Cuts the agent's and controller's CPU profiles (SIGUSR2, see cpu-profile-preload.ts) and
 * resolves with the agent's newest one once it is written.
 */
async function cutProfiles(): Promise<string | undefined> {
  if (!profileDir) return undefined;
  const { agent, controller } = bench.pids;
  const before = new Set(await readdir(profileDir));
  process.kill(agent, 'SIGUSR2');
  process.kill(controller, 'SIGUSR2');
  for (let i = 0; i < 100; i++) {
    const fresh = (await profilesOf(profileDir, agent)).filter((f) => !before.has(path.basename(f)));
    if (fresh.length > 0) return fresh[0];
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return undefined;
}
const raw: RawContext = { out: bench.cluster.dir, ...targets };
const backups = {
  mariadb: mariadbBackups,
  postgresql: postgresBackups,
  redis: redisBackups,
  mount: mountBackups,
}[kind](raw);
// The `| zstd` pipeline envsnap's zstd backup is compared with, and the restore's (which reads
// what the first, unpaired pipeline kept).
const rawBackup = backups.find((p) => p.paired && p.compare === 'envsnap-zstd')!;
const rawRestore = restores(raw, kind).find((p) => p.paired)!;

/** CPU seconds of the shared server, 0 when there is none. */
const serverCpu = (): Promise<number> =>
  server.pid === undefined ? Promise.resolve(0) : processCpuSeconds(server.pid);

/** One envsnap CLI command, measured and with its log lines. */
async function envsnap(label: string, cliArgs: string[]): Promise<string> {
  const { agent, controller } = bench.pids;
  await cutProfiles();
  const self0 = await selfCpu(agent);
  const before = await Promise.all([processCpuSeconds(agent), processCpuSeconds(controller), serverCpu()]);
  const t0 = Date.now();
  const cli = await timed([
    process.execPath,
    path.join(repoRoot(), 'bin', 'envsnap.js'),
    '--controller',
    bench.cluster.address,
    ...cliArgs,
  ]);
  const t1 = Date.now();
  const after = await Promise.all([processCpuSeconds(agent), processCpuSeconds(controller), serverCpu()]);
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
    ...(await serverLines(t0)),
    ...(targets.redis
      ? redisLogLines(await readFile(path.join(targets.redis.dir, 'redis.log'), 'utf8'), 'redis', t0)
      : []),
  ].sort((x, y) => x.t - y.t);
  for (const l of lines) console.log(`  +${((l.t - t0) / 1000).toFixed(3)} ${l.who}: ${l.msg.slice(0, 160)}`);
  console.log(`  +${((t1 - t0) / 1000).toFixed(3)} CLI exited`);
  const profile = await cutProfiles();
  if (profile)
    console.log(
      profileMarkdown(`${label} agent (V8 CPU profile of this command)`, await summarizeProfile(profile)),
    );
  return cli.stdout;
}

async function rawRun(label: string, p: RawPipeline): Promise<void> {
  if (p.setup) await timeShell(p.setup);
  const m0 = await serverCpu();
  const t0 = Date.now();
  const r = await timeShell(p.script);
  const m1 = await serverCpu();
  console.log(
    `${label} raw (${p.label}): wall ${r.wallSeconds.toFixed(2)} s, CPU ${r.cpuSeconds.toFixed(2)} s, server ${(m1 - m0).toFixed(2)} s`,
  );
  for (const l of await serverLines(t0))
    console.log(`  +${((l.t - t0) / 1000).toFixed(3)} ${l.who}: ${l.msg.slice(0, 160)}`);
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
