/**
 * PostgreSQL, driven with its own client tools.
 *
 * Backup, in plan order:
 * 1. `globals.sql` (format `pg_globals`): `pg_dumpall --globals-only`, the roles (with their
 *    password hashes), role memberships, per-role settings and tablespaces, which no per-database
 *    dump holds. Needs a superuser (it reads `pg_authid`).
 * 2. one `<db>.pgdump` (format `pg_custom`) per database: `pg_dump -Fc --compress=0`. The custom
 *    format keeps everything of the database (schema, data, sequence values, large objects,
 *    ownership and grants, and the database's own properties: encoding, locale, comment,
 *    `ALTER DATABASE ... SET`, database-level grants). It is written uncompressed because the agent
 *    compresses every artifact with zstd afterwards. pg_dump reads the whole database from one
 *    snapshot (PostgreSQL manual, pg_dump: "consistent even if the database is being used
 *    concurrently").
 *
 * Which databases: those named in the config, or every database that accepts connections
 * (`datallowconn`) except `template0` and `template1`. `postgres` is included: it is an ordinary
 * database that applications and extensions (pg_cron, ...) do use, and its dump is tiny when empty.
 *
 * Restore:
 * - globals: replayed with `psql` without ON_ERROR_STOP, because roles that already exist make
 *   `CREATE ROLE` fail harmlessly while the `ALTER ROLE` after it still sets the backed-up
 *   attributes and password. The failures are counted into the activity log. Roles created after
 *   the backup are kept (dropping roles would fail on or orphan the objects they own). Note that
 *   the role the agent connects as gets its backed-up password back too.
 * - a database, safely (issue 5): the live database is not touched until the backup is loaded.
 *   1. A leftover `<db>__envsnap_staging` (from a restore that was killed) is dropped
 *      (`DROP DATABASE IF EXISTS ... WITH (FORCE)`, PostgreSQL 13+, which ends sessions on it),
 *      and so is the `<db>__envsnap_pre_restore` an earlier restore kept, both by the psql of step
 *      2a before it reads the script (so they cost no tool start or connection of their own). The older copy
 *      goes here, not after the load, because DROP DATABASE waits for an immediate checkpoint (PostgreSQL 15,
 *      dbcommands.c `dropdb`), which right after the load writes the freshly loaded database to
 *      disk first: 1.9 s after a 600 MB load, 0.3 s otherwise (measured). So a restore that fails
 *      has dropped the older pre-restore copy too; the live database is untouched either way.
 *   2. The archive is read once, as it streams, by two pg_restore runs (PostgreSQL manual,
 *      pg_restore `--section`: pre-data is every definition but indexes, triggers, rules and
 *      constraints other than validated check constraints; data is the table data, large-object
 *      contents and sequence values; post-data the rest):
 *      a. `pg_restore --create --section=pre-data --file=-` reads only the archive's header and
 *         table of contents (the start of a custom-format archive: the definitions are stored
 *         there, the data after them) and exits. Its SQL script streams through
 *         {@link rewritePgScriptToStaging} (it points the `CREATE DATABASE`, the database's
 *         properties, comment and grants, and the `\connect`s at the staging name, and refuses a
 *         script that would leave it) into `psql -v ON_ERROR_STOP=1`. So the staging database is
 *         created with the backup's encoding, locale, owner, settings and grants, and gets the
 *         schema. pg_restore has no option to restore under another name; `--create` is what
 *         restores those properties (they are left out without it, since PostgreSQL 11).
 *      b. `pg_restore --exit-on-error --section=data --section=post-data --dbname=<staging>`
 *         gets the archive again from its first byte: the bytes the first run was given are
 *         spooled to a file in the task's work directory ({@link StreamHeadReplay}: the table of
 *         contents and a few pipe buffers, mode 0600, removed on success, failure and abort) and
 *         replayed, then the rest of the stream follows. So the table data goes to the server as
 *         pg_restore sends it (COPY), not as script text parsed by psql, and the load still
 *         overlaps the download. Without `--create` nothing of this run can address another
 *         database. Its archive entries run as the connecting role, one transaction each; a
 *         failure leaves a half-filled staging database, which is dropped. This pg_restore is
 *         started beside step a: it reads the archive's table of contents before it connects, so
 *         it waits on its stdin until the staging database exists, and its start costs no wall.
 *      Each pg_restore reads the archive from a process of its own, whose stdout is the
 *      pg_restore's stdin: the artifact's decompressor (`zstd -d`) when the agent restores a
 *      stored artifact ({@link PostgresqlEngine.restoreCompressed}), `cat` for a raw archive. The
 *      agent handles, and spools, only the compressed bytes (4 MB for the 410 MB pgbench archive);
 *      the first decompressor dies of a broken pipe once the first pg_restore has exited, and the
 *      second one decompresses the artifact again from its start. Moving the raw archive through
 *      the agent cost 2.7-4.1 s of agent CPU per 410 MB, beside a server that needs both cores
 *      (docs/benchmarks-history.md, "PostgreSQL restore: where the time goes").
 *      Owners are kept (no `--no-owner`): the globals, restored first, bring the roles back. The
 *      split differs from one pg_restore run in one way: grants on tables and other objects
 *      (pre-data) are applied before the data, not after it, which matters only to a loading
 *      role that is not a superuser and whose own privileges the backup revokes. `-j` is not
 *      used: it needs a seekable file, and the archives envsnap makes are written to a pipe
 *      (into the compressor), so they hold no data offsets and every worker would scan the
 *      archive for its table (measured 2x slower on pgbench -s 40). The connecting role needs
 *      CREATEDB (or superuser).
 *   3. Once both steps succeeded, in **one transaction**, the sessions on `<db>` are ended (`pg_terminate_backend`, as
 *      `DROP ... WITH (FORCE)` did before), `<db>` is renamed `<db>__envsnap_pre_restore` and the
 *      staging database `<db>` (`ALTER DATABASE ... RENAME` runs inside a transaction block;
 *      connections that arrive meanwhile wait for its lock). A kill at any point before the commit
 *      rolls it back; the commit is atomic. A session that connects between the terminate and
 *      the rename makes the rename fail ("being accessed by other users"): the transaction then
 *      rolls back and is retried ({@link PG_SWAP_ATTEMPTS} times).
 *   The previous data stays in `<db>__envsnap_pre_restore` until
 *   {@link PostgresqlEngine.dropPreRestoreCopies} or the next restore of `<db>`. The result equals
 *   the backup: objects created after the backup are not in the restored database.
 * - errors: the first error stops psql (ON_ERROR_STOP) or pg_restore (`--exit-on-error`) and
 *   fails the unit with ToolFailedError carrying its stderr; a restore with a missing table is
 *   not a restore. Warnings and notices do not fail it. A failed load leaves the live database
 *   untouched; the staging database is dropped.
 *
 * Checked on PostgreSQL 15 with the Sakila port (enum type, domain, inherited payment partitions,
 * views, functions, triggers, sequences) plus a large object, bytea and UTF-8 data, database comment,
 * setting and grants: data, sequence values, `pg_dump --schema-only` output and database
 * properties are equal after a round trip, while another session was connected to the database.
 *
 * Secrets: the password goes to the tools through `PGPASSWORD` in their environment only; host or
 * socket directory, port and user through `PGHOST`, `PGPORT`, `PGUSER`. Database names are passed
 * as quoted `dbname='...'` connection strings (a name with `=` in it is otherwise parsed as one).
 */
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { errorMessage, TaskAbortedError, ToolFailedError } from '../../shared/errors.js';
import { startUnpacker, type ArchiveInput } from '../compression.js';
import { feedToolThrough, isBrokenPipe, runTool, spawnTool, type ToolProcess } from '../tool-process.js';
import { artifactFileName } from './artifact-name.js';
import type {
  CompressedInput,
  DumpProcess,
  DumpRun,
  DumpUnit,
  Engine,
  EngineContext,
  ServiceTarget,
} from './engine.js';
import { pgClient } from './pg-client.js';
import { rewritePgScriptToStaging } from './postgresql-script-rewrite.js';
import {
  isPreRestoreName,
  isRestoreWorkName,
  POSTGRES_NAME_LIMIT,
  preRestoreName,
  stagingName,
} from './staging-names.js';
import { StreamHeadReplay } from './stream-head-replay.js';

const DEBIAN_PACKAGE = 'postgresql-client';

/** The unit that always comes first in a PostgreSQL plan. */
export const PG_GLOBALS_UNIT: Readonly<DumpUnit> = {
  database: '',
  format: 'pg_globals',
  fileName: 'globals.sql',
};

/** Databases never planned unless named in the config. */
export const PG_SKIPPED_DATABASES: readonly string[] = ['template0', 'template1'];

const LIST_DATABASES_SQL = `SELECT datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY datname`;
const ALL_DATABASES_SQL = `SELECT datname FROM pg_catalog.pg_database ORDER BY datname`;

/** How often the swap transaction is tried when a session connects between terminate and rename. */
export const PG_SWAP_ATTEMPTS = 5;

/** How long cleanup after a failed restore, and the swap, may take, in milliseconds. */
const STEADY_TIMEOUT_MS = 10 * 60_000;

/**
 * psql script: drops the database named by the SQL text expression `name` (e.g. `:'db'`, a psql
 * variable) if it exists, ending other sessions on it on PostgreSQL 13+ (`WITH (FORCE)`). Runs
 * outside a transaction block.
 */
function dropIfExistsSql(name: string): string {
  return `SELECT CASE WHEN current_setting('server_version_num')::int >= 130000
  THEN format('DROP DATABASE IF EXISTS %I WITH (FORCE)', ${name})
  ELSE format('DROP DATABASE IF EXISTS %I', ${name}) END
\\gexec
`;
}

/**
 * A database name as an SQL text expression that needs no quoting and no psql variable: its UTF-8
 * bytes in hex, decoded by the server.
 */
function nameExpression(name: string): string {
  return `convert_from(decode('${Buffer.from(name, 'utf8').toString('hex')}', 'hex'), 'UTF8')`;
}

/** What the swap prints (its own line) when the live database existed and became `pre`. */
const SWAP_EXISTED_MARK = 'envsnap-swap-existed';

/**
 * The swap (psql variables `db`, `staging`, `pre`), in one psql session so that it costs one tool
 * start and one connection: first drops `pre` if it exists (the load's session dropped the older
 * copy already, so this finds nothing unless a session recreated it meanwhile; `DROP DATABASE`
 * runs outside a transaction block), then, in one transaction, ends the sessions on the
 * live and the staging database, prints {@link SWAP_EXISTED_MARK} when the live one exists, renames
 * it to `pre` and the staging one to `db`. `ALTER DATABASE ... RENAME` waits up to 5 s for
 * terminated sessions to exit.
 */
const SWAP_SQL = `${dropIfExistsSql(":'pre'")}BEGIN;
SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity
  WHERE datname IN (:'db', :'staging') AND pid <> pg_catalog.pg_backend_pid();
SELECT '${SWAP_EXISTED_MARK}' WHERE EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'db');
SELECT format('ALTER DATABASE %I RENAME TO %I', :'db', :'pre')
  WHERE EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'db')
\\gexec
SELECT format('ALTER DATABASE %I RENAME TO %I', :'staging', :'db')
\\gexec
COMMIT;
`;

/** Drops `:db` (a psql variable) if it exists, ending other sessions on PostgreSQL 13+. */
const DROP_DATABASE_SQL = dropIfExistsSql(":'db'");

/** The engine for services of kind `postgresql`. */
export class PostgresqlEngine implements Engine {
  readonly consistency =
    'each database is dumped from one snapshot (pg_dump): consistent within the database; the globals ' +
    'and the databases are dumped one after another, not at one instant';

  async plan(service: ServiceTarget, ctx: EngineContext): Promise<DumpUnit[]> {
    const databases =
      service.databases.length > 0 ? service.databases : await this.listDatabases(service, ctx);
    return [
      { ...PG_GLOBALS_UNIT },
      ...databases.map((database): DumpUnit => ({
        database,
        format: 'pg_custom',
        fileName: artifactFileName(database, '.pgdump'),
      })),
    ];
  }

  dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext): Promise<DumpProcess>;
  dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext, into: Writable): Promise<DumpRun>;
  async dump(
    service: ServiceTarget,
    unit: DumpUnit,
    ctx: EngineContext,
    into?: Writable,
  ): Promise<DumpProcess | DumpRun> {
    const [cmd, args] =
      unit.format === 'pg_globals'
        ? ['pg_dumpall', ['--globals-only', '--no-password']]
        : [
            'pg_dump',
            [
              // 'sql' units are db-dump's plain SQL (ece-tools style .sql.gz); backups use the custom format.
              unit.format === 'sql' ? '--format=plain' : '--format=custom',
              // Uncompressed, PostgreSQL 15's pg_dump writes each row as a data block of its own
              // (10,000 rows: 10,001 blocks of 5-87 bytes), and pg_restore sends each to the server
              // as one COPY message: on the bench's 4M-row table its restore takes 2.0-2.3 s of
              // client CPU (with zstd -d) against 0.6-0.7 s for a gzip-compressed archive, the
              // server's COPY the same. Later pg_dump releases buffer these blocks (compress_none.c).
              '--compress=0',
              '--no-password',
              ...(unit.snapshot ? [`--snapshot=${unit.snapshot}`] : []),
              `--dbname=${conninfo(unit.database)}`,
            ],
          ];
    const tool = await pgTool(service, cmd);
    const proc = spawnTool(tool.command, args, {
      ...tool.options,
      stdio: ['ignore', into ?? 'pipe'],
      signal: ctx.signal,
    });
    if (into) {
      into.destroy(); // the tool holds the pipe now (see Engine.dump)
      return { wait: () => proc.wait(), kill: () => proc.kill() };
    }
    const stdout = proc.child.stdout;
    if (!stdout) throw new Error(`${cmd} started without a stdout pipe`);
    return { stdout, wait: () => proc.wait(), kill: () => proc.kill() };
  }

  /**
   * Restores the globals, or one database through `<db>__envsnap_staging` and a swap, keeping the
   * previous data as `<db>__envsnap_pre_restore` (see the file comment), from the raw archive:
   * the tools read it through `cat`, as they read a stored artifact through its decompressor
   * ({@link restoreCompressed}). Rejects with ToolFailedError (the live database is then as it
   * was), ArtifactCorruptError or TaskAbortedError.
   */
  restore(service: ServiceTarget, unit: DumpUnit, input: Readable, ctx: EngineContext): Promise<void> {
    return this.restoreFrom(service, unit, { stream: input }, ctx);
  }

  /**
   * {@link restore} from the artifact as stored: the decompressor writes straight into the psql
   * or pg_restore that reads it, so the raw archive never passes through the agent.
   */
  restoreCompressed(
    service: ServiceTarget,
    unit: DumpUnit,
    input: CompressedInput,
    ctx: EngineContext,
  ): Promise<void> {
    return this.restoreFrom(service, unit, input, ctx);
  }

  private async restoreFrom(
    service: ServiceTarget,
    unit: DumpUnit,
    input: ArchiveInput,
    ctx: EngineContext,
  ): Promise<void> {
    if (unit.format === 'pg_globals') return this.restoreGlobals(service, input, ctx);
    const db = unit.database;
    const staging = stagingName(db, POSTGRES_NAME_LIMIT);
    const pre = preRestoreName(db, POSTGRES_NAME_LIMIT);
    const maintenance = maintenanceDatabase(db);
    try {
      await this.load(service, db, staging, pre, maintenance, input, ctx);
      ctx.signal.throwIfAborted();
      // From here on the work is short and runs to its end: it is not tied to the task's signal.
      const steady = AbortSignal.timeout(STEADY_TIMEOUT_MS);
      const existed = await this.swap(service, db, staging, pre, maintenance, steady);
      ctx.log(
        existed
          ? `${db}: restored through ${staging}; the previous data is kept in ${pre}`
          : `${db}: restored through ${staging} (the database did not exist before)`,
      );
    } catch (err) {
      // Safe whatever failed: until the swap commits the staging database is apart from the live
      // one, and once it has committed no database has the staging name any more.
      await this.dropDatabase(service, staging, maintenance, AbortSignal.timeout(STEADY_TIMEOUT_MS)).catch(
        (cleanupErr: unknown) => ctx.log(`${db}: could not drop ${staging}: ${errorMessage(cleanupErr)}`),
      );
      if (ctx.signal.aborted && !(err instanceof TaskAbortedError))
        throw new TaskAbortedError(`restore of ${db} was stopped`, { cause: err });
      throw err;
    }
  }

  /**
   * Drops the pre-restore copies kept by restores: `<db>__envsnap_pre_restore` for each database
   * named in the config, or every such database when the config names none (`WITH (FORCE)`).
   * Resolves with the names dropped. Rejects with ToolFailedError.
   */
  async dropPreRestoreCopies(service: ServiceTarget, ctx: EngineContext): Promise<string[]> {
    const wanted =
      service.databases.length > 0
        ? new Set(service.databases.map((db) => preRestoreName(db, POSTGRES_NAME_LIMIT)))
        : null;
    const names = (await this.queryDatabases(service, ALL_DATABASES_SQL, ctx)).filter(
      (name) => isPreRestoreName(name) && (wanted === null || wanted.has(name)),
    );
    for (const name of names) await this.dropDatabase(service, name, 'postgres', ctx.signal);
    return names;
  }

  /**
   * Step 2 of a database restore: the archive's pre-data section (the staging database with the
   * backup's properties, and the schema) as a script, rewritten to `staging`, into psql; then its
   * data and post-data sections straight into `staging` with pg_restore. Each pg_restore reads the
   * archive from its own unpacker ({@link startUnpacker}), fed the input from its first byte
   * ({@link StreamHeadReplay}). See the file comment.
   */
  private async load(
    service: ServiceTarget,
    db: string,
    staging: string,
    pre: string,
    maintenance: string,
    input: ArchiveInput,
    ctx: EngineContext,
  ): Promise<void> {
    const [archive, restore, psql] = await Promise.all([
      StreamHeadReplay.open(input.stream, ctx.workDir),
      pgTool(service, 'pg_restore'),
      pgTool(service, 'psql'),
    ]);
    const started: ToolProcess[] = [];
    try {
      // The pre-data step's tools start first (createStaging spawns them before its first await);
      // the data step's start beside it: pg_restore reads the archive's header and table of
      // contents before it connects, so it waits on its stdin (fed only after the staging
      // database exists), and its start is off the critical path.
      const staged = this.createStaging(db, staging, pre, maintenance, restore, psql, input, archive, ctx);
      staged.catch(() => {}); // awaited below, also when the data step's tools fail to start
      const fill = spawnTool(
        restore.command,
        [
          '--exit-on-error',
          '--no-password',
          '--section=data',
          '--section=post-data',
          `--dbname=${conninfo(staging)}`,
        ],
        { ...restore.options, stdio: ['pipe', 'ignore'], signal: ctx.signal },
      );
      started.push(fill);
      const fillUnpacker = await startUnpacker(input, fill, ctx.signal).catch(async (err: unknown) => {
        await staged.catch(() => {}); // never leave psql creating the staging database behind
        throw err;
      });
      started.push(fillUnpacker);
      await staged;
      ctx.signal.throwIfAborted();
      await feedToolThrough(await archive.replay(), fillUnpacker, fill);
      await archive.finished(); // the whole artifact went through, and matched its SHA-256
    } finally {
      for (const tool of started) tool.kill();
      await archive.dispose();
    }
  }

  /**
   * Step 2a: `pg_restore --create --section=pre-data --file=-`, which reads only the archive's
   * table of contents (the start of `archive`, through an unpacker of its own), rewritten to
   * `staging`, into psql.
   */
  private async createStaging(
    db: string,
    staging: string,
    pre: string,
    maintenance: string,
    restore: PgTool,
    psqlTool: PgTool,
    input: ArchiveInput,
    archive: StreamHeadReplay,
    ctx: EngineContext,
  ): Promise<void> {
    const script = spawnTool(restore.command, ['--create', '--section=pre-data', '--file=-'], {
      ...restore.options,
      stdio: ['pipe', 'pipe'],
      signal: ctx.signal,
    });
    const psql = spawnTool(
      psqlTool.command,
      ['-X', '-q', '--no-password', '-v', 'ON_ERROR_STOP=1', `--dbname=${conninfo(maintenance)}`, '-f', '-'],
      { ...psqlTool.options, stdio: ['pipe', 'ignore'], signal: ctx.signal },
    );
    let unpacker: ToolProcess | undefined;
    const stopAll = (): void => {
      script.kill();
      psql.kill();
      unpacker?.kill();
    };
    try {
      unpacker = await startUnpacker(input, script, ctx.signal);
    } catch (err) {
      stopAll();
      throw err;
    }
    const scriptOut = script.child.stdout;
    const psqlIn = psql.child.stdin;
    const unpackerIn = unpacker.child.stdin;
    if (!scriptOut || !psqlIn || !unpackerIn) throw new Error('pg_restore or psql started without pipes');
    // Step 1, in the loading session (no tool start or connection of its own): a leftover staging
    // database and the older pre-restore copy go first. psql runs them before the script that
    // follows on its stdin. The copy goes before the load, not after: see the file comment.
    psqlIn.write(dropIfExistsSql(nameExpression(staging)) + dropIfExistsSql(nameExpression(pre)));
    // Any failure stops every tool, so that psql never commits a script cut short. The unpacker
    // dies of a broken pipe once pg_restore has read the table of contents and exited: that ends
    // the head's feed.
    const fed = archive.feedHead(unpackerIn).catch((err: unknown) => {
      stopAll();
      throw err;
    });
    const rewritten = pipeline(scriptOut, rewritePgScriptToStaging(db, staging), psqlIn).catch(
      (err: unknown) => {
        stopAll();
        throw err;
      },
    );
    const [head, rewrite, restored, loaded, unpacked] = await Promise.allSettled([
      fed,
      rewritten,
      script.wait(),
      psql.wait().catch((err: unknown) => {
        script.kill();
        throw err;
      }),
      unpacker.wait(),
    ]);
    unpacker.kill();
    if (ctx.signal.aborted) throw new TaskAbortedError(`restore of ${db} was stopped`);
    // The most telling failure first: the input's or the rewriter's own error, then the tool that
    // failed on its own (psql with the SQL error; the unpacker on a corrupt artifact; pg_restore
    // on a damaged archive). The unpacker's failure alone fails nothing: pg_restore had what it
    // needed, and the data step reads the same bytes again.
    const failures = [head, rewrite, loaded, unpacked, restored].filter((r) => r.status === 'rejected');
    const reason = (r: PromiseSettledResult<unknown> | undefined): unknown =>
      r?.status === 'rejected' ? (r.reason as unknown) : undefined;
    // A pipe closed early (EPIPE, premature close) is the consequence of a tool that stopped, never the cause.
    const isPipe = (r: PromiseSettledResult<unknown>): boolean =>
      isBrokenPipe(reason(r)) ||
      /EPIPE|ERR_STREAM_PREMATURE_CLOSE|ECONNRESET/.test(
        String((reason(r) as NodeJS.ErrnoException | undefined)?.code ?? ''),
      );
    if (failures.some((r) => r !== unpacked)) {
      const own = failures.find(
        (r) =>
          !isPipe(r) &&
          (!(reason(r) instanceof ToolFailedError) || !/SIGKILL|SIGPIPE/.test(errorMessage(reason(r)))),
      );
      throw reason(own ?? failures.find((r) => r !== unpacked) ?? failures[0]);
    }
  }

  /**
   * Step 3: the swap transaction ({@link SWAP_SQL}), retried
   * while a session slips in between terminate and rename. Resolves with whether a live database
   * existed (and is now the pre-restore copy).
   */
  private async swap(
    service: ServiceTarget,
    db: string,
    staging: string,
    pre: string,
    maintenance: string,
    signal: AbortSignal,
  ): Promise<boolean> {
    const psql = await pgTool(service, 'psql');
    for (let attempt = 1; ; attempt++) {
      try {
        const out = await runTool(
          psql.command,
          [
            '-X',
            '-q',
            '-A',
            '-t',
            '--no-password',
            '-v',
            'ON_ERROR_STOP=1',
            '-v',
            `db=${db}`,
            '-v',
            `staging=${staging}`,
            '-v',
            `pre=${pre}`,
            `--dbname=${conninfo(maintenance)}`,
          ],
          { ...psql.options, input: SWAP_SQL, signal },
        );
        return out.split('\n').includes(SWAP_EXISTED_MARK);
      } catch (err) {
        if (attempt >= PG_SWAP_ATTEMPTS || !/being accessed by other users/.test(errorMessage(err)))
          throw err;
      }
    }
  }

  /** Drops `name` if it exists, ending the sessions on it (PostgreSQL 13+). */
  private async dropDatabase(
    service: ServiceTarget,
    name: string,
    maintenance: string,
    signal: AbortSignal,
  ): Promise<void> {
    const psql = await pgTool(service, 'psql');
    await runTool(
      psql.command,
      [
        '-X',
        '-q',
        '--no-password',
        '-v',
        'ON_ERROR_STOP=1',
        '-v',
        `db=${name}`,
        `--dbname=${conninfo(maintenance)}`,
      ],
      { ...psql.options, input: DROP_DATABASE_SQL, signal },
    );
  }

  private async restoreGlobals(
    service: ServiceTarget,
    input: ArchiveInput,
    ctx: EngineContext,
  ): Promise<void> {
    let alreadyExists = 0;
    const otherErrors: string[] = [];
    const psql = await pgTool(service, 'psql');
    const proc = spawnTool(
      psql.command,
      ['-X', '-q', '--no-password', `--dbname=${conninfo('postgres')}`, '-f', '-'],
      {
        ...psql.options,
        stdio: ['pipe', 'ignore'],
        signal: ctx.signal,
        onStderrLine: (line) => {
          const message = /\bERROR:\s+(.*)$/.exec(line)?.[1];
          if (message === undefined) return;
          if (/already exists$/.test(message)) alreadyExists++;
          else otherErrors.push(redactQuoted(message));
        },
      },
    );
    const unpacker = await startUnpacker(input, proc, ctx.signal).catch((err: unknown) => {
      proc.kill();
      throw err;
    });
    await feedToolThrough(input.stream, unpacker, proc);
    if (alreadyExists > 0) ctx.log(`globals: ${alreadyExists} statements skipped, the objects already exist`);
    if (otherErrors.length > 0) {
      const shown = otherErrors.slice(0, 5).join('; ');
      ctx.log(
        `globals: ${otherErrors.length} statements failed: ${shown}${otherErrors.length > 5 ? '; ...' : ''}`,
      );
    }
  }

  private async listDatabases(service: ServiceTarget, ctx: EngineContext): Promise<string[]> {
    return (await this.queryDatabases(service, LIST_DATABASES_SQL, ctx)).filter(
      (name) => !PG_SKIPPED_DATABASES.includes(name) && !isRestoreWorkName(name),
    );
  }

  private async queryDatabases(
    service: ServiceTarget,
    sql: string,
    ctx: { signal: AbortSignal },
  ): Promise<string[]> {
    const psql = await pgTool(service, 'psql');
    const out = await runTool(
      psql.command,
      [
        '-X',
        '--no-password',
        '-v',
        'ON_ERROR_STOP=1',
        '-A',
        '-t',
        '-0',
        `--dbname=${conninfo('postgres')}`,
        '-c',
        sql,
      ],
      { ...psql.options, signal: ctx.signal },
    );
    return out
      .split('\0')
      .map((name) => name.replace(/^\n/, ''))
      .filter((name) => name !== '');
  }
}

/** The database to connect to while `db` is created, dropped or renamed. */
function maintenanceDatabase(db: string): string {
  return db === 'postgres' ? 'template1' : 'postgres';
}

/**
 * The libpq environment for the tools: `PGHOST` (the socket directory when one is configured, else
 * the host), `PGPORT`, `PGUSER`, `PGPASSWORD`. `PGDATABASE` is cleared: every call names its
 * database.
 */
export function pgEnv(service: ServiceTarget): Record<string, string | undefined> {
  const c = service.connection;
  return {
    PGHOST: c.socket ?? c.host,
    PGPORT: c.port === undefined ? undefined : String(c.port),
    PGUSER: c.user,
    PGPASSWORD: c.password,
    PGDATABASE: undefined,
    PGAPPNAME: 'envsnap',
  };
}

/** How a PostgreSQL client program is started for a service: see {@link pgTool}. */
export interface PgTool {
  /** The program to spawn: a path past Debian's pg_wrapper, or the plain name (agent/engines/pg-client.ts). */
  command: string;
  /** The options every start of it shares: its environment ({@link pgEnv}), name in errors, Debian package. */
  options: { env: Record<string, string | undefined>; name: string; debianPackage: string };
}

/**
 * The PostgreSQL client program `name` (`psql`, `pg_dump`, `pg_dumpall`, `pg_restore`) for
 * `service`: the binary Debian's pg_wrapper would run, started without it ({@link pgClient}), with
 * the service's libpq environment. Never rejects.
 */
export async function pgTool(service: ServiceTarget, name: string): Promise<PgTool> {
  const client = await pgClient(name);
  return {
    command: client.command,
    options: { env: { ...pgEnv(service), ...client.env }, name, debianPackage: DEBIAN_PACKAGE },
  };
}

/**
 * A libpq connection string naming only the database, quoted so that any name is taken
 * literally (PostgreSQL manual, libpq "Keyword/Value Connection Strings": single quotes,
 * backslash escapes `\'` and `\\`).
 */
export function conninfo(database: string): string {
  return `dbname='${database.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** Replaces single-quoted literals in a server message, which could quote a password hash. */
function redactQuoted(message: string): string {
  return message.replace(/'[^']*'/g, "'...'").slice(0, 200);
}
