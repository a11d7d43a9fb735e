/**
 * The machine and tool versions a benchmark ran with, so that numbers are only compared with
 * numbers from the same kind of machine.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { repoRoot } from '../helpers/datasets.js';

export interface MachineInfo {
  /** `nproc`: the CPUs this process may use. */
  nproc: number;
  cpuModel: string;
  memoryGb: number;
  kernel: string;
  node: string;
  /** 1-minute load average when the benchmark started (others may share the machine). */
  loadAverage: number;
  /** First line of `<tool> --version` for each tool. */
  tools: Record<string, string>;
  /** `git rev-parse HEAD` of the checkout, with `+dirty` when it has changes. */
  commit: string;
}

function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return 'missing';
  return `${r.stdout}${r.stderr}`.trim().split('\n')[0] ?? '';
}

/** Collects the machine's description (synchronously: a handful of short commands). */
export function machineInfo(): MachineInfo {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const git = (args: string[]) =>
    spawnSync('git', ['-C', repoRoot(), ...args], { encoding: 'utf8' }).stdout.trim();
  const tools: Record<string, string> = {};
  for (const [name, args] of [
    ['mariadb-dump', ['--version']],
    ['pg_dump', ['--version']],
    ['redis-server', ['--version']],
    ['zstd', ['--version']],
    ['pigz', ['--version']],
    ['gzip', ['--version']],
    ['tar', ['--version']],
    ['mydumper', ['--version']],
    ['restic', ['version']],
    ['borg', ['--version']],
    ['sysbench', ['--version']],
  ] as const) {
    tools[name] = firstLine(name, [...args]);
  }
  return {
    nproc: Number(firstLine('nproc', [])) || os.availableParallelism(),
    cpuModel: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    memoryGb: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    loadAverage: os.loadavg()[0] ?? 0,
    tools,
    commit: `${git(['rev-parse', '--short', 'HEAD'])}${git(['status', '--porcelain']) ? '+dirty' : ''}`,
  };
}
