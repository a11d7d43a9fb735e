/**
 * Runs envsnap itself for integration tests: the controller and agents as
 * separate processes from `bin/`, configured through real YAML files, and the
 * CLI as a child process, exactly as a sysadmin would run them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { repoRoot } from './datasets.js';
import { freePort } from './servers.js';

/** The result of one CLI run. */
export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/**
 * Runs `bin/<name>.js` with arguments; resolves when it exits.
 * stdin is closed at once (not a TTY), as in cron or CI.
 */
export function runBin(
  name: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot(), 'bin', `${name}.js`), ...args], {
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} ${args.join(' ')} timed out`));
    }, opts.timeoutMs ?? 180_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

/** A running controller or agent process, with its JSON log in a file. */
export interface EnvsnapProcess {
  child: ChildProcess;
  logFile: string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function launch(name: string, configFile: string, logFile: string, env?: NodeJS.ProcessEnv): EnvsnapProcess {
  const child = spawn(
    process.execPath,
    [path.join(repoRoot(), 'bin', `${name}.js`), '--config', configFile],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } },
  );
  live.add(child);
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, logFile, exited };
}

/** An environment for the config file, in the config's own YAML shape. */
export type EnvironmentYaml = Record<string, unknown>;

/** A controller plus agents, each a separate process, on free loopback ports. */
export class EnvsnapCluster {
  controller!: EnvsnapProcess;
  readonly agents = new Map<string, EnvsnapProcess>();
  address = '';
  metricsPort = 0;
  readonly agentMetricsPorts = new Map<string, number>();

  private constructor(
    readonly dir: string,
    readonly nodes: string[],
    readonly environments: EnvironmentYaml[],
  ) {}

  /** The local repository directory (the embedded default storage). */
  get repository(): string {
    return path.join(this.dir, 'state', 'repository');
  }

  /** Writes the config files and starts the controller and one agent per node; waits until all agents are connected. */
  static async start(opts: {
    nodes: string[];
    environments: EnvironmentYaml[];
    /** Extra keys of the config's `controller:` section. */
    controller?: Record<string, unknown>;
    /** Extra keys of every agent's `agent:` section. */
    agent?: Record<string, unknown>;
    /** The controller's `storage:` section (default: the local repository under the state directory). */
    storage?: Array<Record<string, unknown>>;
    /** Per node: a `storage:` section for its agent's config (credentials of s3 locations it writes straight). */
    agentStorage?: Record<string, Array<Record<string, unknown>>>;
  }): Promise<EnvsnapCluster> {
    const dir = await mkdtemp(path.join(tmpdir(), 'envsnap-e2e-'));
    const c = new EnvsnapCluster(dir, opts.nodes, opts.environments);
    const port = await freePort();
    c.address = `127.0.0.1:${port}`;
    c.metricsPort = await freePort();
    await writeFile(
      c.configFile('controller'),
      stringify({
        controller: {
          listen: c.address,
          metrics_listen: `127.0.0.1:${c.metricsPort}`,
          state_dir: path.join(dir, 'state'),
          heartbeat_interval: 1,
          shutdown_timeout: 10,
          ...opts.controller,
        },
        environments: opts.environments,
        ...(opts.storage ? { storage: opts.storage } : {}),
      }),
    );
    for (const node of opts.nodes) {
      const mport = await freePort();
      c.agentMetricsPorts.set(node, mport);
      await writeFile(
        c.configFile(node),
        stringify({
          agent: {
            node_id: node,
            controller: c.address,
            metrics_listen: `127.0.0.1:${mport}`,
            work_dir: path.join(dir, `work-${node}`),
            ...opts.agent,
          },
          ...(opts.agentStorage?.[node] ? { storage: opts.agentStorage[node] } : {}),
        }),
      );
    }
    await c.startController();
    for (const node of opts.nodes) await c.startAgent(node);
    return c;
  }

  configFile(who: string): string {
    return path.join(this.dir, `${who}.yaml`);
  }

  /** Starts the controller process; `env` adds environment variables (e.g. ENVSNAP_FAILPOINTS). */
  async startController(env?: NodeJS.ProcessEnv): Promise<void> {
    this.controller = launch(
      'envsnap-controller',
      this.configFile('controller'),
      path.join(this.dir, 'controller.log'),
      env,
    );
    await this.waitFor(
      async () => (await this.cli(['agent:list', '--format', 'json'])).code === 0,
      'the controller to answer',
    );
  }

  /** Starts a node's agent and waits until the controller lists it as connected. */
  async startAgent(node: string): Promise<void> {
    this.agents.set(
      node,
      launch('envsnap-agent', this.configFile(node), path.join(this.dir, `agent-${node}.log`)),
    );
    await this.waitFor(async () => {
      const r = await this.cli(['agent:list', '--format', 'json']);
      return (
        r.code === 0 &&
        (JSON.parse(r.stdout) as Array<{ node_id: string; connected: boolean }>).some(
          (a) => a.node_id === node && a.connected,
        )
      );
    }, `agent ${node} to connect`);
  }

  /** Runs the CLI against this controller. */
  cli(args: string[], env?: NodeJS.ProcessEnv): Promise<CliResult> {
    return runBin('envsnap', ['--controller', this.address, ...args], { env });
  }

  /** Runs the CLI and parses its JSON output; fails with the CLI's stderr otherwise. */
  async json<T>(args: string[]): Promise<T> {
    const r = await this.cli([...args, '--format', 'json']);
    if (r.code !== 0) throw new Error(`envsnap ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  async waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await check().catch(() => false)) return;
      await sleep(200);
    }
    throw new Error(`timed out waiting for ${what}; logs in ${this.dir}`);
  }

  /** Every log line the processes wrote so far. */
  async logs(): Promise<string> {
    const files = [
      path.join(this.dir, 'controller.log'),
      ...this.nodes.map((n) => path.join(this.dir, `agent-${n}.log`)),
    ];
    return (await Promise.all(files.map((f) => readFile(f, 'utf8').catch(() => '')))).join('\n');
  }

  /** Stops every process with SIGTERM and returns their exit codes; then removes the directory. */
  async stop(keep = false): Promise<Record<string, number | null>> {
    const codes: Record<string, number | null> = {};
    const stopOne = async (name: string, p: EnvsnapProcess | undefined) => {
      if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
      p.child.kill('SIGTERM');
      const t = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
      codes[name] = (await p.exited).code;
      clearTimeout(t);
    };
    for (const [node, p] of this.agents) await stopOne(node, p);
    await stopOne('controller', this.controller);
    if (!keep) await rm(this.dir, { recursive: true, force: true });
    return codes;
  }
}
