/**
 * MariaDB and MySQL, driven with their own client tools.
 *
 * Backup: one `mariadb-dump` (or `mysqldump`) per database, a logical SQL dump:
 *
 *     mariadb-dump --defaults-extra-file=F --single-transaction --quick --routines --triggers --events
 *       --hex-blob --default-character-set=utf8mb4 --add-drop-database --max-allowed-packet=1G --databases DB
 *
 * - `--single-transaction` dumps inside one REPEATABLE READ transaction: a consistent snapshot of
 *   InnoDB tables without locking writers; non-transactional tables (MyISAM, Aria) are read as they
 *   are while the dump runs (MariaDB manual, mariadb-dump, "--single-transaction").
 * - `--databases DB` writes `CREATE DATABASE` and `USE` into the dump, and `--add-drop-database`
 *   a `DROP DATABASE IF EXISTS` before them, so the file restores on its own and a restore removes
 *   tables, views and routines created after the backup: the database equals the backup.
 * - `--routines --triggers --events` keep stored procedures and functions, triggers and events;
 *   views are always dumped. `--hex-blob` writes binary columns as hex literals, so the dump is
 *   plain text whatever the data. `--quick` streams rows instead of buffering whole tables.
 *
 * Restore, safely (issue 5): the live database is never written while the dump loads.
 * 1. A leftover `<db>__envsnap_staging` (from a restore that was killed) is dropped.
 * 2. The dump streams through {@link rewriteDumpToStaging}, which points its `DROP DATABASE`,
 *    `CREATE DATABASE`, `USE` and `ALTER DATABASE` lines at `<db>__envsnap_staging` and removes a
 *    `<db>.` qualifier from trigger heads (refusing a dump that names any other database), into
 *    `mariadb --default-character-set=utf8mb4 --binary-mode --max-allowed-packet=1G`.
 *    `--binary-mode` stops the client from treating `\0` and `\r\n` in the input specially
 *    (MariaDB manual, mariadb client options), and `--max-allowed-packet` lets the client send
 *    rows as large as the dump's extended INSERTs. A failed or killed load leaves only the
 *    staging schema behind.
 * 3. Once the load succeeded, the previous `<db>__envsnap_pre_restore` is dropped and recreated
 *    empty, and the staging schema is swapped in ({@link planSwap}, mariadb-swap.ts): on MariaDB
 *    one compound statement that the server finishes even if the agent dies, and that undoes
 *    itself on error. The old tables end up in `<db>__envsnap_pre_restore`. The swap is not
 *    cancelled by an aborted task once started (it takes milliseconds).
 * 4. The staging schema (now without tables) is dropped, and the old views, routines, events
 *    (disabled) and triggers are recreated in `<db>__envsnap_pre_restore`, so that the copy is
 *    whole. It stays until {@link MariadbEngine.dropPreRestoreCopies} or the next restore.
 * The result equals the backup: tables, views, routines, triggers and events the backup does not
 * have are gone from `<db>` (checked on MariaDB 10.11 with the Sakila database plus BLOBs holding
 * NUL/CR/LF/quote bytes, utf8mb4 emoji and latin1 text: table checksums, routines, triggers, views
 * and events equal after a round trip). Needs, besides what the dump itself needs, the rights to
 * create and drop the two extra schemas and to rename tables between them.
 *
 * Secrets: user, password, host, port and socket go into a temporary option file (mode 0600, in the
 * task's work directory, removed when the tool exits) passed as `--defaults-extra-file`, which the
 * manual requires to be the first argument. The password never appears on a command line.
 *
 * Not covered: accounts and grants (they live in the `mysql` system database, which is not
 * dumped), and tables in other databases than those planned.
 */
import { rm } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';

import { errorMessage, TaskAbortedError } from '../../shared/errors.js';
import { feedTool, firstToolOnPath, spawnTool, type ToolProcess } from '../tool-process.js';
import { artifactFileName } from './artifact-name.js';
import type { DumpProcess, DumpRun, DumpUnit, Engine, EngineContext, ServiceTarget } from './engine.js';
import { hexString, MariadbClient, quoteIdent, writeOptionFile } from './mariadb-client.js';
import { rewriteDumpToStaging } from './mariadb-dump-rewrite.js';
import {
  planSwap,
  readSchema,
  renderPreRestoreCopy,
  renderSwapBlock,
  renderSwapScript,
  serverFlavor,
  SWAP_LOCK_WAIT_SECONDS,
} from './mariadb-swap.js';
import {
  isPreRestoreName,
  isRestoreWorkName,
  MARIADB_NAME_LIMIT,
  preRestoreName,
  stagingName,
} from './staging-names.js';

export { writeOptionFile } from './mariadb-client.js';

/**
 * Caps how long dropping a work schema waits for another session's locks (e.g. someone reading
 * the pre-restore copy in an open transaction), as the swap does; the server's default is a day.
 */
const CAP_LOCK_WAIT = `SET SESSION lock_wait_timeout = LEAST(@@global.lock_wait_timeout, ${SWAP_LOCK_WAIT_SECONDS});\n`;

/** How long cleanup after a failed restore may take, in milliseconds. */
const CLEANUP_TIMEOUT_MS = 120_000;
/** How long the swap and what follows it may take, in milliseconds (the swap waits for locks at most 120 s). */
const SWAP_TIMEOUT_MS = 30 * 60_000;

/** Databases that `plan` leaves out when the config names none: MariaDB's own system schemas. */
export const MARIADB_SYSTEM_DATABASES: readonly string[] = [
  'information_schema',
  'performance_schema',
  'mysql',
  'sys',
];

/** The options every dump is taken with (see the file comment). */
export const MARIADB_DUMP_OPTIONS: readonly string[] = [
  '--single-transaction',
  '--quick',
  '--routines',
  '--triggers',
  '--events',
  '--hex-blob',
  '--default-character-set=utf8mb4',
  '--add-drop-database',
  '--max-allowed-packet=1G',
];

/** The options the client loads a dump with (see the file comment). */
export const MARIADB_RESTORE_OPTIONS: readonly string[] = [
  '--default-character-set=utf8mb4',
  '--binary-mode',
  '--max-allowed-packet=1G',
];

interface ToolNames {
  dump: readonly string[];
  client: readonly string[];
  debianPackage: string;
}

const TOOLS: Record<'mariadb' | 'mysql', ToolNames> = {
  mariadb: {
    dump: ['mariadb-dump', 'mysqldump'],
    client: ['mariadb', 'mysql'],
    debianPackage: 'mariadb-client',
  },
  mysql: {
    dump: ['mysqldump', 'mariadb-dump'],
    client: ['mysql', 'mariadb'],
    debianPackage: 'default-mysql-client',
  },
};

/**
 * The engine for services of kind `mariadb` (prefers `mariadb-dump`/`mariadb`) and `mysql`
 * (prefers `mysqldump`/`mysql`); either falls back to the other names.
 */
export class MariadbEngine implements Engine {
  readonly consistency =
    'each database is dumped in one transaction (mariadb-dump --single-transaction): a consistent snapshot ' +
    'of its InnoDB tables; MyISAM, Aria and other non-transactional tables are not consistent if written ' +
    'during the dump; databases are dumped one after another, not at one instant';

  private readonly tools: ToolNames;

  constructor(kind: 'mariadb' | 'mysql' = 'mariadb') {
    this.tools = TOOLS[kind];
  }

  /** The configured databases, or every database but {@link MARIADB_SYSTEM_DATABASES}; `<db>.sql` each. */
  async plan(service: ServiceTarget, ctx: EngineContext): Promise<DumpUnit[]> {
    const databases =
      service.databases.length > 0 ? service.databases : await this.listDatabases(service, ctx);
    return databases.map((database) => ({
      database,
      format: 'sql',
      fileName: artifactFileName(database, '.sql'),
    }));
  }

  dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext): Promise<DumpProcess>;
  dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext, into: Writable): Promise<DumpRun>;
  async dump(
    service: ServiceTarget,
    unit: DumpUnit,
    ctx: EngineContext,
    into?: Writable,
  ): Promise<DumpProcess | DumpRun> {
    let tool: string;
    let optionFile: string;
    try {
      tool = await firstToolOnPath(this.tools.dump, this.tools.debianPackage);
      optionFile = await writeOptionFile(service.connection, ctx.workDir);
    } catch (err) {
      into?.destroy(); // the engine owns `into` (see Engine.dump)
      throw err;
    }
    const proc = spawnTool(
      tool,
      [`--defaults-extra-file=${optionFile}`, ...MARIADB_DUMP_OPTIONS, '--databases', unit.database],
      { stdio: ['ignore', into ?? 'pipe'], signal: ctx.signal, debianPackage: this.tools.debianPackage },
    );
    into?.destroy(); // the tool holds the pipe now
    return withOptionFileCleanup(proc, optionFile, into === undefined);
  }

  /**
   * Loads the dump into `<db>__envsnap_staging`, then swaps it in, keeping the previous data as
   * `<db>__envsnap_pre_restore` (see the file comment). Rejects with ToolFailedError (the load or
   * the swap failed; the live database is as it was), ArtifactCorruptError (the dump names another
   * database) or TaskAbortedError; the staging schema is dropped on failure.
   */
  async restore(service: ServiceTarget, unit: DumpUnit, input: Readable, ctx: EngineContext): Promise<void> {
    const db = unit.database;
    const staging = stagingName(db, MARIADB_NAME_LIMIT);
    const pre = preRestoreName(db, MARIADB_NAME_LIMIT);
    const client = await this.client(service, ctx, ctx.signal);
    let steady: MariadbClient | undefined;
    let swapped = false;
    let preCreated = false;
    try {
      await client.exec(`${CAP_LOCK_WAIT}DROP DATABASE IF EXISTS ${quoteIdent(staging)};`);
      const load = spawnTool(client.tool, client.args(), {
        stdio: ['pipe', 'ignore'],
        signal: ctx.signal,
        debianPackage: this.tools.debianPackage,
      });
      const rewriter = rewriteDumpToStaging(db, staging);
      await feedTool(input, load, rewriter);
      ctx.signal.throwIfAborted();

      const staged = await readSchema(client, staging);
      if (!staged) throw new Error(`the dump did not create ${staging}`);
      const live = await readSchema(client, db);
      const flavor = await serverFlavor(client);
      ctx.signal.throwIfAborted();
      if (live) {
        await client.exec(
          `${CAP_LOCK_WAIT}DROP DATABASE IF EXISTS ${quoteIdent(pre)};\n` +
            `CREATE DATABASE ${quoteIdent(pre)} CHARACTER SET ${live.charset} COLLATE ${live.collation};`,
        );
        preCreated = true;
      } else {
        await client.exec(
          `CREATE DATABASE IF NOT EXISTS ${quoteIdent(db)} CHARACTER SET ${staged.charset} COLLATE ${staged.collation};`,
        );
      }
      ctx.signal.throwIfAborted();
      const plan = planSwap(db, staging, pre, live, staged, flavor);
      // Once started, the swap runs to its end: it is not tied to the task's signal.
      steady = await this.client(service, ctx, AbortSignal.timeout(SWAP_TIMEOUT_MS));
      await steady.exec(flavor === 'mariadb' ? renderSwapBlock(db, plan) : renderSwapScript(db, plan));
      swapped = true;
      await steady.exec(`${CAP_LOCK_WAIT}DROP DATABASE IF EXISTS ${quoteIdent(staging)};`);
      if (live) {
        const copy = renderPreRestoreCopy(pre, live, flavor);
        const failed = await steady.rows(copy).then(
          (rows) => Number(rows[0]?.[0] ?? 0),
          (err: unknown) => {
            ctx.log(`${db}: completing the pre-restore copy failed: ${errorMessage(err)}`);
            return 0;
          },
        );
        if (failed > 0) ctx.log(`${db}: ${failed} views, routines, events or triggers not copied to ${pre}`);
        ctx.log(`${db}: restored through ${staging}; the previous data is kept in ${pre}`);
      } else {
        ctx.log(`${db}: restored through ${staging} (the database did not exist before)`);
      }
    } catch (err) {
      if (!swapped) await this.cleanUpFailedRestore(service, ctx, staging, preCreated ? pre : undefined);
      if (ctx.signal.aborted && !(err instanceof TaskAbortedError))
        throw new TaskAbortedError(`restore of ${db} was stopped`, { cause: err });
      throw err;
    } finally {
      await Promise.all([client.close(), steady?.close()]);
    }
  }

  /**
   * After a failed restore: drops the staging schema, and the pre-restore schema this restore
   * created if it holds no table (the swap was undone or never ran). Best effort: failures are
   * logged, not thrown.
   */
  private async cleanUpFailedRestore(
    service: ServiceTarget,
    ctx: EngineContext,
    staging: string,
    pre: string | undefined,
  ): Promise<void> {
    const cleanup = await this.client(service, ctx, AbortSignal.timeout(CLEANUP_TIMEOUT_MS));
    try {
      await cleanup.exec(`${CAP_LOCK_WAIT}DROP DATABASE IF EXISTS ${quoteIdent(staging)};`);
      if (pre !== undefined) {
        const [[tables = '1'] = []] = await cleanup.rows(
          `SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${hexString(pre)};`,
        );
        if (tables === '0') await cleanup.exec(`${CAP_LOCK_WAIT}DROP DATABASE IF EXISTS ${quoteIdent(pre)};`);
      }
    } catch (err) {
      ctx.log(`could not clean up ${staging} after the failed restore: ${errorMessage(err)}`);
    } finally {
      await cleanup.close();
    }
  }

  /**
   * Drops the pre-restore copies kept by restores: `<db>__envsnap_pre_restore` for each database
   * named in the config, or every such schema on the server when the config names none. Resolves
   * with the names dropped. Rejects with ToolFailedError.
   */
  async dropPreRestoreCopies(service: ServiceTarget, ctx: EngineContext): Promise<string[]> {
    const all = await this.listAllDatabases(service, ctx);
    const wanted =
      service.databases.length > 0
        ? new Set(service.databases.map((db) => preRestoreName(db, MARIADB_NAME_LIMIT)))
        : null;
    const names = all.filter((name) => isPreRestoreName(name) && (wanted === null || wanted.has(name)));
    if (names.length === 0) return [];
    const client = await this.client(service, ctx, ctx.signal);
    try {
      await client.exec(
        CAP_LOCK_WAIT + names.map((name) => `DROP DATABASE IF EXISTS ${quoteIdent(name)};`).join('\n'),
      );
    } finally {
      await client.close();
    }
    return names;
  }

  private async client(
    service: ServiceTarget,
    ctx: EngineContext,
    signal: AbortSignal,
  ): Promise<MariadbClient> {
    const tool = await firstToolOnPath(this.tools.client, this.tools.debianPackage);
    return MariadbClient.open(tool, this.tools.debianPackage, service.connection, ctx.workDir, signal);
  }

  private async listDatabases(service: ServiceTarget, ctx: EngineContext): Promise<string[]> {
    return (await this.listAllDatabases(service, ctx)).filter(
      (name) => !MARIADB_SYSTEM_DATABASES.includes(name.toLowerCase()) && !isRestoreWorkName(name),
    );
  }

  private async listAllDatabases(service: ServiceTarget, ctx: EngineContext): Promise<string[]> {
    const client = await this.client(service, ctx, ctx.signal);
    try {
      return (await client.rows('SHOW DATABASES;')).map((row) => row[0] ?? '').filter((name) => name !== '');
    } finally {
      await client.close();
    }
  }
}

function withOptionFileCleanup(proc: ToolProcess, optionFile: string, piped: boolean): DumpProcess | DumpRun {
  const stdout = proc.child.stdout;
  if (piped && !stdout) throw new Error('dump tool started without a stdout pipe');
  const cleanup = (): Promise<void> => rm(optionFile, { force: true });
  const done = proc.wait().finally(cleanup);
  done.catch(() => {});
  return {
    ...(piped ? { stdout: stdout! } : {}),
    wait: () => done,
    kill: () => {
      proc.kill();
      void cleanup();
    },
  };
}
