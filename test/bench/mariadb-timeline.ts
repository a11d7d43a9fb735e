/**
 * The timeline of one MariaDB backup against the raw `mariadb-dump | zstd` pipeline, on the same
 * data, back to back: `node dist/test/bench/mariadb-timeline.js [tables] [rows] [runs]` (default
 * 4 x 400,000 rows, 3 runs each). Prints, per run, the wall and CPU seconds of the raw pipeline and
 * of envsnap split by process (CLI, controller, agent with its reaped tools, the MariaDB server),
 * and every controller and agent log line of the envsnap run with its time from the CLI's start
 * (JSON lines on the processes' stderr with a `time` and `msg` show too: add such lines by hand to
 * time phases the logs do not name, e.g. the final fsync).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { repoRoot } from '../helpers/datasets.js';
import { startMariadb } from '../helpers/servers.js';
import { fillMariadb, MARIADB_DATABASE, QUICK_SIZES } from './bench-data.js';
import { BENCH_NODE, EnvsnapBench } from './envsnap-runner.js';
import { processCpuSeconds, timed, timeShell } from './measure.js';
import { MARIADB_DUMP_OPTIONS } from '../../agent/engines/mariadb.js';

const [tables = '4', rows = '400000', runs = '3'] = process.argv.slice(2);

async function logLines(file: string, from: number): Promise<Array<{ t: number; who: string; msg: string }>> {
  const who = path.basename(file, '.log');
  const out: Array<{ t: number; who: string; msg: string }> = [];
  for (const line of (await readFile(file, 'utf8')).split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line) as { time?: string; msg?: string; taskId?: string; task?: string };
      const t = Date.parse(j.time ?? '');
      if (t >= from) out.push({ t, who, msg: j.msg ?? line.slice(0, 200) });
    } catch {
      // not a log line
    }
  }
  return out;
}

const maria = await startMariadb({ name: 'timeline' });
const bench = await (async () => {
  await fillMariadb(maria, { ...QUICK_SIZES, mariadbTables: Number(tables), mariadbRows: Number(rows) });
  return EnvsnapBench.start({ maria });
})();
try {
  const dump = `mariadb-dump --defaults-file=${maria.defaultsFile} ${MARIADB_DUMP_OPTIONS.join(' ')} --databases ${MARIADB_DATABASE}`;
  const out = path.join(bench.cluster.dir, 'raw.sql.zst');
  // Warm-up (buffer pool, page cache) of both sides, unmeasured.
  await timeShell(`${dump} | zstd -q -T0 -3 > ${out}`);
  for (let i = 0; i < Number(runs); i++) {
    const m0 = await processCpuSeconds(maria.pid);
    const raw = await timeShell(`${dump} | zstd -q -T0 -3 > ${out}`);
    const m1 = await processCpuSeconds(maria.pid);
    console.log(
      `run ${i + 1} raw: wall ${raw.wallSeconds.toFixed(2)} s, CPU ${raw.cpuSeconds.toFixed(2)} s, server ${(m1 - m0).toFixed(2)} s`,
    );
    const { agent, controller } = bench.pids;
    const selfCpu = async (pid: number): Promise<number> => {
      const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
      return (Number(f[11]) + Number(f[12])) / 100;
    };
    const self0 = await selfCpu(agent);
    const before = await Promise.all([agent, controller, maria.pid].map(processCpuSeconds));
    const t0 = Date.now();
    const cli = await timed([
      process.execPath,
      path.join(repoRoot(), 'bin', 'envsnap.js'),
      '--controller',
      bench.cluster.address,
      'backup:create',
      '-e',
      'bench-mariadb',
      '--yes',
      '--compression',
      'zstd',
    ]);
    const after = await Promise.all([agent, controller, maria.pid].map(processCpuSeconds));
    const [a, c, s] = after.map((v, k) => v - before[k]!);
    const self = (await selfCpu(agent)) - self0;
    console.log(
      `run ${i + 1} envsnap: wall ${cli.wallSeconds.toFixed(2)} s, CPU ${(cli.cpuSeconds + a! + c!).toFixed(2)} s ` +
        `(CLI ${cli.cpuSeconds.toFixed(2)}, controller ${c!.toFixed(2)}, agent ${self.toFixed(2)}, ` +
        `agent's tools ${(a! - self).toFixed(2)}), server ${s!.toFixed(2)} s`,
    );
    const lines = [
      ...(await logLines(path.join(bench.cluster.dir, 'controller.log'), t0)),
      ...(await logLines(path.join(bench.cluster.dir, `agent-${BENCH_NODE}.log`), t0)),
    ].sort((x, y) => x.t - y.t);
    for (const l of lines)
      console.log(`  +${((l.t - t0) / 1000).toFixed(3)} ${l.who}: ${l.msg.slice(0, 160)}`);
    const id = /Backup ID: (\S+)/.exec(cli.stdout)?.[1];
    if (id) await bench.delete(id);
  }
} finally {
  await bench.stop();
  await maria.stop();
}
