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
 * Restore: the dump is piped into `mariadb --default-character-set=utf8mb4 --binary-mode
 * --max-allowed-packet=1G`. `--binary-mode` stops the client from treating `\0` and `\r\n` in the
 * input specially (MariaDB manual, mariadb client options), and `--max-allowed-packet` lets the
 * client send rows as large as the dump's extended INSERTs. Checked on MariaDB 10.11 with the
 * Sakila database plus BLOBs holding NUL/CR/LF/quote bytes, utf8mb4 emoji and latin1 text:
 * table checksums, routines, triggers, views and events equal after a round trip.
 *
 * Secrets: user, password, host, port and socket go into a temporary option file (mode 0600, in the
 * task's work directory, removed when the tool exits) passed as `--defaults-extra-file`, which the
 * manual requires to be the first argument. The password never appears on a command line.
 *
 * Not covered: accounts and grants (they live in the `mysql` system database, which is not
 * dumped), and tables in other databases than those planned.
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';

import { feedTool, firstToolOnPath, runTool, spawnTool, type ToolProcess } from '../tool-process.js';
import { artifactFileName } from './artifact-name.js';
import type {
  DumpProcess,
  DumpUnit,
  Engine,
  EngineContext,
  ResolvedConnection,
  ServiceTarget,
} from './engine.js';

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

  async dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext): Promise<DumpProcess> {
    const tool = await firstToolOnPath(this.tools.dump, this.tools.debianPackage);
    const optionFile = await writeOptionFile(service.connection, ctx.workDir);
    const proc = spawnTool(
      tool,
      [`--defaults-extra-file=${optionFile}`, ...MARIADB_DUMP_OPTIONS, '--databases', unit.database],
      { stdio: ['ignore', 'pipe'], signal: ctx.signal, debianPackage: this.tools.debianPackage },
    );
    return withOptionFileCleanup(proc, optionFile);
  }

  /** Pipes the dump into the client; the dump drops and recreates the database (see the file comment). */
  async restore(service: ServiceTarget, _unit: DumpUnit, input: Readable, ctx: EngineContext): Promise<void> {
    const tool = await firstToolOnPath(this.tools.client, this.tools.debianPackage);
    const optionFile = await writeOptionFile(service.connection, ctx.workDir);
    try {
      const proc = spawnTool(tool, [`--defaults-extra-file=${optionFile}`, ...MARIADB_RESTORE_OPTIONS], {
        stdio: ['pipe', 'ignore'],
        signal: ctx.signal,
        debianPackage: this.tools.debianPackage,
      });
      await feedTool(input, proc);
    } finally {
      await rm(optionFile, { force: true });
    }
  }

  private async listDatabases(service: ServiceTarget, ctx: EngineContext): Promise<string[]> {
    const tool = await firstToolOnPath(this.tools.client, this.tools.debianPackage);
    const optionFile = await writeOptionFile(service.connection, ctx.workDir);
    try {
      const out = await runTool(
        tool,
        [`--defaults-extra-file=${optionFile}`, '--batch', '--skip-column-names', '-e', 'SHOW DATABASES'],
        { signal: ctx.signal, debianPackage: this.tools.debianPackage },
      );
      return out
        .split('\n')
        .filter((line) => line !== '')
        .map(unescapeBatchValue)
        .filter((name) => !MARIADB_SYSTEM_DATABASES.includes(name.toLowerCase()));
    } finally {
      await rm(optionFile, { force: true });
    }
  }
}

/**
 * Writes a `[client]` option file with the connection (mode 0600, created exclusively) and returns
 * its path. Values are double-quoted with `\\`, `\"` and `\n` escapes, which the option-file parser
 * undoes (MariaDB manual, "Configuring MariaDB with Option Files", escape sequences), so that a
 * password with `#`, quotes or spaces survives. A socket selects `protocol=SOCKET`, a host
 * `protocol=TCP` (so that `localhost` with a port means TCP, not the default socket).
 */
export async function writeOptionFile(conn: ResolvedConnection, dir: string): Promise<string> {
  const lines = ['[client]'];
  const put = (key: string, value: string | number | undefined): void => {
    if (value !== undefined && value !== '') lines.push(`${key}=${quoteOptionValue(String(value))}`);
  };
  put('user', conn.user);
  put('password', conn.password);
  if (conn.socket) {
    put('socket', conn.socket);
    put('protocol', 'SOCKET');
  } else if (conn.host) {
    put('host', conn.host);
    put('port', conn.port);
    put('protocol', 'TCP');
  } else {
    put('port', conn.port);
  }
  const path = join(dir, `envsnap-client-${randomBytes(6).toString('hex')}.cnf`);
  await writeFile(path, lines.join('\n') + '\n', { mode: 0o600, flag: 'wx' });
  return path;
}

function quoteOptionValue(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\r/g, '\\r')}"`;
}

/** Undoes the escaping of `mariadb --batch` output (`\\`, `\t`, `\n`, `\0`). */
function unescapeBatchValue(value: string): string {
  return value.replace(/\\(.)/g, (_m, ch: string) => ({ n: '\n', t: '\t', '0': '\0', '\\': '\\' })[ch] ?? ch);
}

function withOptionFileCleanup(proc: ToolProcess, optionFile: string): DumpProcess {
  const stdout = proc.child.stdout;
  if (!stdout) throw new Error('dump tool started without a stdout pipe');
  const cleanup = (): Promise<void> => rm(optionFile, { force: true });
  const done = proc.wait().finally(cleanup);
  done.catch(() => {});
  return {
    stdout,
    wait: () => done,
    kill: () => {
      proc.kill();
      void cleanup();
    },
  };
}
