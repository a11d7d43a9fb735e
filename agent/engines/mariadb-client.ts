/**
 * Running SQL through the `mariadb` (or `mysql`) command-line client, with the connection in a
 * temporary option file, and reading its `--batch` output.
 *
 * Secrets: user, password, host, port and socket go into an option file (mode 0600, created
 * exclusively in the task's work directory, removed by {@link MariadbClient.close}) passed as
 * `--defaults-extra-file`, which the manual requires to be the first argument. The password never
 * appears on a command line. SQL goes to the client's stdin, never its argv.
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { runTool, spawnTool } from '../tool-process.js';
import type { ResolvedConnection } from './engine.js';

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
export function unescapeBatchValue(value: string): string {
  return value.replace(/\\(.)/g, (_m, ch: string) => ({ n: '\n', t: '\t', '0': '\0', '\\': '\\' })[ch] ?? ch);
}

/** `name` as a MariaDB identifier in backquotes. */
export function quoteIdent(name: string): string {
  return '`' + name.replace(/`/g, '``') + '`';
}

/** `value` as a charset-independent string expression: `CONVERT(X'<utf-8 hex>' USING utf8mb4)`. */
export function hexString(value: string): string {
  return `CONVERT(X'${Buffer.from(value, 'utf8').toString('hex')}' USING utf8mb4)`;
}

/** The client options every call uses: utf8mb4 both ways, no `\0`/`\r\n` special-casing. */
const CLIENT_OPTIONS = ['--default-character-set=utf8mb4', '--binary-mode', '--max-allowed-packet=1G'];

/** One client binary with one connection's option file; {@link close} removes the file. */
export class MariadbClient {
  private constructor(
    readonly tool: string,
    readonly optionFile: string,
    private readonly debianPackage: string,
    private readonly signal: AbortSignal,
  ) {}

  /** Writes the option file for `conn` into `workDir` and returns a client using it. */
  static async open(
    tool: string,
    debianPackage: string,
    conn: ResolvedConnection,
    workDir: string,
    signal: AbortSignal,
  ): Promise<MariadbClient> {
    return new MariadbClient(tool, await writeOptionFile(conn, workDir), debianPackage, signal);
  }

  /** The arguments that start the client on this connection (option file first, as required). */
  args(...more: string[]): string[] {
    return [`--defaults-extra-file=${this.optionFile}`, ...CLIENT_OPTIONS, ...more];
  }

  /**
   * Runs `sql` (one or more statements, `DELIMITER` allowed) and returns the rows of every result
   * set, unescaped, without column names. Rejects with ToolFailedError on the first SQL error.
   */
  async rows(sql: string): Promise<string[][]> {
    const out = await runTool(this.tool, this.args('--batch', '--skip-column-names'), {
      input: sql,
      signal: this.signal,
      debianPackage: this.debianPackage,
    });
    return out
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => line.split('\t').map(unescapeBatchValue));
  }

  /**
   * Runs statements that each return exactly one row (`SHOW CREATE ...`) and returns those rows
   * keyed by column name, in order.
   */
  async singleRows(sql: string, expected: number): Promise<Record<string, string>[]> {
    const out = await runTool(this.tool, this.args('--batch'), {
      input: sql,
      signal: this.signal,
      debianPackage: this.debianPackage,
    });
    const lines = out.split('\n').filter((line) => line !== '');
    if (lines.length !== 2 * expected)
      throw new Error(`expected ${expected} rows with headers from the client, got ${lines.length} lines`);
    const rows: Record<string, string>[] = [];
    for (let i = 0; i < lines.length; i += 2) {
      const names = (lines[i] ?? '').split('\t');
      const values = (lines[i + 1] ?? '').split('\t').map(unescapeBatchValue);
      rows.push(Object.fromEntries(names.map((name, j) => [name, values[j] ?? ''])));
    }
    return rows;
  }

  /** Runs `sql`, ignoring any output. Rejects with ToolFailedError on the first SQL error. */
  async exec(sql: string): Promise<void> {
    const proc = spawnTool(this.tool, this.args(), {
      stdio: ['pipe', 'ignore'],
      signal: this.signal,
      debianPackage: this.debianPackage,
    });
    proc.child.stdin?.end(sql);
    await proc.wait();
  }

  /** Removes the option file. Safe to call twice. */
  async close(): Promise<void> {
    await rm(this.optionFile, { force: true });
  }
}
