/**
 * envsnap under measurement: a controller and an agent as real processes (EnvsnapCluster), driven
 * with the `envsnap` CLI, one environment per benchmark case.
 */
import path from 'node:path';
import { repoRoot } from '../helpers/datasets.js';
import { EnvsnapCluster, type EnvironmentYaml } from '../helpers/envsnap.js';
import {
  mariadbConnection,
  postgresConnection,
  redisConnection,
  type MariadbServer,
  type PostgresServer,
  type RedisServer,
} from '../helpers/servers.js';
import { MARIADB_DATABASE, PG_DATABASE } from './bench-data.js';
import { ProcessMeter, timed, type Usage } from './measure.js';

/** The node the benchmark's agent runs as. */
export const BENCH_NODE = 'bench-node';

/** What the environments are made of. */
export interface BenchTargets {
  maria?: MariadbServer;
  pg?: PostgresServer;
  redis?: RedisServer;
  mount?: string;
}

/** The environments: `bench-<case>` with one service or mount each, and `bench-all` with every one. */
export function benchEnvironments(t: BenchTargets): EnvironmentYaml[] {
  const services: Record<string, Record<string, unknown>> = {};
  if (t.maria)
    services.mariadb = {
      name: 'db',
      kind: 'mariadb',
      nodes: [BENCH_NODE],
      connection: mariadbConnection(t.maria),
      databases: [MARIADB_DATABASE],
    };
  if (t.pg)
    services.postgresql = {
      name: 'pg',
      kind: 'postgresql',
      nodes: [BENCH_NODE],
      connection: postgresConnection(t.pg),
      databases: [PG_DATABASE],
    };
  if (t.redis)
    services.redis = {
      name: 'cache',
      kind: 'redis',
      nodes: [BENCH_NODE],
      connection: redisConnection(t.redis),
    };
  const mount = t.mount ? { name: 'files', node: BENCH_NODE, path: t.mount } : undefined;
  const envs: EnvironmentYaml[] = Object.entries(services).map(([name, s]) => ({
    name: `bench-${name}`,
    services: [s],
  }));
  if (mount) envs.push({ name: 'bench-mount', mounts: [mount] });
  envs.push({ name: 'bench-all', services: Object.values(services), mounts: mount ? [mount] : [] });
  // ENVSNAP_BENCH_DRILL_STATS=off|counts|checksums measures what recording restore-drill stats costs.
  const drillStats = process.env.ENVSNAP_BENCH_DRILL_STATS;
  return drillStats ? envs.map((e) => ({ ...e, drill_stats: drillStats })) : envs;
}

/** One measured envsnap run. */
export interface EnvsnapRun extends Usage {
  backupId?: string;
  /** Stored bytes of the backup (its artifacts, compressed). */
  outputBytes?: number;
  /** Seconds from the backup's creation to its end in the controller's catalog (no CLI start-up). */
  activitySeconds?: number;
}

/** Runs envsnap's CLI commands and measures them together with the controller and agent. */
export class EnvsnapBench {
  private constructor(
    readonly cluster: EnvsnapCluster,
    private readonly meter: ProcessMeter,
  ) {}

  /**
   * Starts a controller and one agent (as `bench-node`) with the benchmark's environments.
   *
   * @param profileDir when set, the controller and agent run with V8's CPU profiler
   *   (cpu-profile-preload.ts) and write their profiles there when they exit (the CLI runs started
   *   meanwhile write theirs too)
   */
  static async start(targets: BenchTargets, profileDir?: string): Promise<EnvsnapBench> {
    const saved = { options: process.env.NODE_OPTIONS, dir: process.env.ENVSNAP_BENCH_PROFILE_DIR };
    if (profileDir) {
      const preload = new URL('./cpu-profile-preload.js', import.meta.url).href;
      process.env.NODE_OPTIONS = `${saved.options ?? ''} --import=${preload}`.trim();
      process.env.ENVSNAP_BENCH_PROFILE_DIR = profileDir;
    }
    let cluster: EnvsnapCluster;
    try {
      cluster = await EnvsnapCluster.start({
        nodes: [BENCH_NODE],
        environments: benchEnvironments(targets),
        controller: { heartbeat_interval: 5 },
      });
    } finally {
      for (const [key, value] of [
        ['NODE_OPTIONS', saved.options],
        ['ENVSNAP_BENCH_PROFILE_DIR', saved.dir],
      ] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
    const agent = cluster.agents.get(BENCH_NODE)!.child.pid!;
    const controller = cluster.controller.child.pid!;
    return new EnvsnapBench(cluster, new ProcessMeter({ agent, controller }));
  }

  private async measured(args: string[]): Promise<{ usage: Usage; stdout: string }> {
    await this.meter.start();
    const cli = await timed([
      process.execPath,
      path.join(repoRoot(), 'bin', 'envsnap.js'),
      '--controller',
      this.cluster.address,
      ...args,
    ]);
    const procs = await this.meter.stop();
    return {
      usage: {
        wallSeconds: cli.wallSeconds,
        cpuSeconds: cli.cpuSeconds + procs.cpuSeconds,
        peakRssMb: Math.max(procs.agentRssMb, procs.controllerRssMb),
        agentRssMb: procs.agentRssMb,
        controllerRssMb: procs.controllerRssMb,
      },
      stdout: cli.stdout,
    };
  }

  /** `envsnap backup:create -e <env> --yes --compression <c>`, measured. */
  async backup(environment: string, compression: 'zstd' | 'gzip'): Promise<EnvsnapRun> {
    const { usage, stdout } = await this.measured([
      'backup:create',
      '-e',
      environment,
      '--yes',
      '--compression',
      compression,
    ]);
    const backupId = /Backup ID: (\S+)/.exec(stdout)?.[1];
    if (!backupId) throw new Error(`backup:create printed no backup ID: ${stdout}`);
    const b = await this.cluster.json<{ size_bytes: number; created: string; finished: string | null }>([
      'backup:get',
      backupId,
    ]);
    return {
      ...usage,
      backupId,
      outputBytes: b.size_bytes,
      activitySeconds: b.finished ? (Date.parse(b.finished) - Date.parse(b.created)) / 1000 : undefined,
    };
  }

  /** `envsnap backup:restore <id> --yes`, measured. */
  async restore(backupId: string): Promise<EnvsnapRun> {
    return (await this.measured(['backup:restore', backupId, '--yes'])).usage;
  }

  /** Deletes a backup that is no longer needed (untimed), to keep the disk use flat. */
  async delete(backupId: string): Promise<void> {
    const r = await this.cluster.cli(['backup:delete', backupId, '--yes']);
    if (r.code !== 0) throw new Error(`backup:delete ${backupId} failed: ${r.stderr}`);
  }

  /** The process ids of the agent and the controller. */
  get pids(): { agent: number; controller: number } {
    return {
      agent: this.cluster.agents.get(BENCH_NODE)!.child.pid!,
      controller: this.cluster.controller.child.pid!,
    };
  }

  stop(keep = false): Promise<unknown> {
    return this.cluster.stop(keep);
  }
}
