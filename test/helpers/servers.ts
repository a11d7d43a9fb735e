/**
 * Throwaway database servers for integration tests: MariaDB, PostgreSQL and Redis.
 *
 * Every server lives in its own temporary directory, listens on a free loopback port and is
 * stopped (then its directory removed) by `stop()`. The services already running on the machine
 * (ports 3306, 5432, 6379, ...) are never touched: clients are always given an explicit host,
 * port and option file, so no system-wide defaults (such as /etc/mysql/my.cnf's socket) apply.
 *
 * Long-running servers are spawned through `setpriv --pdeathsig KILL`, so the kernel kills them
 * if the test process dies, even by SIGKILL; an `exit` handler kills any survivor and removes
 * its directory as a last resort. A missing binary throws an Error naming its Debian package:
 * tests that need a server fail, they never skip.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, createReadStream, openSync, closeSync, rmSync } from 'node:fs';
import { access, chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { ConnectionConfig } from '../../shared/config.js';

/** Result of a finished command: its whole stdout and stderr, decoded as UTF-8. */
export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Options for {@link runCommand}. */
export interface RunOptions {
  /** Written to the command's stdin (then stdin is closed). */
  input?: string | Buffer;
  /** A file streamed to the command's stdin; exclusive with `input`. */
  inputFile?: string;
  /** Environment; defaults to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** Working directory; defaults to this process's. */
  cwd?: string;
  /** Kill the command (SIGKILL) and reject after this many milliseconds; default 120000. */
  timeoutMs?: number;
}

/** A running MariaDB server owned by the test. */
export interface MariadbServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Unix socket path (root@localhost also needs the password). */
  readonly socket: string;
  readonly user: 'root';
  /** Random root password, required over TCP and the socket. */
  readonly password: string;
  /** Temporary directory holding data, socket, logs; removed by `stop()`. */
  readonly dir: string;
  /** File in `dir` containing exactly the password (no trailing newline), mode 0600. */
  readonly passwordFile: string;
  /** Client option file (`[client]` user, password, host, port, protocol=TCP) for `--defaults-file`. */
  readonly defaultsFile: string;
  /** Server process id. */
  readonly pid: number;
  /**
   * Runs SQL (one or more statements) with the mariadb client in `--batch --skip-column-names`
   * mode, utf8mb4, over TCP with the password; resolves to raw stdout (tab-separated rows, with
   * `\t`, `\n`, `\\` and `\0` escaped by the client). Rejects on any SQL error.
   */
  query(sql: string, db?: string): Promise<string>;
  /** Like `query`, with the SQL streamed from a file. */
  queryFile(file: string, db?: string): Promise<string>;
  /** Clean shutdown (SIGTERM, SIGKILL after 60 s), then removes `dir`. Safe to call twice. */
  stop(): Promise<void>;
}

/** A running PostgreSQL server owned by the test (runs as the `postgres` OS user, trust auth). */
export interface PostgresServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Directory of the Unix socket (`.s.PGSQL.<port>`). */
  readonly socketDir: string;
  readonly user: 'postgres';
  /** Temporary directory holding data, socket, log; removed by `stop()`. */
  readonly dir: string;
  /** Server binaries directory (`/usr/lib/postgresql/<ver>/bin`), for pg_dump & co. of the same version. */
  readonly binDir: string;
  /** Server (postmaster) process id. */
  readonly pid: number;
  /**
   * Runs SQL through `psql -X -A -t -q -v ON_ERROR_STOP=1` over TCP as `postgres` (database
   * `postgres` unless `db` is given); resolves to raw stdout ('|'-separated, one row a line).
   */
  psql(sql: string, db?: string): Promise<string>;
  /** Like `psql`, running a script file (`-f file`). */
  psqlFile(file: string, db?: string): Promise<string>;
  /** Fast shutdown (SIGINT, SIGKILL after 60 s), then removes `dir`. Safe to call twice. */
  stop(): Promise<void>;
}

/** A running Redis server owned by the test. */
export interface RedisServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Random `requirepass` password (the default user's). */
  readonly password: string;
  /** File in `dir` containing exactly the password (no trailing newline), mode 0600. */
  readonly passwordFile: string;
  /** Server `dir` (where an RDB would be written) and home of config and log; removed by `stop()`. */
  readonly dir: string;
  /** The redis.conf the server was started with. */
  readonly configFile: string;
  /** Server process id. */
  readonly pid: number;
  /** A new authenticated ioredis client on database `db` (default 0); the caller must quit it. */
  client(db?: number): Redis;
  /** Shutdown without saving (SIGTERM, SIGKILL after 30 s), then removes `dir`. Safe to call twice. */
  stop(): Promise<void>;
}

/** Options shared by the `start*` functions. */
export interface StartOptions {
  /** Label used in the temporary directory name (e.g. 'source', 'target'). */
  name?: string;
  /** Redis: its `databases` setting (default 16). */
  redisDatabases?: number;
}

// ---------------------------------------------------------------------------------------------
// Last-resort cleanup of servers still running when the process ends.

interface LiveServer {
  child: ChildProcess;
  dir: string;
}

const live = new Set<LiveServer>();
let cleanupInstalled = false;

function killAllSync(): void {
  for (const server of live) {
    try {
      if (server.child.pid !== undefined) process.kill(server.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const server of live) {
    try {
      rmSync(server.dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // best effort: a dying server may still be writing
    }
  }
  live.clear();
}

function installCleanup(): void {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  process.on('exit', killAllSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      killAllSync();
      process.removeListener(signal, onSignal);
      // Re-raise so the default action (or another listener) still ends the process.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}

// ---------------------------------------------------------------------------------------------
// Small utilities.

/**
 * Finds a free TCP port on 127.0.0.1 by listening on port 0 and closing.
 *
 * @returns the port number (1024-65535). Another process could take it before it is used.
 */
export async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('freePort: unexpected listen address'));
        return;
      }
      const { port } = address;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

const binaryCache = new Map<string, string>();

/**
 * Resolves an executable by name on PATH (plus /usr/sbin, /sbin, /usr/local/sbin, where Debian
 * puts daemons), or checks an absolute path.
 *
 * @param name binary name (e.g. 'mariadbd') or absolute path
 * @param debianPackage the Debian package that provides it, named in the error
 * @returns absolute path of the executable
 * @throws Error `required binary "<name>" not found ... apt-get install <debianPackage>` when missing,
 *   so that a missing tool fails the test instead of skipping it
 */
export async function requireBinary(name: string, debianPackage: string): Promise<string> {
  const cached = binaryCache.get(name);
  if (cached !== undefined) return cached;
  const dirs = path.isAbsolute(name)
    ? ['']
    : [...(process.env.PATH ?? '').split(path.delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    if (dir === '' && !path.isAbsolute(name)) continue;
    const candidate = dir === '' ? name : path.join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      binaryCache.set(name, candidate);
      return candidate;
    } catch {
      // try the next directory
    }
  }
  throw new Error(
    `required binary "${name}" not found on PATH or in /usr/sbin; ` +
      `install the Debian package "${debianPackage}" (apt-get install -y ${debianPackage})`,
  );
}

/**
 * Runs a command to completion, capturing stdout and stderr.
 *
 * @param command executable (name or path)
 * @param args arguments (no shell involved)
 * @param options stdin content or file, environment, cwd, timeout (ms)
 * @returns stdout and stderr as UTF-8 strings
 * @throws Error naming the command, its exit code or signal and the tail of stderr, when it fails
 */
export async function runCommand(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let settled = false;
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(error);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new Error(`${path.basename(command)} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.once('error', fail);
    // A child that exits early closes its stdin: the exit code carries the real error.
    child.stdin.on('error', () => undefined);
    child.once('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) {
        resolve({ stdout, stderr });
      } else {
        const how = signal !== null ? `signal ${signal}` : `exit code ${code}`;
        reject(
          new Error(
            `${path.basename(command)} ${args.slice(0, 3).join(' ')} failed (${how}): ${tail(stderr)}`,
          ),
        );
      }
    });
    if (options.inputFile !== undefined) {
      const input = createReadStream(options.inputFile);
      input.once('error', (error) => {
        child.kill('SIGKILL');
        fail(error);
      });
      input.pipe(child.stdin);
    } else {
      child.stdin.end(options.input ?? '');
    }
  });
}

function tail(text: string, lines = 15): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

async function readTail(file: string): Promise<string> {
  try {
    return tail(await readFile(file, 'utf8'), 25);
  } catch {
    return '(no log)';
  }
}

/** A random password with characters that need quoting in shells, option files and URLs. */
function makePassword(): string {
  return `es-${randomBytes(9).toString('hex')}#$%&`;
}

function safeLabel(name: string | undefined): string {
  return name === undefined ? '' : `${name.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 20)}-`;
}

async function makeTempDir(kind: string, name: string | undefined): Promise<string> {
  return mkdtemp(path.join(tmpdir(), `envsnap-${kind}-${safeLabel(name)}`));
}

/** This process's environment without variables that would redirect database clients. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(PG|MYSQL|MARIADB|REDISCLI_)/.test(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (hasExited(child)) return true;
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(hasExited(child)), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Signals a server, escalates to SIGKILL after `graceMs`, then removes its directory. */
async function shutdown(server: LiveServer, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  const { child } = server;
  if (!hasExited(child)) {
    child.kill(signal);
    if (!(await waitForExit(child, graceMs))) {
      child.kill('SIGKILL');
      await waitForExit(child, 10_000);
    }
  }
  live.delete(server);
  await rm(server.dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Memoizes an async function so that second and later calls share the first call's promise. */
function once(fn: () => Promise<void>): () => Promise<void> {
  let promise: Promise<void> | undefined;
  return () => (promise ??= fn());
}

/**
 * Spawns a long-running server through `setpriv --pdeathsig KILL` (so it dies with this process),
 * with stdout and stderr appended to `logFile`, and registers it for last-resort cleanup.
 */
async function spawnServer(
  binary: string,
  args: readonly string[],
  dir: string,
  logFile: string,
  setprivExtra: readonly string[] = [],
  env: NodeJS.ProcessEnv = cleanEnv(),
): Promise<LiveServer> {
  const setpriv = await requireBinary('setpriv', 'util-linux');
  installCleanup();
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(setpriv, [...setprivExtra, '--pdeathsig', 'KILL', '--', binary, ...args], {
      cwd: dir,
      env,
      stdio: ['ignore', fd, fd],
    });
  } finally {
    closeSync(fd);
  }
  const server: LiveServer = { child, dir };
  live.add(server);
  child.once('exit', () => live.delete(server));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  return server;
}

/**
 * Polls `probe` every `intervalMs` until it resolves true; fails early if the server exits.
 *
 * @throws Error with `what` and the server's log tail on exit or after `timeoutMs`
 */
async function waitUntilReady(
  server: LiveServer,
  probe: () => Promise<boolean>,
  what: string,
  logFile: string,
  timeoutMs = 60_000,
  intervalMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (hasExited(server.child)) {
      throw new Error(
        `${what} exited during start-up (code ${server.child.exitCode}, signal ${server.child.signalCode}); ` +
          `log ${logFile}:\n${await readTail(logFile)}`,
      );
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new Error(`${what} not ready after ${timeoutMs} ms; log ${logFile}:\n${await readTail(logFile)}`);
    }
    await sleep(intervalMs);
  }
}

async function succeeds(command: string, args: readonly string[], options: RunOptions): Promise<boolean> {
  try {
    await runCommand(command, args, { timeoutMs: 5_000, ...options });
    return true;
  } catch {
    return false;
  }
}

/** Quotes a value for a MySQL/MariaDB option file (`key="value"`). */
function optionFileQuote(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Quotes a string as an SQL literal for MariaDB (default sql_mode, backslash escapes on). */
function sqlString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

// ---------------------------------------------------------------------------------------------
// MariaDB.

/** Server options that keep a throwaway MariaDB small and quick. */
const MARIADB_SMALL = [
  '--innodb-buffer-pool-size=64M',
  '--innodb-log-file-size=16M',
  '--innodb-log-buffer-size=4M',
  '--innodb-flush-log-at-trx-commit=2',
  '--key-buffer-size=4M',
  '--aria-pagecache-buffer-size=8M',
  '--max-connections=60',
  '--table-open-cache=400',
  '--performance-schema=OFF',
];

/**
 * Starts a throwaway MariaDB server: `mariadb-install-db` into a temp dir, then `mariadbd` as
 * root on a free loopback port, no binlog, 64 MiB buffer pool, utf8mb4 server charset. root gets
 * a random password (root@localhost and root@'%'; the other root and anonymous accounts are
 * dropped).
 *
 * @param options.name label for the temporary directory
 * @returns the server handle; call `stop()` when done
 * @throws Error naming the Debian package when mariadbd / mariadb-install-db / mariadb is missing,
 *   or with the error-log tail when the server does not come up (60 s)
 */
export async function startMariadb(options: StartOptions = {}): Promise<MariadbServer> {
  const [mariadbd, installDb, client, admin] = await Promise.all([
    requireBinary('mariadbd', 'mariadb-server'),
    requireBinary('mariadb-install-db', 'mariadb-server'),
    requireBinary('mariadb', 'mariadb-client'),
    requireBinary('mariadb-admin', 'mariadb-client'),
  ]);
  const dir = await makeTempDir('mariadb', options.name);
  let server: LiveServer | undefined;
  try {
    const datadir = path.join(dir, 'data');
    const tmp = path.join(dir, 'tmp');
    await mkdir(tmp);
    const socket = path.join(dir, 'mysqld.sock');
    const errorLog = path.join(dir, 'error.log');
    const port = await freePort();
    const password = makePassword();
    const passwordFile = path.join(dir, 'password');
    const defaultsFile = path.join(dir, 'client.cnf');
    await writeFile(passwordFile, password, { mode: 0o600 });

    await runCommand(
      installDb,
      [
        '--no-defaults',
        `--datadir=${datadir}`,
        '--user=root',
        '--auth-root-authentication-method=normal',
        '--skip-test-db',
        // Bootstrap servers running at once must not share temporary tables in /tmp.
        `--tmpdir=${tmp}`,
        '--innodb-buffer-pool-size=64M',
        '--innodb-log-file-size=16M',
      ],
      { cwd: dir, env: cleanEnv() },
    );
    server = await spawnServer(
      mariadbd,
      [
        '--no-defaults',
        `--datadir=${datadir}`,
        `--socket=${socket}`,
        `--port=${port}`,
        '--bind-address=127.0.0.1',
        '--user=root',
        `--pid-file=${path.join(dir, 'mysqld.pid')}`,
        `--log-error=${errorLog}`,
        `--tmpdir=${tmp}`,
        '--skip-log-bin',
        '--skip-name-resolve',
        '--character-set-server=utf8mb4',
        '--collation-server=utf8mb4_general_ci',
        ...MARIADB_SMALL,
      ],
      dir,
      path.join(dir, 'mariadbd.out'),
    );
    const proc = server;
    // `ping` succeeds as soon as the server answers, even before authentication.
    await waitUntilReady(
      proc,
      () =>
        succeeds(
          admin,
          ['--no-defaults', `--socket=${socket}`, '--user=root', '--connect-timeout=2', 'ping'],
          {
            env: cleanEnv(),
          },
        ),
      'mariadbd',
      errorLog,
    );

    // Passwordless root over the socket, once: keep root@localhost and root@'%', both with the password.
    const socketArgs = [
      '--no-defaults',
      `--socket=${socket}`,
      '--user=root',
      '--batch',
      '--skip-column-names',
    ];
    const others = (
      await runCommand(client, socketArgs, {
        input:
          "SELECT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.user " +
          "WHERE User = '' OR (User = 'root' AND Host <> 'localhost');",
        env: cleanEnv(),
      })
    ).stdout
      .split('\n')
      .filter((line) => line !== '');
    const pw = sqlString(password);
    const setup = [
      ...others.map((account) => `DROP USER ${account};`),
      `ALTER USER 'root'@'localhost' IDENTIFIED BY ${pw};`,
      `CREATE USER 'root'@'%' IDENTIFIED BY ${pw};`,
      `GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;`,
      `GRANT PROXY ON ''@'%' TO 'root'@'%' WITH GRANT OPTION;`,
      'FLUSH PRIVILEGES;',
    ].join('\n');
    await runCommand(client, socketArgs, { input: setup, env: cleanEnv() });

    await writeFile(
      defaultsFile,
      [
        '[client]',
        'user=root',
        `password=${optionFileQuote(password)}`,
        'host=127.0.0.1',
        `port=${port}`,
        'protocol=TCP',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const clientArgs = (db: string | undefined): string[] => [
      `--defaults-file=${defaultsFile}`,
      '--batch',
      '--skip-column-names',
      '--default-character-set=utf8mb4',
      ...(db === undefined ? [] : [`--database=${db}`]),
    ];
    const handle: MariadbServer = {
      host: '127.0.0.1',
      port,
      socket,
      user: 'root',
      password,
      dir,
      passwordFile,
      defaultsFile,
      pid: proc.child.pid ?? -1,
      async query(sql: string, db?: string): Promise<string> {
        return (await runCommand(client, clientArgs(db), { input: sql, env: cleanEnv() })).stdout;
      },
      async queryFile(file: string, db?: string): Promise<string> {
        return (await runCommand(client, clientArgs(db), { inputFile: file, env: cleanEnv() })).stdout;
      },
      stop: once(() => shutdown(proc, 'SIGTERM', 60_000)),
    };
    const check = await handle.query('SELECT CURRENT_USER();');
    if (check.trim() !== 'root@%')
      throw new Error(`mariadb: expected to connect as root@%, got ${check.trim()}`);
    return handle;
  } catch (error) {
    if (server !== undefined) await shutdown(server, 'SIGKILL', 0);
    else await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.

/**
 * Finds the newest PostgreSQL server binaries directory, `/usr/lib/postgresql/<version>/bin`
 * containing `initdb` (Debian layout; initdb, pg_ctl and postgres are not on PATH).
 *
 * @returns absolute path of the bin directory
 * @throws Error naming the Debian package `postgresql` when none is installed
 */
export async function postgresBinDir(): Promise<string> {
  const root = '/usr/lib/postgresql';
  let versions: string[] = [];
  try {
    versions = (await readdir(root)).filter((entry) => /^\d+(\.\d+)?$/.test(entry));
  } catch {
    // no PostgreSQL at all
  }
  versions.sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  for (const version of versions) {
    const bin = path.join(root, version, 'bin');
    try {
      await access(path.join(bin, 'initdb'), fsConstants.X_OK);
      await access(path.join(bin, 'postgres'), fsConstants.X_OK);
      return bin;
    } catch {
      // incomplete install: try an older version
    }
  }
  throw new Error(
    `PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in ${root}/<version>/bin; ` +
      'install the Debian package "postgresql" (apt-get install -y postgresql)',
  );
}

async function lookupUser(name: string): Promise<{ uid: number; gid: number }> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  for (const line of passwd.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === name && fields.length >= 4) {
      return { uid: Number(fields[2]), gid: Number(fields[3]) };
    }
  }
  throw new Error(`OS user "${name}" not found; install the Debian package "postgresql", which creates it`);
}

/**
 * Starts a throwaway PostgreSQL server (newest installed version): `initdb -A trust -U postgres
 * -E UTF8` through `runuser -u postgres`, then `postgres` as the postgres user on a free loopback
 * port with fsync off and 16 MB shared buffers. Connect as `postgres` without a password.
 *
 * @param options.name label for the temporary directory
 * @returns the server handle; call `stop()` when done
 * @throws Error naming the Debian package when initdb/postgres (postgresql), psql
 *   (postgresql-client) or runuser/setpriv (util-linux) is missing, or with the log tail on failure
 */
export async function startPostgres(options: StartOptions = {}): Promise<PostgresServer> {
  const [binDir, runuser] = await Promise.all([postgresBinDir(), requireBinary('runuser', 'util-linux')]);
  // The version-matched psql skips Debian's pg_wrapper (a Perl script, ~30 ms a call).
  const psqlBin = await requireBinary(path.join(binDir, 'psql'), 'postgresql-client').catch(() =>
    requireBinary('psql', 'postgresql-client'),
  );
  const { uid, gid } = await lookupUser('postgres');
  const dir = await makeTempDir('pg', options.name);
  let server: LiveServer | undefined;
  try {
    // mkdtemp makes 0700 dirs: let the postgres user traverse ours, and own what it writes.
    await chmod(dir, 0o755);
    const data = path.join(dir, 'data');
    const socketDir = path.join(dir, 'run');
    for (const sub of [data, socketDir]) {
      await mkdir(sub, { mode: 0o700 });
      await chown(sub, uid, gid);
    }
    const logFile = path.join(dir, 'postgres.log');
    const port = await freePort();
    const env = cleanEnv({ LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' });
    await runCommand(
      runuser,
      [
        '-u',
        'postgres',
        '--',
        path.join(binDir, 'initdb'),
        '-D',
        data,
        '-A',
        'trust',
        '-U',
        'postgres',
        '-E',
        'UTF8',
        '--locale=C.UTF-8',
        '--no-sync',
      ],
      { cwd: dir, env },
    );
    server = await spawnServer(
      path.join(binDir, 'postgres'),
      [
        '-D',
        data,
        '-p',
        String(port),
        '-k',
        socketDir,
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        'fsync=off',
        '-c',
        'synchronous_commit=off',
        '-c',
        'full_page_writes=off',
        '-c',
        'shared_buffers=16MB',
        '-c',
        'max_connections=40',
        '-c',
        'logging_collector=off',
      ],
      dir,
      logFile,
      // Drop to the postgres user (it refuses root) without an intermediate process.
      ['--reuid=postgres', '--regid=postgres', '--init-groups'],
      env,
    );
    const proc = server;
    const psqlArgs = (db: string | undefined): string[] => [
      '-X',
      '-A',
      '-t',
      '-q',
      '-v',
      'ON_ERROR_STOP=1',
      '-h',
      '127.0.0.1',
      '-p',
      String(port),
      '-U',
      'postgres',
      '-d',
      db ?? 'postgres',
    ];
    const clientEnv = cleanEnv({ PGCONNECT_TIMEOUT: '5' });
    await waitUntilReady(
      proc,
      () => succeeds(psqlBin, [...psqlArgs(undefined), '-c', 'SELECT 1'], { env: clientEnv }),
      'postgres',
      logFile,
    );
    return {
      host: '127.0.0.1',
      port,
      socketDir,
      user: 'postgres',
      dir,
      binDir,
      pid: proc.child.pid ?? -1,
      async psql(sql: string, db?: string): Promise<string> {
        return (await runCommand(psqlBin, [...psqlArgs(db), '-f', '-'], { input: sql, env: clientEnv }))
          .stdout;
      },
      async psqlFile(file: string, db?: string): Promise<string> {
        return (await runCommand(psqlBin, [...psqlArgs(db), '-f', file], { env: clientEnv })).stdout;
      },
      stop: once(() => shutdown(proc, 'SIGINT', 60_000)),
    };
  } catch (error) {
    if (server !== undefined) await shutdown(server, 'SIGKILL', 0);
    else await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Redis.

/**
 * Starts a throwaway Redis server: `redis-server <dir>/redis.conf` with port, bind 127.0.0.1,
 * `dir`, `save ""`, `appendonly no`, `daemonize no` and a random `requirepass` (kept in the
 * config file, off the command line).
 *
 * @param options.name label for the temporary directory
 * @returns the server handle; call `stop()` when done
 * @throws Error naming the Debian package when redis-server (redis-server) or redis-cli
 *   (redis-tools) is missing, or with the log tail when the server does not answer PING
 */
export async function startRedis(options: StartOptions = {}): Promise<RedisServer> {
  const [redisServer, redisCli] = await Promise.all([
    requireBinary('redis-server', 'redis-server'),
    requireBinary('redis-cli', 'redis-tools'),
  ]);
  const dir = await makeTempDir('redis', options.name);
  let server: LiveServer | undefined;
  try {
    const port = await freePort();
    const password = makePassword();
    const passwordFile = path.join(dir, 'password');
    const configFile = path.join(dir, 'redis.conf');
    const logFile = path.join(dir, 'redis.log');
    await writeFile(passwordFile, password, { mode: 0o600 });
    const quote = (value: string): string => `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
    await writeFile(
      configFile,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${quote(dir)}`,
        'save ""',
        'appendonly no',
        'daemonize no',
        `logfile ${quote(logFile)}`,
        `requirepass ${quote(password)}`,
        `databases ${options.redisDatabases ?? 16}`,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    server = await spawnServer(redisServer, [configFile], dir, path.join(dir, 'redis-server.out'));
    const proc = server;
    const cliEnv = cleanEnv({ REDISCLI_AUTH: password });
    await waitUntilReady(
      proc,
      async () => {
        const { stdout } = await runCommand(redisCli, ['-h', '127.0.0.1', '-p', String(port), 'PING'], {
          env: cliEnv,
          timeoutMs: 5_000,
        });
        return stdout.trim() === 'PONG';
      },
      'redis-server',
      logFile,
    );
    return {
      host: '127.0.0.1',
      port,
      password,
      passwordFile,
      dir,
      configFile,
      pid: proc.child.pid ?? -1,
      client(db = 0): Redis {
        return new Redis({ host: '127.0.0.1', port, password, db, maxRetriesPerRequest: 3 });
      },
      stop: once(() => shutdown(proc, 'SIGTERM', 30_000)),
    };
  } catch (error) {
    if (server !== undefined) await shutdown(server, 'SIGKILL', 0);
    else await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Service connection configs: what a service entry's `connection:` takes, for these servers.

/**
 * The `connection:` of a config service entry for a throwaway MariaDB server: TCP on loopback as
 * root, the password read from the server's password file.
 *
 * @param m the server
 * @param overrides keys replacing the defaults, e.g. a `password_file` holding a wrong password
 * @returns `{ host: '127.0.0.1', port, user: 'root', password_file, ...overrides }`
 */
export function mariadbConnection(
  m: MariadbServer,
  overrides: Partial<ConnectionConfig> = {},
): ConnectionConfig {
  return { host: m.host, port: m.port, user: m.user, password_file: m.passwordFile, ...overrides };
}

/**
 * The `connection:` of a config service entry for a throwaway PostgreSQL server: its Unix socket
 * directory and port as `postgres` (trust auth, no password).
 *
 * @param pg the server
 * @param overrides keys replacing the defaults
 * @returns `{ socket: <socket dir>, port, user: 'postgres', ...overrides }`
 */
export function postgresConnection(
  pg: PostgresServer,
  overrides: Partial<ConnectionConfig> = {},
): ConnectionConfig {
  return { socket: pg.socketDir, port: pg.port, user: pg.user, ...overrides };
}

/**
 * The `connection:` of a config service entry for a throwaway Redis server: TCP on loopback, the
 * default user's password read from the server's password file.
 *
 * @param r the server
 * @param overrides keys replacing the defaults
 * @returns `{ host: '127.0.0.1', port, password_file, ...overrides }`
 */
export function redisConnection(r: RedisServer, overrides: Partial<ConnectionConfig> = {}): ConnectionConfig {
  return { host: r.host, port: r.port, password_file: r.passwordFile, ...overrides };
}
