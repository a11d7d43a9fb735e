/**
 * Restore-drill stats for PostgreSQL databases, taken inside pg_dump's own snapshot, and the
 * drill's scratch restore.
 *
 * Stats (shared/drill-stats.ts): per ordinary table (`relkind 'r'`, partitions included, each
 * counted `FROM ONLY` itself; temporary tables and the system schemas left out), its row count
 * and, at level `checksums`, `sum(hashtextextended((row.*)::text, 0))`: an order-independent sum of a
 * 64-bit hash of each row's text form, so a changed, missing or added row changes it (except for
 * a 2^-64 chance per change). Rows are rendered with fixed settings (UTC, ISO dates, hex bytea,
 * `extra_float_digits = 1`), so that both sides render them alike. Cost: about 0.5 to 1.2 µs per row on
 * this machine (PostgreSQL 15), besides the count's scan; see docs/benchmarks.md.
 *
 * Same snapshot (basis `snapshot`): a psql session opens a `REPEATABLE READ, READ ONLY`
 * transaction and exports its snapshot (`pg_export_snapshot()`); pg_dump is started with
 * `--snapshot=` that id, and the stats are computed in the exporting transaction, so they describe
 * exactly the rows the dump holds, even while the database is written (PostgreSQL manual,
 * "Snapshot Synchronization Functions"). The transaction stays open until the dump ended.
 *
 * Drill: a scratch database `<db>__envsnap_drill` is created on the same server with the live
 * database's encoding and locale (`template0`), the archive is restored into it with
 * `pg_restore --exit-on-error` (owners and grants kept: the roles exist on that server), the stats
 * are computed there, and it is dropped (`WITH (FORCE)`), whatever happened. The live database and
 * its pre-restore copy are never named. Large objects are restored but not checked.
 */
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

import type { TableStats } from '../../shared/drill-stats.js';
import { errorMessage, TaskAbortedError, ToolFailedError } from '../../shared/errors.js';
import { feedTool, runTool, spawnTool } from '../tool-process.js';
import type { EngineContext, ServiceTarget } from './engine.js';
import { conninfo, pgEnv } from './postgresql.js';
import { drillName, POSTGRES_NAME_LIMIT } from './staging-names.js';

const DEBIAN_PACKAGE = 'postgresql-client';
/** How long dropping a drill's scratch database may take, ms (it is not tied to the task's signal). */
const DROP_TIMEOUT_MS = 120_000;
const END_MARK = 'envsnap-stats-end';

/** Session settings that fix how rows render as text, on both sides of a drill. */
const RENDER_SETTINGS = `SET TIME ZONE 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
SET bytea_output = 'hex';
`;

/**
 * psql script: one line per table, `<hex of schema.table>\t<rows>\t<checksum>`, then END_MARK.
 * `\gexec` runs each generated query in the same session (and transaction).
 */
function statsScript(checksums: boolean): string {
  const sum = checksums ? `coalesce(sum(hashtextextended((envsnap_row.*)::text, 0)), 0)::text` : `''`;
  return `SELECT format('SELECT %L || chr(9) || count(*) || chr(9) || ${sum.replace(/'/g, "''")} FROM ONLY %I.%I envsnap_row',
    encode(convert_to(n.nspname || '.' || c.relname, 'UTF8'), 'hex'), n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND c.relpersistence <> 't'
    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  ORDER BY n.nspname, c.relname
\\gexec
SELECT '${END_MARK}';
`;
}

function parseStatsLine(line: string): TableStats {
  const [hex = '', rows = '0', checksum = ''] = line.split('\t');
  return { name: Buffer.from(hex, 'hex').toString('utf8'), rows: Number(rows), checksum };
}

const PSQL_ARGS = ['-X', '-q', '-A', '-t', '--no-password', '-v', 'ON_ERROR_STOP=1'];

/**
 * Row count and (with `checksums`) row hash sum of every table of `db`, in `schema.table` order,
 * in a transaction of its own.
 *
 * @throws ToolFailedError when psql fails.
 */
export async function postgresqlTableStats(
  service: ServiceTarget,
  db: string,
  checksums: boolean,
  ctx: EngineContext,
): Promise<TableStats[]> {
  const out = await runTool('psql', [...PSQL_ARGS, `--dbname=${conninfo(db)}`, '-f', '-'], {
    env: pgEnv(service),
    input:
      RENDER_SETTINGS +
      'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n' +
      statsScript(checksums) +
      'COMMIT;\n',
    signal: ctx.signal,
    debianPackage: DEBIAN_PACKAGE,
  });
  const lines = out.split('\n').filter((l) => l !== '');
  if (lines.at(-1) !== END_MARK) throw new Error('psql did not print the end of the table stats');
  return lines.slice(0, -1).map(parseStatsLine);
}

/** A transaction holding an exported snapshot, in which the stats are computed (see the file comment). */
export interface PostgresqlStatsSession {
  /** The snapshot id to pass to `pg_dump --snapshot=`. */
  snapshot: string;
  /** The stats, computed in the snapshot; rejects when psql fails. */
  stats: Promise<TableStats[]>;
  /** Ends the transaction (after the dump ended) and waits for psql. Never rejects. */
  close(): Promise<void>;
}

/**
 * Opens the snapshot transaction on `db`, exports its snapshot, and starts computing the stats in
 * it. Resolves once the snapshot id is known (the stats keep running).
 *
 * @throws ToolFailedError when psql fails before exporting the snapshot.
 */
export async function startPostgresqlStats(
  service: ServiceTarget,
  db: string,
  checksums: boolean,
  ctx: EngineContext,
): Promise<PostgresqlStatsSession> {
  const proc = spawnTool('psql', [...PSQL_ARGS, `--dbname=${conninfo(db)}`, '-f', '-'], {
    env: pgEnv(service),
    stdio: ['pipe', 'pipe'],
    signal: ctx.signal,
    debianPackage: DEBIAN_PACKAGE,
  });
  const stdin = proc.child.stdin!;
  const exited = proc.wait();
  exited.catch(() => {});
  const lines = createInterface({ input: proc.child.stdout!, crlfDelay: Infinity })[Symbol.asyncIterator]();
  const nextLine = async (): Promise<string> => {
    const next = await Promise.race([
      lines.next(),
      exited.then(() => {
        throw new ToolFailedError('psql', 0, null, 'the stats session ended early');
      }),
    ]);
    if (next.done) {
      await exited;
      throw new ToolFailedError('psql', 0, null, 'the stats session ended early');
    }
    return next.value;
  };
  const close = async (): Promise<void> => {
    if (!stdin.writableEnded) stdin.end('COMMIT;\n');
    await exited.catch(() => {});
  };
  try {
    stdin.write(
      RENDER_SETTINGS +
        'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n' +
        "SELECT 'snapshot' || chr(9) || pg_catalog.pg_export_snapshot();\n",
    );
    const first = await nextLine();
    const snapshot = /^snapshot\t(\S+)$/.exec(first)?.[1];
    if (!snapshot) throw new Error('psql did not print the exported snapshot');
    stdin.write(statsScript(checksums));
    const stats = (async () => {
      const out: TableStats[] = [];
      for (;;) {
        const line = await nextLine();
        if (line === END_MARK) return out;
        out.push(parseStatsLine(line));
      }
    })();
    stats.catch(() => {});
    return { snapshot, stats, close };
  } catch (err) {
    proc.kill();
    await close();
    throw err;
  }
}

/** psql script: drops `:scratch` (ending sessions on it) and creates it like `:db` (template0). */
const CREATE_SCRATCH_SQL = `SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'scratch')
\\gexec
SELECT format('CREATE DATABASE %I TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L',
    :'scratch', pg_catalog.pg_encoding_to_char(encoding), datcollate, datctype)
  FROM pg_catalog.pg_database WHERE datname = :'db'
UNION ALL
SELECT format('CREATE DATABASE %I TEMPLATE template0', :'scratch')
  WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'db')
\\gexec
`;

async function psqlMaintenance(
  service: ServiceTarget,
  sql: string,
  vars: Record<string, string>,
  db: string,
  signal: AbortSignal,
): Promise<void> {
  const args = [...PSQL_ARGS];
  for (const [k, v] of Object.entries(vars)) args.push('-v', `${k}=${v}`);
  args.push(`--dbname=${conninfo(db === 'postgres' ? 'template1' : 'postgres')}`);
  await runTool('psql', args, { env: pgEnv(service), input: sql, signal, debianPackage: DEBIAN_PACKAGE });
}

/**
 * Drill: restores the archive (raw `pg_dump -Fc` bytes from `input`) into `<db>__envsnap_drill`,
 * computes the table stats there and drops it again, whatever happens.
 *
 * @returns the stats of the scratch copy, and `cleanup`, which resolves with '' once the scratch
 *   database is dropped or with why it could not be.
 * @throws ToolFailedError when the restore fails, TaskAbortedError when cancelled.
 */
export async function drillPostgresql(
  service: ServiceTarget,
  db: string,
  input: Readable,
  checksums: boolean,
  ctx: EngineContext,
): Promise<{ tables: TableStats[]; cleanup: Promise<string> }> {
  const scratch = drillName(db, POSTGRES_NAME_LIMIT);
  let tables: TableStats[] = [];
  let failure: unknown;
  try {
    await psqlMaintenance(service, CREATE_SCRATCH_SQL, { scratch, db }, db, ctx.signal);
    const restore = spawnTool(
      'pg_restore',
      ['--exit-on-error', '--no-password', `--dbname=${conninfo(scratch)}`],
      {
        env: pgEnv(service),
        stdio: ['pipe', 'ignore'],
        signal: ctx.signal,
        debianPackage: DEBIAN_PACKAGE,
      },
    );
    await feedTool(input, restore);
    ctx.signal.throwIfAborted();
    ctx.log(`${db}: restored into the scratch database ${scratch}`);
    tables = await postgresqlTableStats(service, scratch, checksums, ctx);
  } catch (err) {
    failure = ctx.signal.aborted ? new TaskAbortedError(`drill of ${db} was stopped`, { cause: err }) : err;
  }
  const cleanup = psqlMaintenance(
    service,
    `SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'scratch')\n\\gexec\n`,
    { scratch },
    db,
    AbortSignal.timeout(DROP_TIMEOUT_MS),
  ).then(
    () => {
      ctx.log(`scratch database ${scratch} dropped`);
      return '';
    },
    (err: unknown) => {
      const why = `could not drop the scratch database ${scratch}: ${errorMessage(err)}`;
      ctx.log(why);
      return why;
    },
  );
  if (failure !== undefined) {
    await cleanup;
    throw failure as Error;
  }
  return { tables, cleanup };
}
