/**
 * Restore-drill stats for MariaDB/MySQL databases, and the drill's scratch restore.
 *
 * Stats (shared/drill-stats.ts): per base table (views are not data), `SELECT COUNT(*)` and, at
 * level `checksums`, `CHECKSUM TABLE ... EXTENDED`, which reads every row (MariaDB manual,
 * "CHECKSUM TABLE"). The checksum depends on the rows and the table's definition, which a restore
 * from the dump reproduces, so the scratch copy of an intact backup gives the same value on the
 * same server. They are taken while the dump runs (agent/backup-stats.ts), in other sessions than
 * mariadb-dump's own snapshot: they describe the dumped data exactly only when nothing writes
 * meanwhile, i.e. under the environment's quiesce hooks (basis `quiesced`). Otherwise (a `--live`
 * backup, or no quiesce hooks) the basis is `live` and a drill reports differences as
 * informational. Cost: two reads of every table (checked on the Sakila database: well under a
 * second; see docs/benchmarks.md for a large one).
 *
 * Drill: the dump streams through {@link rewriteDumpToStaging} into `<db>__envsnap_drill` (never the
 * live database or its pre-restore copy), the stats are computed there, and the scratch database is
 * dropped, on success, failure and cancellation alike.
 */
import type { Readable } from 'node:stream';

import type { TableStats } from '../../shared/drill-stats.js';
import { errorMessage, TaskAbortedError } from '../../shared/errors.js';
import { feedTool, firstToolOnPath, spawnTool } from '../tool-process.js';
import type { EngineContext, ResolvedConnection } from './engine.js';
import { hexString, MariadbClient, quoteIdent } from './mariadb-client.js';
import { rewriteDumpToStaging } from './mariadb-dump-rewrite.js';
import { drillName, MARIADB_NAME_LIMIT } from './staging-names.js';

/** How long dropping a drill's scratch database may take, ms (it is not tied to the task's signal). */
const DROP_TIMEOUT_MS = 120_000;

const TOOLS = {
  mariadb: { client: ['mariadb', 'mysql'], debianPackage: 'mariadb-client' },
  mysql: { client: ['mysql', 'mariadb'], debianPackage: 'default-mysql-client' },
} as const;

async function openClient(
  kind: 'mariadb' | 'mysql',
  conn: ResolvedConnection,
  ctx: EngineContext,
  signal: AbortSignal,
): Promise<MariadbClient> {
  const t = TOOLS[kind];
  const tool = await firstToolOnPath(t.client, t.debianPackage);
  return MariadbClient.open(tool, t.debianPackage, conn, ctx.workDir, signal);
}

/**
 * The schema objects of `db` that hold no rows but that a restore must bring back (views, stored
 * procedures and functions, triggers, events: what mariadb-dump's `--routines --triggers --events`
 * write), as sorted `<kind> <name>` strings, e.g. `procedure film_in_stock`, `trigger
 * customer_create_date`. Names only: their definitions name the database, which a drill's scratch
 * copy renames.
 */
function objectsSql(db: string): string {
  const d = hexString(db);
  return (
    `SELECT CONCAT('view ', TABLE_NAME) AS o FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ${d} ` +
    `UNION ALL SELECT CONCAT(LOWER(ROUTINE_TYPE), ' ', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ${d} ` +
    `UNION ALL SELECT CONCAT('trigger ', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ${d} ` +
    `UNION ALL SELECT CONCAT('event ', EVENT_NAME) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ${d} ` +
    `ORDER BY o;`
  );
}

/**
 * The drill stats of `db`: row count and (with `checksums`) `CHECKSUM TABLE ... EXTENDED` of every
 * base table, in table-name order, and its schema objects (see {@link objectsSql}).
 *
 * @throws ToolFailedError when a statement fails (e.g. the rights to read a table are missing).
 */
export async function mariadbStats(
  kind: 'mariadb' | 'mysql',
  conn: ResolvedConnection,
  db: string,
  checksums: boolean,
  ctx: EngineContext,
): Promise<{ tables: TableStats[]; objects: string[] }> {
  const client = await openClient(kind, conn, ctx, ctx.signal);
  try {
    const objects = (await client.rows(objectsSql(db))).map((r) => r[0] ?? '');
    return { tables: await tableStats(client, db, checksums), objects };
  } finally {
    await client.close();
  }
}

/** Row count and (with `checksums`) checksum of every base table of `db`, in table-name order. */
async function tableStats(client: MariadbClient, db: string, checksums: boolean): Promise<TableStats[]> {
  const tables = (
    await client.rows(
      `SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${hexString(db)} ` +
        `AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME;`,
    )
  ).map((r) => r[0] ?? '');
  if (tables.length === 0) return [];
  const sql = tables
    .map((t) => {
      const q = `${quoteIdent(db)}.${quoteIdent(t)}`;
      return `SELECT COUNT(*) FROM ${q};${checksums ? `\nCHECKSUM TABLE ${q} EXTENDED;` : ''}`;
    })
    .join('\n');
  const rows = await client.rows(sql);
  const per = checksums ? 2 : 1;
  if (rows.length !== tables.length * per)
    throw new Error(`expected ${tables.length * per} result rows from the client, got ${rows.length}`);
  return tables.map((name, i) => ({
    name,
    rows: Number(rows[i * per]?.[0] ?? 0),
    checksum: checksums ? (rows[i * per + 1]?.[1] ?? '') : '',
  }));
}

/**
 * Drill: loads the dump (raw SQL from `input`) into `<db>__envsnap_drill`, computes the table stats
 * there, and drops it again whatever happens. A leftover scratch database (from a drill that was
 * killed) is dropped first.
 *
 * @returns the stats of the scratch copy, keyed by table name as at backup time.
 * @throws ToolFailedError when loading fails, ArtifactCorruptError when the dump names another
 *   database, TaskAbortedError when cancelled.
 */
export async function drillMariadb(
  kind: 'mariadb' | 'mysql',
  conn: ResolvedConnection,
  db: string,
  input: Readable,
  checksums: boolean,
  ctx: EngineContext,
): Promise<{ tables: TableStats[]; objects: string[]; cleanup: Promise<string> }> {
  const scratch = drillName(db, MARIADB_NAME_LIMIT);
  const client = await openClient(kind, conn, ctx, ctx.signal);
  let result: { tables: TableStats[]; objects: string[] } | undefined;
  let failure: unknown;
  try {
    await client.exec(`DROP DATABASE IF EXISTS ${quoteIdent(scratch)};`);
    const load = spawnTool(client.tool, client.args(), {
      stdio: ['pipe', 'ignore'],
      signal: ctx.signal,
      debianPackage: TOOLS[kind].debianPackage,
    });
    const rewriter = rewriteDumpToStaging(db, scratch);
    await feedTool(input, load, rewriter);
    ctx.signal.throwIfAborted();
    ctx.log(`${db}: loaded into the scratch database ${scratch}`);
    result = await mariadbStats(kind, conn, scratch, checksums, ctx);
  } catch (err) {
    failure = ctx.signal.aborted ? new TaskAbortedError(`drill of ${db} was stopped`, { cause: err }) : err;
  } finally {
    await client.close();
  }
  const cleanup = dropScratch(kind, conn, scratch, ctx);
  if (failure !== undefined) {
    await cleanup;
    throw failure as Error;
  }
  return { tables: result?.tables ?? [], objects: result?.objects ?? [], cleanup };
}

/** Drops the scratch database; resolves with '' or the reason it could not (never rejects). */
async function dropScratch(
  kind: 'mariadb' | 'mysql',
  conn: ResolvedConnection,
  scratch: string,
  ctx: EngineContext,
): Promise<string> {
  try {
    const client = await openClient(kind, conn, ctx, AbortSignal.timeout(DROP_TIMEOUT_MS));
    try {
      await client.exec(`DROP DATABASE IF EXISTS ${quoteIdent(scratch)};`);
    } finally {
      await client.close();
    }
    ctx.log(`scratch database ${scratch} dropped`);
    return '';
  } catch (err) {
    const why = `could not drop the scratch database ${scratch}: ${errorMessage(err)}`;
    ctx.log(why);
    return why;
  }
}
