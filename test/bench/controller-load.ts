/**
 * `npm run bench -- --controller`: the controller under load (issue 6 §2, "Controller scale").
 *
 * - 10,000 backups in the catalog, written with the controller's own Catalog class into its state
 *   directory before it starts (making them through real backups would take hours): ten
 *   environments of 1,000 complete backups, four artifacts each, one every hour back in time.
 * - 1,000 simulated agents, each its own gRPC connection (a local subchannel pool, so that grpc-js
 *   does not share one HTTP/2 connection between them) with a `Connect` stream that says `hello`
 *   and then sends a heartbeat every interval the controller's `welcome` asks for, as the real
 *   agent does. They run in this process, not in the controller's.
 * - Measured: the controller's CPU over a steady window of heartbeats (share of one core, from
 *   /proc/<pid>/stat), its peak RSS, and the latency of `ListBackups` (the RPC behind
 *   `backup:list`) from a gRPC client: one environment's default page (the 50 newest of its
 *   1,000, what `backup:list -e ENV` asks for), the same environment with `all` (1,000), and every
 *   environment with `all` (10,000), plus a few whole `envsnap backup:list` CLI runs (Node start-up
 *   included).
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { Catalog, type BackupRecord } from '../../controller/catalog.js';
import { newId } from '../../shared/ids.js';
import { CHANNEL_OPTIONS, VERSION, controllerService } from '../../shared/proto.js';
import { EnvsnapCluster, runBin } from '../helpers/envsnap.js';
import { processCpuSeconds, processPeakRssMb, resetPeakRss } from './measure.js';

/** The load test's result. */
export interface ControllerLoadResult {
  agents: number;
  connectedAgents: number;
  backups: number;
  heartbeatIntervalSeconds: number;
  /** Controller CPU while only heartbeats arrive, in % of one core. */
  heartbeatCpuPercentOfOneCore: number;
  /** Peak RSS while the agents connected, during the heartbeat window, and after the listings. */
  controllerRssMb: { connecting: number; heartbeats: number; listings: number };
  /** Milliseconds of `Catalog.listBackups(<one environment>)` in this process (sorted). */
  catalogScanMs: number[];
  /** The default page of one environment (what `backup:list -e ENV` shows). */
  listOneEnvironment: LatencySummary;
  /** Every backup of one environment (`backup:list -e ENV --all`). */
  listOneEnvironmentAll: LatencySummary;
  /** Every backup of every environment (`backup:list --all`). */
  listAll: LatencySummary;
  /** Wall seconds of whole `envsnap backup:list -e <env> --format json` runs. */
  cliListSeconds: number[];
  markdown: string;
}

export interface LatencySummary {
  calls: number;
  backupsReturned: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

const ENVIRONMENTS = 10;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
}

/** Writes `count` complete backups spread over the environments into the catalog at `stateDir`. */
async function seedCatalog(stateDir: string, count: number): Promise<void> {
  const catalog = await Catalog.open(stateDir);
  try {
    const now = Date.now();
    const writes: Array<Promise<void>> = [];
    for (let i = 0; i < count; i++) {
      const env = `load-${String(i % ENVIRONMENTS).padStart(2, '0')}`;
      const at = now - (count - i) * 3_600_000;
      const artifact = (service: string, kind: string, file: string, format: string) => ({
        name: `${service}/${file}`,
        service,
        kind,
        node: 'node-0001',
        database: kind === 'mount' || kind === 'redis' ? '' : 'app',
        format,
        compression: 'zstd',
        size_bytes: 50_000_000,
        sha256: 'ab'.repeat(32),
        raw_bytes: 200_000_000,
      });
      const record: BackupRecord = {
        id: newId(at),
        environment: env,
        created: new Date(at).toISOString(),
        finished: new Date(at + 60_000).toISOString(),
        status: 'complete',
        live: true,
        tag: i % 3 === 0 ? 'manual' : 'automated',
        consistency: 'each database is dumped from one snapshot',
        activityId: newId(at),
        storage: 'local',
        artifacts: [
          artifact('db', 'mariadb', 'app.sql.zst', 'sql'),
          artifact('pg', 'postgresql', 'app.pgdump.zst', 'pg_custom'),
          artifact('cache', 'redis', 'dump.rdb.zst', 'rdb'),
          artifact('files', 'mount', 'files.tar.zst', 'tar'),
        ],
        sizeBytes: 200_000_000,
      };
      writes.push(catalog.putBackup(record));
      if (writes.length >= 500) await Promise.all(writes.splice(0));
    }
    await Promise.all(writes);
  } finally {
    await catalog.close();
  }
}

/** Times the catalog's own listing of one environment, in this process, before the controller opens it. */
async function timeCatalogScan(stateDir: string, environment: string, runs: number): Promise<number[]> {
  const catalog = await Catalog.open(stateDir);
  try {
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = process.hrtime.bigint();
      await catalog.listBackups(environment);
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    return times.sort((a, b) => a - b);
  } finally {
    await catalog.close();
  }
}

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function newClient(address: string): Client {
  const Ctor = controllerService();
  return new Ctor(address, grpc.credentials.createInsecure(), {
    ...CHANNEL_OPTIONS,
    'grpc.use_local_subchannel_pool': 1,
  }) as unknown as Client;
}

/** One simulated agent: hello, then a heartbeat at the interval the controller's welcome names. */
class SimulatedAgent {
  private call?: grpc.ClientDuplexStream<unknown, unknown>;
  private timer?: NodeJS.Timeout;
  welcomed = false;

  constructor(
    private readonly client: Client,
    private readonly nodeId: string,
  ) {}

  connect(): void {
    const call = this.client.Connect!() as grpc.ClientDuplexStream<unknown, unknown>;
    this.call = call;
    call.on('data', (msg: { msg?: string; welcome?: { heartbeatIntervalMs: number } }) => {
      if (msg.msg === 'welcome' && msg.welcome && !this.welcomed) {
        this.welcomed = true;
        const every = msg.welcome.heartbeatIntervalMs;
        // Spread the agents over the interval, as independent machines would be.
        setTimeout(() => {
          this.timer = setInterval(
            () => call.write({ heartbeat: { runningTasks: 0, runningTaskIds: [] } }),
            every,
          );
        }, Math.random() * every);
      }
    });
    call.on('error', () => undefined);
    call.write({
      // As an agent of this release says it (else the controller warns once per connection).
      hello: {
        nodeId: this.nodeId,
        version: VERSION,
        hostname: this.nodeId,
        runningTaskIds: [],
        checksArtifactStream: true,
      },
    });
  }

  close(): void {
    clearInterval(this.timer);
    this.call?.cancel();
    this.client.close();
  }
}

/**
 * One `ListBackups` call: the default page (what `backup:list` asks for); or, with `all`, every
 * backup, following `nextBefore` through the controller's pages of 1,000 as `backup:list --all` does.
 * Resolves to the number of backups returned.
 */
async function listBackups(client: Client, environment: string, all = false): Promise<number> {
  let returned = 0;
  let before = '';
  for (;;) {
    const res = await new Promise<{ backups: unknown[]; more: number; nextBefore: string }>(
      (resolve, reject) => {
        client.ListBackups!({ environment, all, before }, (err: grpc.ServiceError | null, r?: never) =>
          err ? reject(err) : resolve(r!),
        );
      },
    );
    returned += res.backups.length;
    if (!all || !res.nextBefore) return returned;
    before = res.nextBefore;
  }
}

async function measureList(
  client: Client,
  environment: string,
  calls: number,
  all = false,
): Promise<LatencySummary> {
  const times: number[] = [];
  let returned = 0;
  for (let i = 0; i < calls; i++) {
    const t = process.hrtime.bigint();
    returned = await listBackups(client, environment, all);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  return {
    calls,
    backupsReturned: returned,
    p50Ms: percentile(times, 50),
    p99Ms: percentile(times, 99),
    maxMs: times[times.length - 1] ?? NaN,
  };
}

/**
 * Runs the load test.
 *
 * @param opts.quick 100 agents and 1,000 backups instead of 1,000 and 10,000
 */
export async function runControllerLoad(opts: {
  quick: boolean;
  log: (m: string) => void;
  keep: boolean;
}): Promise<ControllerLoadResult> {
  const agents = opts.quick ? 100 : 1_000;
  const backups = opts.quick ? 1_000 : 10_000;
  const heartbeatInterval = 5;
  const environments = Array.from({ length: ENVIRONMENTS }, (_, i) => ({
    name: `load-${String(i).padStart(2, '0')}`,
    mounts: [{ name: 'files', node: 'node-0001', path: `/srv/load-${i}` }],
  }));
  const cluster = await EnvsnapCluster.start({
    nodes: [],
    environments,
    controller: { heartbeat_interval: heartbeatInterval },
  });
  const sims: SimulatedAgent[] = [];
  try {
    opts.log(`seeding ${backups} backups into the catalog`);
    cluster.controller.child.kill('SIGTERM');
    await cluster.controller.exited;
    await seedCatalog(path.join(cluster.dir, 'state'), backups);
    const catalogScan = await timeCatalogScan(
      path.join(cluster.dir, 'state'),
      'load-00',
      opts.quick ? 10 : 20,
    );
    await cluster.startController();
    const pid = cluster.controller.child.pid!;

    opts.log(`connecting ${agents} simulated agents`);
    for (let i = 0; i < agents; i++) {
      const sim = new SimulatedAgent(newClient(cluster.address), `node-${String(i + 1).padStart(4, '0')}`);
      sims.push(sim);
      sim.connect();
      if (i % 50 === 49) await sleep(20);
    }
    const deadline = Date.now() + 120_000;
    while (sims.some((s) => !s.welcomed) && Date.now() < deadline) await sleep(200);
    // Let every agent reach its steady heartbeat before measuring.
    await sleep(heartbeatInterval * 1000 * 2);
    const cli = await runBin('envsnap', ['--controller', cluster.address, 'agent:list', '--format', 'json']);
    const connectedAgents = (JSON.parse(cli.stdout) as Array<{ connected: boolean }>).filter(
      (a) => a.connected,
    ).length;
    opts.log(`${connectedAgents} agents connected; measuring heartbeat CPU`);

    const rssConnectedMb = await processPeakRssMb(pid);
    await resetPeakRss(pid);
    const window = opts.quick ? 10 : 30;
    const cpu0 = await processCpuSeconds(pid);
    const t0 = Date.now();
    await sleep(window * 1000);
    const cpu = (await processCpuSeconds(pid)) - cpu0;
    const heartbeatCpu = (100 * cpu) / ((Date.now() - t0) / 1000);
    const rssHeartbeatsMb = await processPeakRssMb(pid);

    opts.log('measuring ListBackups latency');
    const client = newClient(cluster.address);
    let listOne: LatencySummary;
    let listOneAll: LatencySummary;
    let listAll: LatencySummary;
    try {
      await listBackups(client, 'load-00'); // warm up
      listOne = await measureList(client, 'load-00', opts.quick ? 50 : 200);
      listOneAll = await measureList(client, 'load-00', opts.quick ? 10 : 20, true);
      listAll = await measureList(client, '', opts.quick ? 5 : 10, true);
    } finally {
      client.close();
    }
    const cliListSeconds: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = Date.now();
      const r = await runBin('envsnap', [
        '--controller',
        cluster.address,
        'backup:list',
        '-e',
        'load-00',
        '--format',
        'json',
      ]);
      if (r.code !== 0) throw new Error(`backup:list failed: ${r.stderr}`);
      cliListSeconds.push((Date.now() - t) / 1000);
    }
    const rssListingsMb = await processPeakRssMb(pid);
    const fmt = (n: number) => n.toFixed(1);
    const markdown = [
      `controller load test: ${connectedAgents}/${agents} simulated agents connected over gRPC, ${backups} backups in the catalog, heartbeat every ${heartbeatInterval} s`,
      '',
      '| measure | value | target |',
      '|---|--:|---|',
      `| controller CPU with heartbeats only (${window} s window) | ${fmt(heartbeatCpu)} % of one core | < 20 % |`,
      `| controller peak RSS: agents connecting / heartbeats only / after the listings | ${fmt(rssConnectedMb)} / ${fmt(rssHeartbeatsMb)} / ${fmt(rssListingsMb)} MB | (the < 200 MB target is for backups) |`,
      `| ListBackups (behind \`backup:list -e\`), one environment, default page (${listOne.backupsReturned} newest of ${backups / ENVIRONMENTS}), p50 / p99 / max of ${listOne.calls} | ${fmt(listOne.p50Ms)} / ${fmt(listOne.p99Ms)} / ${fmt(listOne.maxMs)} ms | p99 < 100 ms |`,
      `| ListBackups --all, one environment (${listOneAll.backupsReturned} backups), p50 / p99 / max of ${listOneAll.calls} | ${fmt(listOneAll.p50Ms)} / ${fmt(listOneAll.p99Ms)} / ${fmt(listOneAll.maxMs)} ms | |`,
      `| ListBackups --all, every environment (${listAll.backupsReturned} backups), p50 / p99 / max of ${listAll.calls} | ${fmt(listAll.p50Ms)} / ${fmt(listAll.p99Ms)} / ${fmt(listAll.maxMs)} ms | |`,
      `| breakdown: \`Catalog.listBackups('load-00')\` alone (index range read + \`getMany\` of ${backups / ENVIRONMENTS} records), p50 of ${catalogScan.length} | ${fmt(percentile(catalogScan, 50))} ms | |`,
      `| \`envsnap backup:list -e load-00\` whole CLI run (Node start-up included), median of 5 | ${fmt([...cliListSeconds].sort((a, b) => a - b)[2]! * 1000)} ms | |`,
      '',
    ].join('\n');
    return {
      agents,
      connectedAgents,
      backups,
      heartbeatIntervalSeconds: heartbeatInterval,
      heartbeatCpuPercentOfOneCore: heartbeatCpu,
      controllerRssMb: { connecting: rssConnectedMb, heartbeats: rssHeartbeatsMb, listings: rssListingsMb },
      catalogScanMs: catalogScan,
      listOneEnvironment: listOne,
      listOneEnvironmentAll: listOneAll,
      listAll,
      cliListSeconds,
      markdown,
    };
  } finally {
    for (const s of sims) s.close();
    await cluster.stop(opts.keep);
  }
}
