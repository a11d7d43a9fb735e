/**
 * Reads V8 CPU profiles (`node --cpu-prof`, `.cpuprofile` JSON) and sums self time by function and
 * by where the code comes from (envsnap, a package in node_modules, Node's own `node:` modules,
 * V8's garbage collector, idle), so that `--profile` can show where envsnap's processes spend
 * their CPU.
 */
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Self time of one function or one origin, milliseconds and share of the sampled time. */
export interface ProfileLine {
  name: string;
  ms: number;
  percent: number;
}

/** A profile's self time, summed. */
export interface ProfileSummary {
  file: string;
  /** Sampled time without `(idle)`, milliseconds: the CPU time the main thread used. */
  busyMs: number;
  byOrigin: ProfileLine[];
  topFunctions: ProfileLine[];
}

/** The origin of a function: `envsnap`, the package name, `node:<module>`, or V8's pseudo-nodes. */
function origin(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  if (url.startsWith('node:')) return url;
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const dist = /\/dist\/(.*)$/.exec(url);
  return dist ? `envsnap ${dist[1]!.split('/').slice(0, -1).join('/') || '.'}` : url;
}

/** Sums one `.cpuprofile` file. */
export async function summarizeProfile(file: string, top = 15): Promise<ProfileSummary> {
  const p = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000));
  const fn = new Map<string, number>();
  const org = new Map<string, number>();
  let busy = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id)!;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === '(idle)') continue;
    busy += ms;
    const key =
      `${functionName || '(anonymous)'} ${url ? `${url.replace(/^.*\/(node_modules|dist)\//, '')}:${lineNumber + 1}` : ''}`.trim();
    fn.set(key, (fn.get(key) ?? 0) + ms);
    const o = origin(url, functionName);
    org.set(o, (org.get(o) ?? 0) + ms);
  }
  const lines = (m: Map<string, number>, n: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, ms]) => ({ name, ms, percent: busy > 0 ? (100 * ms) / busy : 0 }));
  return { file, busyMs: busy, byOrigin: lines(org, 12), topFunctions: lines(fn, top) };
}

/** The profiles a process wrote into `dir` (file names carry the pid: `CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile`). */
export async function profilesOf(dir: string, pid: number): Promise<string[]> {
  return (await readdir(dir))
    .filter((f) => f.endsWith('.cpuprofile') && f.split('.')[3] === String(pid))
    .map((f) => path.join(dir, f));
}

/** A summary as Markdown. */
export function profileMarkdown(title: string, s: ProfileSummary): string {
  const row = (l: ProfileLine) =>
    `| ${l.name.replace(/\|/g, '\\|')} | ${l.ms.toFixed(0)} | ${l.percent.toFixed(1)} % |`;
  return [
    `${title}: ${(s.busyMs / 1000).toFixed(2)} s on the main thread (idle excluded)`,
    '',
    '| origin | self ms | share |',
    '|---|--:|--:|',
    ...s.byOrigin.map(row),
    '',
    '| function | self ms | share |',
    '|---|--:|--:|',
    ...s.topFunctions.map(row),
    '',
  ].join('\n');
}
