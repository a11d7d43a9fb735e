/**
 * The benchmark's results: the cases with their measured runs, the ratios envsnap ÷ raw, the
 * targets of issue 6 §2 and whether they hold, as a Markdown table or as JSON.
 */
import type { Usage } from './measure.js';

/** One line of a case: envsnap or a raw pipeline. */
export interface MeasuredRun extends Usage {
  id: string;
  label: string;
  tool: 'envsnap' | 'raw';
  /** Bytes written (artifact, file or directory), when there is an output. */
  outputBytes?: number;
  /** Wall seconds of every repetition (the run reported is the median one). */
  walls: number[];
  /** For raw runs: the envsnap run (id) of the same case that the ratios divide. */
  compare?: string;
  /** envsnap backups: seconds in the controller's catalog, from creation to end. */
  activitySeconds?: number;
  /** Not measured on its own: taken from other cases (e.g. the slowest single raw pipeline). */
  derivedFrom?: string;
}

/** A case: what was backed up or restored, and every run on it. */
export interface CaseResult {
  id: string;
  title: string;
  runs: MeasuredRun[];
}

/** envsnap ÷ raw for one raw run, or undefined for envsnap's own lines. */
export function ratios(c: CaseResult, run: MeasuredRun): { wall: number; cpu: number } | undefined {
  if (run.tool !== 'raw' || !run.compare) return undefined;
  const e = c.runs.find((r) => r.id === run.compare);
  if (!e || run.wallSeconds <= 0) return undefined;
  return {
    wall: e.wallSeconds / run.wallSeconds,
    cpu: run.cpuSeconds > 0 ? e.cpuSeconds / run.cpuSeconds : NaN,
  };
}

/** One target of issue 6 §2 and what was measured for it. */
export interface TargetCheck {
  target: string;
  /** The ratio (or MiB for memory) that must not be exceeded. */
  limit: number;
  measured?: number;
  holds?: boolean;
  /** Which runs the number comes from. */
  detail: string;
}

function ratioTarget(
  cases: CaseResult[],
  caseId: string,
  envsnapId: string,
  rawId: string,
  target: string,
  limit: number,
): TargetCheck | undefined {
  const c = cases.find((x) => x.id === caseId);
  const e = c?.runs.find((r) => r.id === envsnapId);
  const raw = c?.runs.find((r) => r.id === rawId);
  if (!c || !e || !raw) return undefined;
  const measured = e.wallSeconds / raw.wallSeconds;
  return {
    target,
    limit,
    measured,
    holds: measured <= limit,
    detail: `${e.wallSeconds.toFixed(2)} s ÷ ${raw.wallSeconds.toFixed(2)} s (${raw.label})`,
  };
}

/** Evaluates the targets that the measured cases cover. */
export function checkTargets(cases: CaseResult[]): TargetCheck[] {
  const out: Array<TargetCheck | undefined> = [
    ratioTarget(
      cases,
      'mariadb-backup',
      'envsnap-zstd',
      'mariadb-dump-zstd',
      'MariaDB artifact ≤ 1.1x `| zstd -T0 -3`',
      1.1,
    ),
    ratioTarget(
      cases,
      'postgresql-backup',
      'envsnap-zstd',
      'pg_dump-Fc-Z0-zstd',
      'PostgreSQL artifact ≤ 1.1x `| zstd -T0 -3`',
      1.1,
    ),
    ratioTarget(
      cases,
      'redis-backup',
      'envsnap-zstd',
      'redis-cli-rdb-zstd',
      'Redis artifact ≤ 1.1x `--rdb && zstd -T0 -3`',
      1.1,
    ),
    ratioTarget(
      cases,
      'mariadb-backup',
      'envsnap-gzip',
      'mariadb-dump-pigz',
      'MariaDB artifact, gzip ≤ 1.05x `| pigz`',
      1.05,
    ),
    ratioTarget(
      cases,
      'mount-backup',
      'envsnap-zstd',
      'tar-zstd',
      'mount ≤ 1.2x `tar -I "zstd -T0 -3"`',
      1.2,
    ),
    ratioTarget(
      cases,
      'environment-backup',
      'envsnap-zstd',
      'slowest-single',
      'whole environment ≤ 1.2x its slowest single raw pipeline',
      1.2,
    ),
    ratioTarget(
      cases,
      'mariadb-restore',
      'envsnap-restore',
      'zstd-dc-mariadb',
      'MariaDB restore ≤ 1.1x `zstd -dc | mariadb`',
      1.1,
    ),
    ratioTarget(
      cases,
      'postgresql-restore',
      'envsnap-restore',
      'pg_restore',
      'PostgreSQL restore ≤ 1.1x `pg_restore`',
      1.1,
    ),
    ratioTarget(
      cases,
      'redis-restore',
      'envsnap-restore',
      'redis-server-load',
      'Redis restore ≤ 1.1x loading the RDB at start',
      1.1,
    ),
    ratioTarget(
      cases,
      'mount-restore',
      'envsnap-restore',
      'tar-x-zstd',
      'mount restore ≤ 1.1x `tar -x`',
      1.1,
    ),
  ];
  const envsnapRuns = cases.flatMap((c) => c.runs.filter((r) => r.tool === 'envsnap').map((r) => ({ c, r })));
  if (envsnapRuns.length > 0) {
    const worst = envsnapRuns.reduce((a, b) => (b.r.peakRssMb > a.r.peakRssMb ? b : a));
    out.push({
      target: 'agent and controller peak RSS < 200 MB',
      limit: 200,
      measured: worst.r.peakRssMb,
      holds: worst.r.peakRssMb < 200,
      detail: `largest: ${worst.c.title}, ${worst.r.label} (agent ${fmt(worst.r.agentRssMb, 0)} MB, controller ${fmt(worst.r.controllerRssMb, 0)} MB)`,
    });
  }
  return out.filter((t): t is TargetCheck => t !== undefined);
}

function fmt(n: number | undefined, digits = 2): string {
  return n === undefined || Number.isNaN(n) ? '' : n.toFixed(digits);
}

function mb(bytes: number | undefined): string {
  return bytes === undefined ? '' : (bytes / 1024 / 1024).toFixed(0);
}

function cell(s: string): string {
  return s.replace(/\|/g, '\\|');
}

/** The results as Markdown tables (readable in a terminal, pasteable into docs/benchmarks.md). */
export function markdown(cases: CaseResult[], targets: TargetCheck[]): string {
  const lines = [
    '| case | run | wall s | CPU s | peak RSS MB | output MB | envsnap ÷ run, wall | envsnap ÷ run, CPU |',
    '|---|---|--:|--:|--:|--:|--:|--:|',
  ];
  for (const c of cases) {
    c.runs.forEach((r, i) => {
      const q = ratios(c, r);
      const rss =
        r.tool === 'envsnap'
          ? `${fmt(r.agentRssMb, 0)} agent, ${fmt(r.controllerRssMb, 0)} ctl`
          : r.derivedFrom
            ? ''
            : fmt(r.peakRssMb, 0);
      const label = r.tool === 'envsnap' ? `**${r.label}**` : `\`${r.label}\``;
      const reps = r.walls.length > 1 ? ` (median of ${r.walls.length})` : '';
      lines.push(
        `| ${i === 0 ? c.title : ''} | ${cell(label)}${reps} | ${fmt(r.wallSeconds)} | ${r.derivedFrom ? '' : fmt(r.cpuSeconds)} | ${rss} | ${mb(r.outputBytes)} | ${q ? `${fmt(q.wall)}x` : ''} | ${q && !Number.isNaN(q.cpu) ? `${fmt(q.cpu)}x` : ''} |`,
      );
    });
  }
  const t = ['| target | limit | measured | holds | from |', '|---|--:|--:|---|---|'];
  for (const x of targets) {
    const unit = x.target.includes('RSS') ? ' MB' : 'x';
    t.push(
      `| ${cell(x.target)} | ${x.limit}${unit} | ${fmt(x.measured)}${unit} | ${x.holds === undefined ? '' : x.holds ? 'yes' : '**no**'} | ${cell(x.detail)} |`,
    );
  }
  return `${lines.join('\n')}\n\n${t.join('\n')}\n`;
}
