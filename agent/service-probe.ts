/**
 * Connects to a database or cache the way its engine does, and asks it what `envsnap doctor`
 * needs to know: the server's version, the databases that exist and, for PostgreSQL, whether the
 * role is a superuser. Secrets travel as in the engines: a MariaDB option file (mode 0600, removed
 * at once), `PGPASSWORD`, ioredis' AUTH; never a command line, never a message.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { ResolvedConnection, ServiceTarget } from './engines/engine.js';
import { writeOptionFile } from './engines/mariadb.js';
import { conninfo, pgEnv } from './engines/postgresql.js';
import { targetOptions } from './engines/redis.js';
import { KIND_TOOLS } from './tool-versions.js';
import { firstToolOnPath, runTool } from './tool-process.js';

/** How long one probe may take, milliseconds. */
export const PROBE_TIMEOUT_MS = 20_000;

/** What a probe learnt about a service's server. */
export interface ServiceProbe {
  /** As the server reports it, e.g. "10.11.19-MariaDB-0+deb12u1", "15.20", "7.0.15". */
  serverVersion: string;
  /** Numeric parts of the version (major first). */
  serverParts: number[];
  /** MariaDB or MySQL server (kinds mariadb and mysql). */
  flavour?: 'mariadb' | 'mysql';
  /** Databases on the server (MariaDB, PostgreSQL); empty for Redis. */
  databases: string[];
  /** PostgreSQL: whether the connecting role is a superuser. */
  superuser?: boolean;
  /**
   * Redis: seconds the server waits for more replicas before it sends the RDB of a diskless full
   * sync, which every backup (`redis-cli --rdb`) waits too: `repl-diskless-sync-delay` when
   * `repl-diskless-sync` is on and `repl-diskless-sync-max-replicas` is not 1 (Redis manual,
   * redis.conf "REPLICATION"), else 0. Undefined when `CONFIG GET` is refused.
   */
  rdbSyncDelaySeconds?: number;
}

/**
 * Probes one service.
 *
 * @param scratchDir a private directory for the MariaDB option file (created and removed here).
 * @throws ToolMissingError, ToolFailedError (the client's stderr: e.g. access denied), or an Error
 *   from ioredis or for a probe that took longer than {@link PROBE_TIMEOUT_MS}.
 */
export async function probeService(
  kind: ServiceTarget['kind'],
  connection: ResolvedConnection,
  scratchDir: string,
): Promise<ServiceProbe> {
  const signal = AbortSignal.timeout(PROBE_TIMEOUT_MS);
  try {
    if (kind === 'mariadb' || kind === 'mysql')
      return await probeMariadb(kind, connection, scratchDir, signal);
    if (kind === 'postgresql') return await probePostgres(connection, signal);
    return await probeRedis(connection);
  } catch (err) {
    if (signal.aborted) throw new Error(`no answer within ${PROBE_TIMEOUT_MS / 1000} s`, { cause: err });
    throw err;
  }
}

async function probeMariadb(
  kind: 'mariadb' | 'mysql',
  connection: ResolvedConnection,
  scratchDir: string,
  signal: AbortSignal,
): Promise<ServiceProbe> {
  const client = KIND_TOOLS[kind].find((t) => t.role === 'client')!;
  const tool = await firstToolOnPath(client.names, client.debianPackage);
  const dir = await mkdtemp(join(scratchDir, 'doctor-'));
  try {
    const optionFile = await writeOptionFile(connection, dir);
    const out = await runTool(
      tool,
      [
        `--defaults-extra-file=${optionFile}`,
        '--connect-timeout=10',
        '--batch',
        '--skip-column-names',
        '-e',
        'SELECT VERSION(); SHOW DATABASES',
      ],
      { signal, debianPackage: client.debianPackage },
    );
    const [version = '', ...databases] = out.split('\n').filter((l) => l !== '');
    return {
      serverVersion: version,
      serverParts: numericParts(version),
      flavour: /mariadb/i.test(version) ? 'mariadb' : 'mysql',
      // `--batch` escapes \\, \t, \n and \0 in values (as the engine undoes when it lists databases).
      databases: databases.map((d) =>
        d.replace(/\\(.)/g, (_m, ch: string) => ({ n: '\n', t: '\t', '0': '\0', '\\': '\\' })[ch] ?? ch),
      ),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function probePostgres(connection: ResolvedConnection, signal: AbortSignal): Promise<ServiceProbe> {
  const env = {
    ...pgEnv({ name: '', kind: 'postgresql', connection, databases: [] }),
    PGCONNECT_TIMEOUT: '10',
  };
  // -A -t -z -0: unaligned, tuples only, fields and records separated by NUL bytes.
  const psql = async (sql: string) =>
    (
      await runTool(
        'psql',
        [
          '-X',
          '--no-password',
          '-v',
          'ON_ERROR_STOP=1',
          '-A',
          '-t',
          '-z',
          '-0',
          `--dbname=${conninfo('postgres')}`,
          '-c',
          sql,
        ],
        { env, signal, debianPackage: 'postgresql-client' },
      )
    )
      .split('\0')
      .map((v) => v.replace(/^\n/, ''))
      .filter((v) => v !== '');
  const [version = '', superuser = ''] = await psql(
    `SELECT current_setting('server_version'), rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user`,
  );
  const databases = await psql('SELECT datname FROM pg_catalog.pg_database ORDER BY datname');
  return {
    serverVersion: version,
    serverParts: numericParts(version),
    databases,
    superuser: superuser === 't',
  };
}

async function probeRedis(connection: ResolvedConnection): Promise<ServiceProbe> {
  const client = new Redis({ ...targetOptions(connection), connectTimeout: 10_000, commandTimeout: 10_000 });
  // ioredis rejects connect() with a bare "Connection is closed."; the reason came as an 'error' event.
  let reason: Error | undefined;
  client.on('error', (err: Error) => (reason = err));
  try {
    await client.connect().catch((err: unknown) => {
      throw reason ?? err;
    });
    const info = await client.info('server');
    const version = /^redis_version:(\S+)/m.exec(info)?.[1] ?? '';
    return {
      serverVersion: version,
      serverParts: numericParts(version),
      databases: [],
      rdbSyncDelaySeconds: await rdbSyncDelay(client),
    };
  } finally {
    // After a failed connect the socket is gone; disconnect() would still wait ioredis'
    // disconnectTimeout (2 s) for it to close, keeping the process alive.
    if (client.status !== 'end') client.disconnect();
  }
}

/** "10.11.19-MariaDB-0+deb12u1" -> [10, 11, 19]; "15.20 (Debian ...)" -> [15, 20]. */
function numericParts(version: string): number[] {
  const m = /(\d+(?:\.\d+)*)/.exec(version);
  return m ? m[1]!.split('.').map(Number) : [];
}

/** See {@link ServiceProbe.rdbSyncDelaySeconds}; undefined when CONFIG is refused (ACLs, renamed). */
async function rdbSyncDelay(client: Redis): Promise<number | undefined> {
  try {
    const pairs = (await client.call('CONFIG', 'GET', 'repl-diskless-sync*')) as string[];
    const config = new Map<string, string>();
    for (let i = 0; i + 1 < pairs.length; i += 2) config.set(pairs[i]!, pairs[i + 1]!);
    if (config.get('repl-diskless-sync') !== 'yes') return 0;
    if (config.get('repl-diskless-sync-max-replicas') === '1') return 0;
    return Number(config.get('repl-diskless-sync-delay') ?? 0);
  } catch {
    return undefined;
  }
}
