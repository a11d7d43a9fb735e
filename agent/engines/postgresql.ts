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
 * - a database: dropped (`DROP DATABASE IF EXISTS ... WITH (FORCE)`, PostgreSQL 13+, which ends
 *   other sessions on it; plain DROP on older servers), then `pg_restore --create --exit-on-error`
 *   reads the archive from stdin: it recreates the database with its properties and owner, then
 *   everything in it. Dropping first is what makes the result equal the backup: `pg_restore --clean`
 *   alone would leave objects created after the backup in place. Owners are kept (no `--no-owner`):
 *   the globals, restored first, bring the roles back. Reading from stdin rules out `-j`. The
 *   connecting role needs CREATEDB (or superuser), and the target cluster the database's locale.
 * - errors: pg_restore continues past a failing statement by default and exits 1 at the end with
 *   "errors ignored on restore: N". A restore with a missing table is not a restore, so envsnap
 *   passes `--exit-on-error`: the first error stops it and fails the unit with ToolFailedError
 *   carrying pg_restore's stderr. Warnings (stderr lines that are not errors) do not change the
 *   exit status and are left alone. A failed restore leaves the database partly restored.
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
import type { Readable } from 'node:stream';

import { feedTool, runTool, spawnTool } from '../tool-process.js';
import { artifactFileName } from './artifact-name.js';
import type { DumpProcess, DumpUnit, Engine, EngineContext, ServiceTarget } from './engine.js';

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

/** Drops `:db` (a psql variable) if it exists, ending other sessions on PostgreSQL 13+. */
const DROP_DATABASE_SQL = `SELECT CASE WHEN current_setting('server_version_num')::int >= 130000
  THEN format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'db')
  ELSE format('DROP DATABASE IF EXISTS %I', :'db') END
\\gexec
`;

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

  // eslint-disable-next-line @typescript-eslint/require-await -- async so that a spawn error rejects
  async dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext): Promise<DumpProcess> {
    const [cmd, args] =
      unit.format === 'pg_globals'
        ? ['pg_dumpall', ['--globals-only', '--no-password']]
        : [
            'pg_dump',
            ['--format=custom', '--compress=0', '--no-password', `--dbname=${conninfo(unit.database)}`],
          ];
    const proc = spawnTool(cmd, args, {
      env: pgEnv(service),
      stdio: ['ignore', 'pipe'],
      signal: ctx.signal,
      debianPackage: DEBIAN_PACKAGE,
    });
    const stdout = proc.child.stdout;
    if (!stdout) throw new Error(`${cmd} started without a stdout pipe`);
    return { stdout, wait: () => proc.wait(), kill: () => proc.kill() };
  }

  async restore(service: ServiceTarget, unit: DumpUnit, input: Readable, ctx: EngineContext): Promise<void> {
    if (unit.format === 'pg_globals') return this.restoreGlobals(service, input, ctx);
    const maintenance = unit.database === 'postgres' ? 'template1' : 'postgres';
    await runTool(
      'psql',
      [
        '-X',
        '-q',
        '--no-password',
        '-v',
        'ON_ERROR_STOP=1',
        '-v',
        `db=${unit.database}`,
        `--dbname=${conninfo(maintenance)}`,
      ],
      { env: pgEnv(service), input: DROP_DATABASE_SQL, signal: ctx.signal, debianPackage: DEBIAN_PACKAGE },
    );
    const proc = spawnTool(
      'pg_restore',
      ['--create', '--exit-on-error', '--no-password', `--dbname=${conninfo(maintenance)}`],
      { env: pgEnv(service), stdio: ['pipe', 'ignore'], signal: ctx.signal, debianPackage: DEBIAN_PACKAGE },
    );
    await feedTool(input, proc);
  }

  private async restoreGlobals(service: ServiceTarget, input: Readable, ctx: EngineContext): Promise<void> {
    let alreadyExists = 0;
    const otherErrors: string[] = [];
    const proc = spawnTool(
      'psql',
      ['-X', '-q', '--no-password', `--dbname=${conninfo('postgres')}`, '-f', '-'],
      {
        env: pgEnv(service),
        stdio: ['pipe', 'ignore'],
        signal: ctx.signal,
        debianPackage: DEBIAN_PACKAGE,
        onStderrLine: (line) => {
          const message = /\bERROR:\s+(.*)$/.exec(line)?.[1];
          if (message === undefined) return;
          if (/already exists$/.test(message)) alreadyExists++;
          else otherErrors.push(redactQuoted(message));
        },
      },
    );
    await feedTool(input, proc);
    if (alreadyExists > 0) ctx.log(`globals: ${alreadyExists} statements skipped, the objects already exist`);
    if (otherErrors.length > 0) {
      const shown = otherErrors.slice(0, 5).join('; ');
      ctx.log(
        `globals: ${otherErrors.length} statements failed: ${shown}${otherErrors.length > 5 ? '; ...' : ''}`,
      );
    }
  }

  private async listDatabases(service: ServiceTarget, ctx: EngineContext): Promise<string[]> {
    const out = await runTool(
      'psql',
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
        LIST_DATABASES_SQL,
      ],
      { env: pgEnv(service), signal: ctx.signal, debianPackage: DEBIAN_PACKAGE },
    );
    return out
      .split('\0')
      .map((name) => name.replace(/^\n/, ''))
      .filter((name) => name !== '' && !PG_SKIPPED_DATABASES.includes(name));
  }
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
