/**
 * `npm run bench [-- --quick] [-- --json] [-- --controller]`: envsnap against the raw pipelines a
 * sysadmin scripts by hand, on the same data, in the same run (issue 6 §1-2).
 *
 * Starts throwaway MariaDB, PostgreSQL and Redis servers (temp dirs, free loopback ports; nothing
 * already running is touched), fills them with `sysbench`, `pgbench` and `redis-cli --pipe`, copies
 * a real file tree for a mount, then runs a controller and an agent as real processes with one
 * environment per case (and `bench-all` with everything on one node). Each case times envsnap's
 * CLI (`backup:create`, `backup:restore`) together with the controller and agent processes, and
 * each raw pipeline under GNU time; the table shows wall time, CPU time and peak RSS of both, and
 * envsnap ÷ raw. Pairs that a target of issue 6 rests on run `--repeat` times, alternating, and
 * the median run is reported.
 *
 * Options:
 *   --quick          small data (the whole run takes under two minutes on two cores)
 *   --json           machine-readable results on stdout (progress stays on stderr)
 *   --controller     only the controller load test (1,000 simulated agents, 10,000 backups)
 *   --repeat N       repetitions of the paired runs (default 3, 1 with --quick)
 *   --scale F        multiply the data sizes by F (e.g. 4 for the memory target at 4x)
 *   --only a,b       only these cases: mariadb, postgresql, redis, mount
 *   --backups-only   skip the restore cases (the backup targets alone; with all four cases, the
 *                    whole-environment case still runs)
 *   --profile        run the controller and agent under V8's CPU profiler (as `node --cpu-prof`)
 *                    and print where their CPU time went (slows them down: not for the table)
 *   --keep           keep the temporary directories (servers, outputs, envsnap's logs)
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  startMariadb,
  startPostgres,
  startRedis,
  runCommand,
  type MariadbServer,
  type PostgresServer,
  type RedisServer,
} from '../helpers/servers.js';
import {
  FULL_SIZES,
  MARIADB_DATABASE,
  PG_DATABASE,
  QUICK_SIZES,
  fillMariadb,
  fillPostgres,
  fillRedis,
  changeRedis,
  makeBenchTree,
  scaleSizes,
  type BenchSizes,
} from './bench-data.js';
import { runControllerLoad } from './controller-load.js';
import { EnvsnapBench, type EnvsnapRun } from './envsnap-runner.js';
import { machineInfo } from './machine.js';
import { medianRun, timeShell, type Usage } from './measure.js';
import {
  concurrentBackups,
  mariadbBackups,
  mountBackups,
  postgresBackups,
  redisBackups,
  restores,
  sh,
  type RawContext,
  type RawPipeline,
} from './raw-pipelines.js';
import { profileMarkdown, profilesOf, summarizeProfile, type ProfileSummary } from './profile-summary.js';
import { checkTargets, markdown, type CaseResult, type MeasuredRun } from './report.js';

type Kind = 'mariadb' | 'postgresql' | 'redis' | 'mount';
const KINDS: readonly Kind[] = ['mariadb', 'postgresql', 'redis', 'mount'];

const TITLES: Record<Kind, string> = {
  mariadb: 'MariaDB',
  postgresql: 'PostgreSQL',
  redis: 'Redis',
  mount: 'mount',
};

interface Options {
  quick: boolean;
  json: boolean;
  controller: boolean;
  repeat: number;
  scale: number;
  only: Kind[];
  keep: boolean;
  profile: boolean;
  backupsOnly: boolean;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      controller: { type: 'boolean', default: false },
      repeat: { type: 'string' },
      scale: { type: 'string', default: '1' },
      only: { type: 'string' },
      keep: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'backups-only': { type: 'boolean', default: false },
    },
  });
  const only = (values.only?.split(',') ?? [...KINDS]).map((k) => k.trim());
  for (const k of only)
    if (!KINDS.includes(k as Kind)) throw new Error(`--only: unknown case "${k}"; use ${KINDS.join(', ')}`);
  const repeat = Number(values.repeat ?? (values.quick ? 1 : 3));
  const scale = Number(values.scale);
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error('--repeat must be a positive integer');
  if (!(scale > 0)) throw new Error('--scale must be a positive number');
  return {
    quick: values.quick,
    json: values.json,
    controller: values.controller,
    repeat,
    scale,
    only: only as Kind[],
    keep: values.keep,
    profile: values.profile,
    backupsOnly: values['backups-only'],
  };
}

const started = Date.now();
function log(message: string): void {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${message}\n`);
}

/** Size in bytes of a file or directory tree (`du -sb`), or undefined if it does not exist. */
async function sizeOf(p: string): Promise<number | undefined> {
  try {
    return Number((await runCommand('du', ['-sb', p])).stdout.split('\t')[0]);
  } catch {
    return undefined;
  }
}

/** Measures one raw pipeline: its setup untimed, the script timed, the output's size, then cleanup. */
async function runRaw(p: RawPipeline): Promise<Usage & { outputBytes?: number }> {
  if (p.setup) await timeShell(p.setup);
  const usage = await timeShell(p.script);
  const outputBytes = p.output ? await sizeOf(p.output) : undefined;
  if (p.output && !p.keep) await rm(p.output, { recursive: true, force: true });
  for (const f of p.cleanup ?? []) await rm(f, { recursive: true, force: true });
  log(`  ${p.label}: ${usage.wallSeconds.toFixed(2)} s wall, ${usage.cpuSeconds.toFixed(2)} s CPU`);
  return {
    wallSeconds: usage.wallSeconds,
    cpuSeconds: usage.cpuSeconds,
    peakRssMb: usage.peakRssMb,
    outputBytes,
  };
}

function logEnvsnap(label: string, r: EnvsnapRun): void {
  log(
    `  ${label}: ${r.wallSeconds.toFixed(2)} s wall, ${r.cpuSeconds.toFixed(2)} s CPU, ` +
      `agent ${r.agentRssMb?.toFixed(0)} MB, controller ${r.controllerRssMb?.toFixed(0)} MB`,
  );
}

/** Builds a case's line from repeated runs: the median run, with every wall time. */
function line<T extends Usage>(runs: T[], base: Omit<MeasuredRun, keyof Usage | 'walls'>): MeasuredRun {
  const m = medianRun(runs);
  return { ...base, ...m, walls: runs.map((r) => r.wallSeconds) };
}

/** The state shared by the cases. */
interface Bench {
  opts: Options;
  envsnap: EnvsnapBench;
  raw: RawContext;
  /** The envsnap zstd backup of each case, kept for its restore. */
  backups: Map<Kind, string>;
}

const BACKUPS: Record<Kind, (ctx: RawContext) => RawPipeline[]> = {
  mariadb: mariadbBackups,
  postgresql: postgresBackups,
  redis: redisBackups,
  mount: mountBackups,
};

/**
 * A backup case: per repetition, each paired raw pipeline then envsnap with the matching
 * compression (alternating, so that both see the same cache and machine load); then the other raw
 * pipelines once. Only the last envsnap zstd backup is kept (for the restore case).
 */
async function backupCase(b: Bench, kind: Kind): Promise<CaseResult> {
  log(`${TITLES[kind]} backup`);
  const pipes = BACKUPS[kind](b.raw);
  const env = `bench-${kind}`;
  const rawRuns = new Map<string, Array<Usage & { outputBytes?: number }>>();
  const envsnapRuns = new Map<string, EnvsnapRun[]>();
  const push = <T>(m: Map<string, T[]>, id: string, v: T) => m.set(id, [...(m.get(id) ?? []), v]);
  let keep: string | undefined;
  // The first unpaired pipeline (the uncompressed one) warms the caches for everything after it.
  const [first, ...rest] = pipes.filter((p) => !p.paired);
  if (first) push(rawRuns, first.id, await runRaw(first));
  for (let i = 0; i < b.opts.repeat; i++) {
    for (const p of pipes.filter((x) => x.paired)) {
      push(rawRuns, p.id, await runRaw(p));
      const compression = p.compare === 'envsnap-gzip' ? 'gzip' : 'zstd';
      const r = await b.envsnap.backup(env, compression);
      logEnvsnap(`envsnap ${compression}`, r);
      push(envsnapRuns, p.compare, r);
      if (compression === 'zstd') {
        if (keep) await b.envsnap.delete(keep);
        keep = r.backupId;
      } else await b.envsnap.delete(r.backupId!);
    }
  }
  for (const p of rest) push(rawRuns, p.id, await runRaw(p));
  if (keep) b.backups.set(kind, keep);
  const runs: MeasuredRun[] = [];
  for (const [id, rs] of envsnapRuns)
    runs.push(line(rs, { id, label: `envsnap backup:create --compression ${id.slice(8)}`, tool: 'envsnap' }));
  for (const p of pipes) {
    const rs = rawRuns.get(p.id);
    if (rs) runs.push(line(rs, { id: p.id, label: p.label, tool: 'raw', compare: p.compare }));
  }
  return { id: `${kind}-backup`, title: `${TITLES[kind]} backup`, runs };
}

/**
 * The whole environment (every service and the mount on one node) against its slowest single raw
 * pipeline, taken from the cases above (the `| zstd` form of each), and against the four
 * pipelines run concurrently.
 */
async function environmentCase(b: Bench, singles: CaseResult[]): Promise<CaseResult> {
  log('whole environment backup');
  const concurrent = concurrentBackups(b.raw);
  const raws: Usage[] = [];
  const envs: EnvsnapRun[] = [];
  for (let i = 0; i < b.opts.repeat; i++) {
    raws.push(await runRaw(concurrent));
    const r = await b.envsnap.backup('bench-all', 'zstd');
    logEnvsnap('envsnap zstd', r);
    envs.push(r);
    await b.envsnap.delete(r.backupId!);
  }
  const matching = singles
    .map((c) => c.runs.find((r) => r.tool === 'raw' && r.id.endsWith('zstd') && r.compare === 'envsnap-zstd'))
    .filter((r): r is MeasuredRun => r !== undefined);
  const slowest = matching.reduce((a, x) => (x.wallSeconds > a.wallSeconds ? x : a));
  return {
    id: 'environment-backup',
    title: 'whole environment backup',
    runs: [
      line(envs, { id: 'envsnap-zstd', label: 'envsnap backup:create (all four)', tool: 'envsnap' }),
      {
        ...slowest,
        id: 'slowest-single',
        label: `slowest single: ${slowest.label}`,
        compare: 'envsnap-zstd',
        derivedFrom: slowest.id,
      },
      line(raws, { id: concurrent.id, label: concurrent.label, tool: 'raw', compare: 'envsnap-zstd' }),
    ],
  };
}

/** Checks that a restore brought the data back (row, key and file counts), so that no number comes from a no-op. */
async function verify(b: Bench, kind: Kind, s: BenchSizes, files: number): Promise<void> {
  const fail = (what: string, got: unknown, want: unknown) => {
    throw new Error(`after the ${kind} restore: ${what} is ${String(got)}, expected ${String(want)}`);
  };
  if (kind === 'mariadb') {
    const n = Number(await b.raw.maria!.query(`SELECT COUNT(*) FROM ${MARIADB_DATABASE}.sbtest1`));
    if (n !== s.mariadbRows) fail('sbtest1 row count', n, s.mariadbRows);
  } else if (kind === 'postgresql') {
    const n = Number(await b.raw.pg!.psql('SELECT COUNT(*) FROM pgbench_accounts', PG_DATABASE));
    if (n !== s.pgbenchScale * 100_000) fail('pgbench_accounts row count', n, s.pgbenchScale * 100_000);
  } else if (kind === 'redis') {
    const c = b.raw.redis!.client();
    try {
      const n = await c.dbsize();
      if (n !== s.redisKeys) fail('the key count', n, s.redisKeys);
    } finally {
      c.disconnect();
    }
  } else {
    const n = Number((await runCommand('bash', ['-c', `find ${sh(b.raw.mount!)} -type f | wc -l`])).stdout);
    if (n !== files) fail('the file count', n, files);
  }
}

/** A restore case: per repetition, the raw restore then envsnap's restore of its zstd backup. */
async function restoreCase(b: Bench, kind: Kind, s: BenchSizes, files: number): Promise<CaseResult> {
  log(`${TITLES[kind]} restore`);
  const backupId = b.backups.get(kind);
  if (!backupId) throw new Error(`no envsnap backup of ${kind} to restore`);
  const pipes = restores(b.raw, kind);
  const rawRuns = new Map<string, Usage[]>();
  const envs: EnvsnapRun[] = [];
  // PostgreSQL: both sides start from the same state, untimed: a CHECKPOINT (DROP DATABASE, which
  // both sides run, waits for one), then `sync`. The throwaway server runs with fsync=off, so a
  // restore's load (about 1.1-1.3 GB of table, index and WAL) stays in the page cache as dirty pages
  // for up to 30 s (vm.dirty_expire_centisecs), and the checkpoint writes none of them out (it
  // wrote at most 7.5 MB, in 0.02-0.06 s). Without the sync the second restore of a pair started
  // with the first's 1.1 GB still dirty and the first with none, and with one more load on top the
  // kernel's background writeback (vm.dirty_background_ratio, 10 % of available memory) could start
  // during the second only: once 1.35 GB were written during envsnap's restore (14.1 s against the
  // raw's 9.8 s). The sync takes 1-2 s.
  // The other restores write their data through the page cache too (tar's 800 MB tree, the RDB,
  // InnoDB's files): the same `sync` before each of them, so that neither side of a pair starts
  // with the other's writes still dirty.
  const settle = async (): Promise<void> => {
    if (kind === 'postgresql') await b.raw.pg!.psql('CHECKPOINT');
    await runCommand('sync', []);
  };
  for (let i = 0; i < b.opts.repeat; i++) {
    for (const p of pipes.filter((x) => x.paired)) {
      await settle();
      rawRuns.set(p.id, [...(rawRuns.get(p.id) ?? []), await runRaw(p)]);
      if (kind === 'redis') await changeRedis(b.raw.redis!);
      await settle();
      const r = await b.envsnap.restore(backupId);
      logEnvsnap('envsnap restore', r);
      await verify(b, kind, s, files);
      envs.push(r);
    }
  }
  for (const p of pipes.filter((x) => !x.paired)) rawRuns.set(p.id, [await runRaw(p)]);
  return {
    id: `${kind}-restore`,
    title: `${TITLES[kind]} restore`,
    runs: [
      line(envs, { id: 'envsnap-restore', label: 'envsnap backup:restore', tool: 'envsnap' }),
      ...pipes.map((p) =>
        line(rawRuns.get(p.id)!, { id: p.id, label: p.label, tool: 'raw', compare: p.compare }),
      ),
    ],
  };
}

/** What the data amounts to, as the servers and the file system count it. */
async function dataSizes(raw: RawContext, files: number): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  if (raw.maria) {
    const bytes = Number(
      await raw.maria.query(
        `SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = '${MARIADB_DATABASE}'`,
      ),
    );
    out.mariadb = `${(bytes / 1024 / 1024).toFixed(0)} MB (InnoDB data + indexes)`;
  }
  if (raw.pg) {
    const bytes = Number(await raw.pg.psql(`SELECT pg_database_size('${PG_DATABASE}')`));
    out.postgresql = `${(bytes / 1024 / 1024).toFixed(0)} MB (pg_database_size)`;
  }
  if (raw.redis) {
    const c = raw.redis.client();
    try {
      const used = /used_memory:(\d+)/.exec(await c.info('memory'))?.[1];
      out.redis = `${await c.dbsize()} keys, ${(Number(used) / 1024 / 1024).toFixed(0)} MB used_memory`;
    } finally {
      c.disconnect();
    }
  }
  if (raw.mount)
    out.mount = `${files} files, ${((await sizeOf(raw.mount))! / 1024 / 1024).toFixed(0)} MB (du -sb)`;
  return out;
}

async function main(): Promise<void> {
  const opts = parseOptions();
  const machine = machineInfo();
  log(
    `envsnap benchmark, ${opts.controller ? 'controller load test' : opts.quick ? 'quick' : 'full size'}; ` +
      `${machine.nproc} CPUs (${machine.cpuModel}), ${machine.memoryGb} GB, load ${machine.loadAverage.toFixed(2)}`,
  );
  if (opts.controller) {
    const result = await runControllerLoad({ quick: opts.quick, log, keep: opts.keep });
    process.stdout.write(
      opts.json ? `${JSON.stringify({ machine, controller: result }, null, 2)}\n` : result.markdown,
    );
    return;
  }
  const sizes = scaleSizes(opts.quick ? QUICK_SIZES : FULL_SIZES, opts.scale);
  const want = (k: Kind) => opts.only.includes(k);
  const work = await mkdtemp(path.join(tmpdir(), 'envsnap-bench-'));
  const raw: RawContext = { out: path.join(work, 'out') };
  await mkdir(raw.out);
  let envsnap: EnvsnapBench | undefined;
  const servers: Array<MariadbServer | PostgresServer | RedisServer> = [];
  try {
    log('starting throwaway servers');
    [raw.maria, raw.pg, raw.redis] = await Promise.all([
      want('mariadb') ? startMariadb({ name: 'bench' }) : undefined,
      want('postgresql') ? startPostgres({ name: 'bench' }) : undefined,
      want('redis') ? startRedis({ name: 'bench' }) : undefined,
    ]);
    for (const s of [raw.maria, raw.pg, raw.redis]) if (s) servers.push(s);
    log(`generating data: ${JSON.stringify(sizes)}`);
    const timing = async (what: string, p: Promise<unknown>) => {
      const t = Date.now();
      await p;
      log(`  ${what} ready in ${((Date.now() - t) / 1000).toFixed(0)} s`);
    };
    let files = 0;
    if (want('mount')) raw.mount = path.join(work, 'mount');
    await Promise.all([
      raw.maria && timing('sysbench prepare', fillMariadb(raw.maria, sizes)),
      raw.pg && timing('pgbench -i', fillPostgres(raw.pg, sizes)),
      raw.redis && timing('redis-cli --pipe', fillRedis(raw.redis, sizes)),
      raw.mount &&
        timing(
          'file tree',
          makeBenchTree(raw.mount, sizes.mountBytes).then((t) => {
            files = t.files;
          }),
        ),
    ]);
    const data = await dataSizes(raw, files);
    for (const [k, v] of Object.entries(data)) log(`  ${k}: ${v}`);

    log('starting envsnap-controller and envsnap-agent');
    const profileDir = opts.profile ? path.join(work, 'profiles') : undefined;
    if (profileDir) await mkdir(profileDir);
    envsnap = await EnvsnapBench.start(
      { maria: raw.maria, pg: raw.pg, redis: raw.redis, mount: raw.mount },
      profileDir,
    );
    const b: Bench = { opts, envsnap, raw, backups: new Map() };
    const cases: CaseResult[] = [];
    const kinds = KINDS.filter(want);
    for (const k of kinds) cases.push(await backupCase(b, k));
    if (kinds.length === KINDS.length) cases.push(await environmentCase(b, cases));
    if (!opts.backupsOnly) for (const k of kinds) cases.push(await restoreCase(b, k, sizes, files));

    const profiles: Array<{ process: string } & ProfileSummary> = [];
    if (profileDir) {
      const pids = envsnap.pids;
      await envsnap.stop(opts.keep);
      envsnap = undefined;
      for (const [name, pid] of Object.entries(pids)) {
        for (const f of await profilesOf(profileDir, pid))
          profiles.push({ process: name, ...(await summarizeProfile(f)) });
      }
      if (profiles.length === 0) log(`no CPU profiles of the agent or controller in ${profileDir}`);
    }
    const targets = checkTargets(cases);
    const result = {
      mode: opts.quick ? 'quick' : 'full',
      repeat: opts.repeat,
      scale: opts.scale,
      date: new Date().toISOString(),
      totalSeconds: Math.round((Date.now() - started) / 1000),
      machine,
      sizes,
      data,
      cases,
      targets,
      ...(profileDir ? { profiles } : {}),
    };
    log(`done in ${result.totalSeconds} s`);
    if (opts.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    else {
      const header = [
        `envsnap ${machine.commit}, ${result.date}, ${result.mode} size` +
          `${opts.scale !== 1 ? ` x${opts.scale}` : ''}, median of ${opts.repeat} for paired runs`,
        `machine: ${machine.nproc} CPUs (${machine.cpuModel}), ${machine.memoryGb} GB RAM, load ${machine.loadAverage.toFixed(2)} at start`,
        `data: ${Object.entries(data)
          .map(([k, v]) => `${k} ${v}`)
          .join('; ')}`,
        '',
      ].join('\n');
      process.stdout.write(`${header}\n${markdown(cases, targets)}`);
      for (const p of profiles)
        process.stdout.write(`\n${profileMarkdown(`envsnap ${p.process} (V8 CPU profile)`, p)}`);
    }
  } finally {
    await envsnap?.stop(opts.keep);
    if (!opts.keep) {
      await Promise.all(servers.map((s) => s.stop()));
      await rm(work, { recursive: true, force: true });
    } else log(`kept ${work} and envsnap's directory ${envsnap?.cluster.dir ?? ''}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(
      `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
