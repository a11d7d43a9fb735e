/**
 * `node dist/test/bench/drill-stats-cost.js [--quick]`: what recording restore-drill stats costs, on
 * the benchmark's data (sysbench tables in MariaDB, pgbench in PostgreSQL): the time of the
 * stats queries at level `counts` and `checksums`, next to the plain dump (`mariadb-dump > /dev/null`,
 * `pg_dump -Fc -Z0 > /dev/null`; PostgreSQL's `checksums` with the `record` row hash backups take
 * and with the older `text` one). Throwaway servers; the numbers go to docs/benchmarks.md.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { mariadbStats } from '../../agent/engines/mariadb-stats.js';
import { createMountArchive } from '../../agent/mount-archive.js';
import { postgresqlTableStats } from '../../agent/engines/postgresql-stats.js';
import type { EngineContext } from '../../agent/engines/engine.js';
import { postgresConnection, startMariadb, startPostgres } from '../helpers/servers.js';
import {
  fillMariadb,
  fillPostgres,
  FULL_SIZES,
  MARIADB_DATABASE,
  PG_DATABASE,
  QUICK_SIZES,
} from './bench-data.js';

async function timed<T>(fn: () => Promise<T> | T): Promise<[number, T]> {
  const t = Date.now();
  const r = await fn();
  return [(Date.now() - t) / 1000, r];
}

async function main(): Promise<void> {
  const sizes = process.argv.includes('--quick') ? QUICK_SIZES : FULL_SIZES;
  const work = await mkdtemp(path.join(tmpdir(), 'envsnap-drill-cost-'));
  const ctx: EngineContext = { signal: new AbortController().signal, workDir: work, log: () => {} };
  const [maria, pg] = await Promise.all([
    startMariadb({ name: 'drill-cost' }),
    startPostgres({ name: 'drill-cost' }),
  ]);
  try {
    await Promise.all([fillMariadb(maria, sizes), fillPostgres(pg, sizes)]);
    const conn = { host: maria.host, port: maria.port, user: 'root', password: maria.password };
    const pgService = {
      name: 'pg',
      kind: 'postgresql' as const,
      connection: postgresConnection(pg),
      databases: [],
    };
    const rows: string[] = [];
    const [mdump] = await timed(() =>
      spawnSync('sh', [
        '-c',
        `mariadb-dump --defaults-file=${maria.defaultsFile} --single-transaction --quick ${MARIADB_DATABASE} > /dev/null`,
      ]),
    );
    const [mcount, { tables: mt }] = await timed(() =>
      mariadbStats('mariadb', conn, MARIADB_DATABASE, false, ctx),
    );
    const [msum] = await timed(() => mariadbStats('mariadb', conn, MARIADB_DATABASE, true, ctx));
    const mrows = mt.reduce((n, t) => n + t.rows, 0);
    rows.push(
      `| MariaDB, ${mt.length} tables, ${mrows} rows | ${mdump.toFixed(2)} | ${mcount.toFixed(2)} | ${msum.toFixed(2)} |`,
    );
    const [pdump] = await timed(() =>
      spawnSync('sh', [
        '-c',
        `pg_dump -Fc -Z0 -h ${pg.socketDir} -p ${pg.port} -U postgres ${PG_DATABASE} > /dev/null`,
      ]),
    );
    const [pcount, pt] = await timed(() => postgresqlTableStats(pgService, PG_DATABASE, undefined, ctx));
    const [psum] = await timed(() => postgresqlTableStats(pgService, PG_DATABASE, 'record', ctx));
    const [ptext] = await timed(() => postgresqlTableStats(pgService, PG_DATABASE, 'text', ctx));
    const prows = pt.reduce((n, t) => n + t.rows, 0);
    rows.push(
      `| PostgreSQL, ${pt.length} tables, ${prows} rows | ${pdump.toFixed(2)} | ${pcount.toFixed(2)} | ${psum.toFixed(2)} (\`text\` row hash: ${ptext.toFixed(2)}) |`,
    );
    // A mount: the same tree archived (to nowhere) without and with the tree digest.
    const tree = path.join(work, 'tree');
    const files = Math.max(1, Math.round(sizes.mountBytes / (1024 * 1024)));
    for (let i = 0; i < files; i++) {
      await mkdir(path.join(tree, `d${i % 16}`), { recursive: true });
      await writeFile(path.join(tree, `d${i % 16}`, `f${i}.bin`), randomBytes(1024 * 1024));
    }
    const archive = async (level: 'off' | 'hash') => {
      const a = createMountArchive(tree, { treeStats: level });
      await pipeline(a.stream, new Writable({ write: (_c, _e, cb) => cb() }));
      return a.done;
    };
    await archive('off'); // warm the page cache
    const [toff] = await timed(() => archive('off'));
    const [thash] = await timed(() => archive('hash'));
    rows.push(
      `| mount, ${files} files of 1 MiB (archive only) | ${toff.toFixed(2)} | | ${thash.toFixed(2)} (archive + digest) |`,
    );
    process.stdout.write(
      [
        '| data | plain dump, s | stats `counts`, s | stats `checksums`, s |',
        '|---|--:|--:|--:|',
        ...rows,
      ].join('\n') + '\n',
    );
  } finally {
    await Promise.all([maria.stop(), pg.stop()]);
    await rm(work, { recursive: true, force: true });
  }
}

await main();
