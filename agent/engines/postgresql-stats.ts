/**
 * Restore-drill stats for PostgreSQL databases, taken inside pg_dump's own snapshot, and the
 * drill's scratch restore.
 *
 * Stats (shared/drill-stats.ts): per ordinary table (`relkind 'r'`, partitions included, each
 * counted `FROM ONLY` itself; temporary tables and the system schemas left out), its row count
 * and, at level `checksums`, an order-independent sum of a 64-bit hash of each row, so a changed,
 * missing or added row changes it (except for a 2^-64 chance per change). Two row hashes
 * ({@link PgRowHash}); the checksum string says which one made it, and a drill uses the same:
 * - `record` (what backups take on PostgreSQL 14 and later; checksum `r1:<sum>`):
 *   `hash_record_extended(ROW(...), 0)`, where a column whose type's own hash is of the exact
 *   value (integers, bool, dates and times, uuid, bytea, strings under a deterministic collation)
 *   is hashed as it is, and any other column (numeric, floats, json, intervals, arrays, ...: types
 *   whose equal values can differ, `1.0 = 1.00`) by the hash of its text form. Most columns skip
 *   the rendering to text that pg_dump's COPY already pays for: on pgbench the stats cost about
 *   0.28 µs of server CPU per row against 0.47 µs for `text` (0.055 µs for the count alone).
 * - `text` (backups taken by earlier versions, and servers before 14; a bare `<sum>`):
 *   `sum(hashtextextended((row.*)::text, 0))`, the whole row's text form.
 * Rows are rendered with fixed settings (UTC, ISO dates, hex bytea, `extra_float_digits = 1`), so
 * that both sides render the text forms alike. See docs/benchmarks.md for the costs.
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

import type { TableStats } from '../../shared/drill-stats.js';
import { errorMessage, TaskAbortedError, ToolFailedError } from '../../shared/errors.js';
import { feedToolThrough, runTool, spawnTool } from '../tool-process.js';
import type { EngineContext, ServiceTarget } from './engine.js';
import { startUnpacker, type ArchiveInput } from '../compression.js';
import { conninfo, pgTool } from './postgresql.js';
import { drillName, POSTGRES_NAME_LIMIT } from './staging-names.js';

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
 * How `checksums` hashes a PostgreSQL row (see the file comment): `record` for new backups, `text`
 * to drill backups whose checksums it made.
 */
export type PgRowHash = 'record' | 'text';

/** The prefix of a checksum made by the `record` row hash (a `text` one is a bare number). */
const RECORD_HASH_PREFIX = 'r1:';

/**
 * The row hash that made recorded table stats (a drill computes the same one): `text` when a
 * checksum is a bare number (backups before the `record` hash, servers before 14), else `record`.
 */
export function recordedRowHash(tables: readonly TableStats[] | undefined): PgRowHash {
  return (tables ?? []).some((t) => t.checksum !== '' && !t.checksum.startsWith(RECORD_HASH_PREFIX))
    ? 'text'
    : 'record';
}

/**
 * Types whose hash function hashes the exact value (equal values have one text form), so a column
 * of one is hashed as it is by `record`; strings only under a deterministic collation.
 */
const EXACT_HASH_TYPES = [
  'bool',
  'int2',
  'int4',
  'int8',
  'oid',
  '"char"',
  'name',
  'text',
  'varchar',
  'bpchar',
  'bytea',
  'uuid',
  'date',
  'time',
  'timestamp',
  'timestamptz',
]
  .map((t) => `'${t}'::pg_catalog.regtype`)
  .join(', ');

/** SQL (in the generating query, over `pg_class c`): the checksum expression of table `c`. */
function checksumSql(rowHash: PgRowHash | undefined): string {
  if (!rowHash) return "''''''"; // the SQL literal of '' (no checksum)
  const text = `'coalesce(sum(hashtextextended((envsnap_row.*)::text, 0)), 0)::text'`;
  if (rowHash === 'text') return text;
  // Text forms in COLLATE "C": a string type under a nondeterministic collation lands here, and
  // its hash must see every byte.
  const columns = `coalesce((
      SELECT string_agg(format(CASE WHEN a.atttypid IN (${EXACT_HASH_TYPES})
          AND coalesce((SELECT co.collisdeterministic FROM pg_catalog.pg_collation co
                        WHERE co.oid = a.attcollation), true)
        THEN 'envsnap_row.%I' ELSE '(envsnap_row.%I::text COLLATE "C")' END, a.attname), ', ' ORDER BY a.attnum)
      FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')`;
  return `CASE WHEN current_setting('server_version_num')::int < 140000 THEN ${text}
    ELSE format('%L || coalesce(sum(hash_record_extended(ROW(%s), 0)), 0)', '${RECORD_HASH_PREFIX}', ${columns}) END`;
}

/**
 * psql script: one line per table, `<hex of schema.table>\t<rows>\t<checksum>`, then END_MARK.
 * `\gexec` runs each generated query in the same session (and transaction). No `rowHash`: counts
 * only.
 */
function statsScript(rowHash: PgRowHash | undefined): string {
  return `SELECT format('SELECT %L || chr(9) || count(*) || chr(9) || %s FROM ONLY %I.%I envsnap_row',
    encode(convert_to(n.nspname || '.' || c.relname, 'UTF8'), 'hex'), ${checksumSql(rowHash)}, n.nspname, c.relname)
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
 * Row count and (with a `rowHash`) row hash sum of every table of `db`, in `schema.table` order,
 * in a transaction of its own.
 *
 * @throws ToolFailedError when psql fails.
 */
export async function postgresqlTableStats(
  service: ServiceTarget,
  db: string,
  rowHash: PgRowHash | undefined,
  ctx: EngineContext,
): Promise<TableStats[]> {
  const psql = await pgTool(service, 'psql');
  const out = await runTool(psql.command, [...PSQL_ARGS, `--dbname=${conninfo(db)}`, '-f', '-'], {
    ...psql.options,
    input:
      RENDER_SETTINGS +
      'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n' +
      statsScript(rowHash) +
      'COMMIT;\n',
    signal: ctx.signal,
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
 * it (with `checksums`, the `record` row hash; `text` on servers before 14). Resolves once the
 * snapshot id is known (the stats keep running).
 *
 * @throws ToolFailedError when psql fails before exporting the snapshot.
 */
export async function startPostgresqlStats(
  service: ServiceTarget,
  db: string,
  checksums: boolean,
  ctx: EngineContext,
): Promise<PostgresqlStatsSession> {
  const psql = await pgTool(service, 'psql');
  const proc = spawnTool(psql.command, [...PSQL_ARGS, `--dbname=${conninfo(db)}`, '-f', '-'], {
    ...psql.options,
    stdio: ['pipe', 'pipe'],
    signal: ctx.signal,
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
    stdin.write(statsScript(checksums ? 'record' : undefined));
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
  const psql = await pgTool(service, 'psql');
  await runTool(psql.command, args, { ...psql.options, input: sql, signal });
}

/**
 * Drill: restores the archive (`pg_dump -Fc` bytes: raw, or the artifact as stored, which its own
 * decompressor writes straight into pg_restore as in a restore, so that the raw archive never
 * passes through the agent) into `<db>__envsnap_drill`,
 * computes the table stats there (with `rowHash`, the one that made the recorded checksums: see
 * {@link recordedRowHash}) and drops it again, whatever happens.
 *
 * @returns the stats of the scratch copy, and `cleanup`, which resolves with '' once the scratch
 *   database is dropped or with why it could not be.
 * @throws ToolFailedError when the restore fails, TaskAbortedError when cancelled.
 */
export async function drillPostgresql(
  service: ServiceTarget,
  db: string,
  input: ArchiveInput,
  rowHash: PgRowHash | undefined,
  ctx: EngineContext,
): Promise<{ tables: TableStats[]; cleanup: Promise<string> }> {
  const scratch = drillName(db, POSTGRES_NAME_LIMIT);
  let tables: TableStats[] = [];
  let failure: unknown;
  try {
    await psqlMaintenance(service, CREATE_SCRATCH_SQL, { scratch, db }, db, ctx.signal);
    const pgRestore = await pgTool(service, 'pg_restore');
    const restore = spawnTool(
      pgRestore.command,
      ['--exit-on-error', '--no-password', `--dbname=${conninfo(scratch)}`],
      { ...pgRestore.options, stdio: ['pipe', 'ignore'], signal: ctx.signal },
    );
    const unpacker = await startUnpacker(input, restore, ctx.signal).catch((err: unknown) => {
      restore.kill();
      throw err;
    });
    await feedToolThrough(input.stream, unpacker, restore);
    ctx.signal.throwIfAborted();
    ctx.log(`${db}: restored into the scratch database ${scratch}`);
    tables = await postgresqlTableStats(service, scratch, rowHash, ctx);
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
