/**
 * How the benchmark measures a run: wall time, CPU time (user + system) and peak resident set size.
 *
 * - A raw pipeline runs as `bash -o pipefail -ec SCRIPT` under GNU time (`/usr/bin/time`, Debian
 *   package `time`). Its CPU time is bash's plus every process of the pipeline (the rusage of waited-for
 *   children, which is what `wait4()` returns); its peak RSS (`%M`) is that of the largest single
 *   process of the pipeline, as the kernel reports `ru_maxrss` for a process tree.
 * - envsnap runs as long-lived processes (controller, agent) driven by the CLI. The CLI run is timed
 *   with GNU time like a pipeline; the controller's and agent's CPU time is read from
 *   `/proc/<pid>/stat` before and after (utime + stime + cutime + cstime: the process itself plus the
 *   dump and compression tools it started and reaped), and their peak RSS from `VmHWM` in
 *   `/proc/<pid>/status`, after resetting it by writing `5` to `/proc/<pid>/clear_refs` (proc(5)).
 *   The database servers' own CPU is counted on neither side.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requireBinary } from '../helpers/servers.js';

/** Resource use of one measured run. Seconds and MiB. */
export interface Usage {
  wallSeconds: number;
  /** User plus system CPU time of every process of the run. */
  cpuSeconds: number;
  /** Peak RSS of the largest process of a pipeline; for envsnap, of the agent or controller, whichever is larger. */
  peakRssMb: number;
  /** envsnap only: the agent's and the controller's own peak RSS. */
  agentRssMb?: number;
  controllerRssMb?: number;
}

/** A timed command's usage and output. */
export interface TimedResult extends Usage {
  stdout: string;
  stderr: string;
}

const TIME_FORMAT = '%e %U %S %M';

/** Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux x86-64). */
let clockTicks: number | undefined;

async function ticksPerSecond(): Promise<number> {
  if (clockTicks === undefined) {
    const out = await capture('getconf', ['CLK_TCK']);
    clockTicks = Number(out.trim()) || 100;
  }
  return clockTicks;
}

function capture(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', reject);
    child.on('close', () => resolve(out));
  });
}

/**
 * Runs `argv` under GNU time and resolves with its usage and output.
 *
 * @param opts.env environment (default: this process's); `opts.cwd` working directory
 * @throws Error naming the command and the tail of its stderr when it exits non-zero
 * @throws Error naming the Debian package `time` when /usr/bin/time is missing
 */
export async function timed(
  argv: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<TimedResult> {
  const time = await requireBinary('/usr/bin/time', 'time');
  const dir = await mkdtemp(path.join(tmpdir(), 'envsnap-bench-time-'));
  const report = path.join(dir, 'time');
  try {
    const { code, stdout, stderr } = await new Promise<{
      code: number | null;
      stdout: string;
      stderr: string;
    }>((resolve, reject) => {
      const child = spawn(time, ['-f', TIME_FORMAT, '-o', report, '--', ...argv], {
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.on('error', reject);
      child.on('close', (c) =>
        resolve({ code: c, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }),
      );
    });
    if (code !== 0) {
      const tail = stderr.trimEnd().split('\n').slice(-12).join('\n');
      throw new Error(`${argv.join(' ').slice(0, 300)} exited with ${code}:\n${tail}`);
    }
    const last = (await readFile(report, 'utf8')).trim().split('\n').pop() ?? '';
    const [wall, user, sys, rssKb] = last.split(' ').map(Number);
    if ([wall, user, sys, rssKb].some((n) => n === undefined || Number.isNaN(n)))
      throw new Error(`unexpected GNU time output: ${last}`);
    return {
      wallSeconds: wall!,
      cpuSeconds: user! + sys!,
      peakRssMb: rssKb! / 1024,
      stdout,
      stderr,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs a bash script (`set -e -o pipefail`) under GNU time; see {@link timed}. */
export function timeShell(
  script: string,
  opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<TimedResult> {
  return timed(['bash', '-o', 'pipefail', '-ec', script], opts);
}

/** CPU seconds of a process and of its reaped children, from `/proc/<pid>/stat`. */
export async function processCpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start with field 3, the state.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0);
  return ticks / (await ticksPerSecond());
}

/** Peak RSS (`VmHWM`) of a process, MiB. */
export async function processPeakRssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmHWM:\s+(\d+) kB/m.exec(status)?.[1];
  return kb === undefined ? 0 : Number(kb) / 1024;
}

/** Resets a process's peak RSS to its current RSS (`echo 5 > /proc/<pid>/clear_refs`, needs root or the owner). */
export async function resetPeakRss(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, '5');
}

/** Measures long-running processes (controller, agent) across a span of work. */
export class ProcessMeter {
  private startCpu = new Map<number, number>();

  constructor(private readonly pids: Record<'agent' | 'controller', number>) {}

  /** Records the CPU counters and resets the peak RSS of every process. */
  async start(): Promise<void> {
    this.startCpu.clear();
    for (const pid of Object.values(this.pids)) {
      await resetPeakRss(pid);
      this.startCpu.set(pid, await processCpuSeconds(pid));
    }
  }

  /** CPU seconds used since `start()` (all processes and their reaped children) and each peak RSS. */
  async stop(): Promise<{ cpuSeconds: number; agentRssMb: number; controllerRssMb: number }> {
    let cpu = 0;
    for (const pid of Object.values(this.pids)) {
      cpu += (await processCpuSeconds(pid)) - (this.startCpu.get(pid) ?? 0);
    }
    return {
      cpuSeconds: cpu,
      agentRssMb: await processPeakRssMb(this.pids.agent),
      controllerRssMb: await processPeakRssMb(this.pids.controller),
    };
  }
}

/** The usage of the run with the median wall time (one real run, not a mix of several). */
export function medianRun<T extends Usage>(runs: T[]): T {
  const sorted = [...runs].sort((a, b) => a.wallSeconds - b.wallSeconds);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}
