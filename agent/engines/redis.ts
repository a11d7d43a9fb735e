/**
 * Redis: a point-in-time RDB snapshot, restored key by key.
 *
 * Backup: `redis-cli --rdb FILE` asks the server for the RDB it would send a new replica
 * (REPLCONF + SYNC), which the server produces with a fork: one consistent snapshot of every
 * database at one instant, functions included, without pausing clients (Redis manual, "Redis
 * persistence" and `redis-cli --rdb`). Needs the SYNC permission when ACLs are on. The unit is the
 * whole server (`dump.rdb`, format `rdb`); the config's `databases` list does not apply.
 * The RDB is written to a file in the task's work directory and streamed from there, then deleted:
 * `redis-cli --rdb -` (stdout) of Redis 7.0 leaves the 40-byte end-of-transfer mark of a diskless
 * sync at the end of its output, because it trims that mark with ftruncate(), which fails on a pipe
 * (checked with redis-cli 7.0.15: 236 bytes on stdout for a 196-byte RDB). A server with diskless
 * replication (the default since Redis 7.0) waits `repl-diskless-sync-delay` seconds (default 5)
 * for more replicas before it starts sending, so a dump takes at least that long.
 *
 * Restore: a running server can only load an RDB file when it restarts, and envsnap does not own the
 * server (its config, process manager, persistence files). So envsnap:
 * 1. writes the RDB to a file in the work directory;
 * 2. starts a temporary `redis-server` on a free loopback port, with a random password, `dir` set to
 *    that directory, `save ""` and `appendonly no`, which loads the file at start. A corrupt or too
 *    new RDB fails here, before the target is touched;
 * 3. on the target, runs `FLUSHALL` (restore makes the data equal to the backup: keys written since
 *    the backup are removed) and replaces the function libraries with the backup's (`FUNCTION DUMP` /
 *    `FUNCTION RESTORE ... FLUSH`, Redis 7+);
 * 4. for every database of the temporary server (`INFO keyspace`), walks all keys with `SCAN` and
 *    copies each with `DUMP` from the temporary server and `RESTORE key ttl payload REPLACE ABSTTL`
 *    on the target, where `ttl` is the key's absolute expiry from `PEXPIRETIME` (0 = none), so that
 *    a key keeps its exact expiry; keys that expired meanwhile are skipped. Both sides are pipelined,
 *    {@link REDIS_RESTORE_BATCH} keys per round trip;
 * 5. stops the temporary server and deletes the files, on success and on any error. The server
 *    runs under a watchdog shell that kills it when the agent's pipe to it closes, so it does not
 *    outlive an agent that is killed.
 *
 * What a failure or a kill leaves (issue 5, "safe restores"): before step 3 (writing the RDB,
 * starting and loading the temporary server), the target is untouched. From the `FLUSHALL` on, the target holds only
 * the keys copied so far: a failure or a kill of the agent during steps 3-4 leaves it partly
 * restored (a new restore starts over with FLUSHALL). A Redis restore cannot be made atomic
 * without owning the server: Redis loads a dataset as a whole only at start-up (RDB or AOF), which
 * means restarting the target with its files replaced (its config, process manager and
 * persistence belong to whoever runs it, not to envsnap). Within the protocol, `MULTI`/`EXEC`
 * around every `RESTORE` would be atomic but is queued whole in the server's memory and blocks
 * every other client while it runs; `SWAPDB` into spare database indexes (one MULTI of SWAPDBs)
 * needs indexes the application never uses and does not exist in Redis Cluster. Neither is done.
 * Nor does a Redis restore keep a pre-restore copy.
 * DUMP payloads carry the RDB version, so the target must run the same or a newer major version.
 * While it runs, the temporary server holds the whole dataset in memory on the agent's node, next to
 * the target's own. Not supported: Redis Cluster targets, and RDBs holding module data types
 * (the temporary server does not load modules).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';

import { Redis, type RedisOptions } from 'ioredis';

import { TaskAbortedError, ToolFailedError, ToolMissingError } from '../../shared/errors.js';
import { spawnTool, toolOnPath, type ToolProcess } from '../tool-process.js';
import type {
  DumpProcess,
  DumpRun,
  DumpUnit,
  Engine,
  EngineContext,
  ResolvedConnection,
  ServiceTarget,
} from './engine.js';

/** Keys copied per pipelined round trip during a restore. */
export const REDIS_RESTORE_BATCH = 500;

/** Databases the temporary restore server is configured with (the RDB may use more than the default 16). */
export const REDIS_TEMP_SERVER_DATABASES = 1024;

/** The only unit of a Redis plan. */
export const REDIS_UNIT: Readonly<DumpUnit> = { database: '', format: 'rdb', fileName: 'dump.rdb' };

const CLI_PACKAGE = 'redis-tools';
const SERVER_PACKAGE = 'redis-server';
const TEMP_SERVER_START_MS = 60_000;

/** The engine for services of kind `redis`. */
export class RedisEngine implements Engine {
  readonly consistency =
    'point-in-time snapshot of the whole server (the RDB Redis forks for a replica, fetched with redis-cli --rdb)';

  /** Always the one whole-server unit `dump.rdb`. */
  plan(): Promise<DumpUnit[]> {
    return Promise.resolve([{ ...REDIS_UNIT }]);
  }

  /**
   * `redis-cli --rdb` into a file in the task's work directory, then that file: as `stdout`, or
   * written into `into` (see Engine.dump). The file is removed when it has been read. Not
   * `--rdb -`: redis-cli 7.0 then also writes the 40-byte end marker of a diskless transfer to
   * stdout, after the RDB (it truncates it only from a file).
   */
  dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext): Promise<DumpProcess>;
  dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext, into: Writable): Promise<DumpRun>;
  async dump(
    service: ServiceTarget,
    _unit: DumpUnit,
    ctx: EngineContext,
    into?: Writable,
  ): Promise<DumpProcess | DumpRun> {
    let dir: string | undefined;
    const removeDir = (): Promise<void> =>
      dir ? rm(dir, { recursive: true, force: true }) : Promise.resolve();
    let file: string;
    try {
      dir = await mkdtemp(join(ctx.workDir, 'redis-dump-'));
      file = join(dir, 'dump.rdb');
      const cli = spawnTool('redis-cli', [...cliConnectionArgs(service.connection), '--rdb', file], {
        env: { REDISCLI_AUTH: service.connection.password },
        stdio: ['ignore', 'ignore'],
        signal: ctx.signal,
        debianPackage: CLI_PACKAGE,
      });
      await cli.wait();
    } catch (err) {
      into?.destroy(); // the engine owns `into`
      await removeDir();
      throw err;
    }
    const stdout = createReadStream(file, { highWaterMark: 1024 * 1024 });
    const onAbort = (): void => {
      stdout.destroy(new TaskAbortedError('redis dump was stopped'));
    };
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    const done = (into ? pipeline(stdout, into) : finished(stdout)).finally(async () => {
      ctx.signal.removeEventListener('abort', onAbort);
      await removeDir();
    });
    done.catch(() => {});
    const kill = (): void => {
      stdout.destroy();
      into?.destroy();
    };
    return into ? { wait: () => done, kill } : { stdout, wait: () => done, kill };
  }

  /** Redis restores keep no pre-restore copy (see the file comment): resolves with no names. */
  dropPreRestoreCopies(): Promise<string[]> {
    return Promise.resolve([]);
  }

  async restore(service: ServiceTarget, _unit: DumpUnit, input: Readable, ctx: EngineContext): Promise<void> {
    const dir = await mkdtemp(join(ctx.workDir, 'redis-restore-'));
    let server: TempServer | undefined;
    let target: Redis | undefined;
    try {
      await pipeline(input, createWriteStream(join(dir, 'dump.rdb'), { mode: 0o600 }), {
        signal: ctx.signal,
      });
      server = await startTempServer(dir, ctx.signal);
      target = new Redis(targetOptions(service.connection));
      target.on('error', () => {}); // failures reach us through the commands' promises
      await raceExit(target.connect(), server);
      const copied = await raceExit(copyAll(server.client, target, ctx.signal), server);
      ctx.log(`redis: restored ${copied.keys} keys in ${copied.databases} databases`);
    } catch (err) {
      if (ctx.signal.aborted) throw new TaskAbortedError('redis restore was stopped', { cause: err });
      throw err;
    } finally {
      target?.disconnect();
      if (server) await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }
}

/** redis-cli arguments for the connection; the password goes through REDISCLI_AUTH, never here. */
function cliConnectionArgs(conn: ResolvedConnection): string[] {
  const args = conn.socket
    ? ['-s', conn.socket]
    : ['-h', conn.host ?? '127.0.0.1', '-p', String(conn.port ?? 6379)];
  if (conn.user) args.push('--user', conn.user);
  return args;
}

/** ioredis options for the service's server (also used by `envsnap doctor` to probe it). */
export function targetOptions(conn: ResolvedConnection): RedisOptions {
  const where = conn.socket
    ? { path: conn.socket }
    : { host: conn.host ?? '127.0.0.1', port: conn.port ?? 6379 };
  return {
    ...where,
    username: conn.user,
    password: conn.password,
    lazyConnect: true,
    connectTimeout: 10_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  };
}

interface TempServer {
  client: Redis;
  /** Rejects with ToolFailedError when the server exits before `stop()`. */
  exited: Promise<never>;
  stop(): Promise<void>;
}

/** Starts redis-server on the RDB in `dir`, retrying on a port taken between probe and bind. */
async function startTempServer(dir: string, signal: AbortSignal): Promise<TempServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startTempServerOnce(dir, signal);
    } catch (err) {
      if (attempt >= 3 || !(err instanceof ToolFailedError) || !/Address already in use/.test(err.message))
        throw err;
    }
  }
}

/**
 * Runs `redis-server CONFIG` ("$@") under a watchdog: a background `cat` reads the shell's stdin
 * (a pipe from the agent, saved as fd 3 because a background job's stdin is /dev/null) and kills
 * the server when it ends, which happens when {@link TempServer.stop} closes it or when the agent
 * dies, `kill -9` included. Without it, a killed restore would leave a server behind holding the
 * whole dataset in memory. The shell exits with the server's status.
 */
const WATCHDOG = [
  'exec 3<&0',
  '"$@" </dev/null 3<&- &',
  'pid=$!',
  '{ cat <&3 >/dev/null 2>&1; kill -KILL "$pid" 2>/dev/null; } >/dev/null 2>&1 &',
  'exec 3<&-',
  'wait "$pid"',
].join('\n');

async function startTempServerOnce(dir: string, signal: AbortSignal): Promise<TempServer> {
  const port = await freeLoopbackPort();
  const password = randomBytes(24).toString('hex');
  const configFile = join(dir, 'redis.conf');
  const logFile = join(dir, 'redis.log');
  const config = [
    'bind 127.0.0.1',
    `port ${port}`,
    'protected-mode yes',
    `requirepass ${password}`,
    `dir ${quoteConfig(dir)}`,
    'dbfilename dump.rdb',
    'save ""',
    'appendonly no',
    'daemonize no',
    `databases ${REDIS_TEMP_SERVER_DATABASES}`,
    'loglevel warning',
    // A file, not /dev/stderr: the child's stderr is a socket, which redis-server cannot open.
    `logfile ${quoteConfig(logFile)}`,
  ];
  await writeFile(configFile, config.join('\n') + '\n', { mode: 0o600 });
  if ((await toolOnPath('redis-server')) === null) throw new ToolMissingError('redis-server', SERVER_PACKAGE);
  const proc: ToolProcess = spawnTool('sh', ['-c', WATCHDOG, 'sh', 'redis-server', configFile], {
    stdio: ['pipe', 'ignore'],
    signal,
    debianPackage: 'dash',
  });
  const exited = proc.wait().then(
    () => {
      throw new ToolFailedError('redis-server', 0, null, 'the temporary server exited early');
    },
    async (err: unknown) => {
      // The reason (e.g. "Short read or OOM loading DB") is in the server's log, not its stderr.
      if (err instanceof ToolFailedError && err.exitCode !== null) {
        throw new ToolFailedError('redis-server', err.exitCode, null, await logTail(logFile));
      }
      throw err;
    },
  );
  exited.catch(() => {});
  let stopping = false;
  let client: Redis | undefined;
  const stop = async (): Promise<void> => {
    stopping = true;
    client?.disconnect();
    proc.child.stdin?.end(); // the watchdog kills the server
    const stuck = setTimeout(() => proc.kill(), 10_000);
    await proc.wait().catch(() => {});
    clearTimeout(stuck);
  };
  // ioredis rejects connect() as soon as the first attempt is refused, so poll: a new client per
  // attempt until the server accepts connections and has loaded the RDB (the ready check waits
  // out LOADING), the server exits, or the start-up time runs out.
  const deadline = Date.now() + TEMP_SERVER_START_MS;
  try {
    for (;;) {
      const attempt = new Redis({
        host: '127.0.0.1',
        port,
        password,
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      attempt.on('error', () => {});
      try {
        await Promise.race([attempt.connect(), exited]);
        client = attempt;
        break;
      } catch (err) {
        attempt.disconnect();
        if (err instanceof ToolFailedError || err instanceof TaskAbortedError || stopping) throw err;
        if (Date.now() > deadline)
          throw new ToolFailedError('redis-server', null, null, 'the temporary server did not start in time');
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { client, exited, stop };
}

async function raceExit<T>(work: Promise<T>, server: TempServer): Promise<T> {
  return Promise.race([work, server.exited]);
}

interface CopyResult {
  keys: number;
  databases: number;
}

/** Steps 3 and 4 of the restore (see the file comment). */
async function copyAll(source: Redis, target: Redis, signal: AbortSignal): Promise<CopyResult> {
  const keyspace = String(await source.info('keyspace'));
  const databases = [...keyspace.matchAll(/^db(\d+):keys=(\d+)/gm)].map((m) => Number(m[1]));
  const libraries = (await source.call('FUNCTION', 'LIST')) as unknown[];
  const functions = libraries.length > 0 ? ((await source.callBuffer('FUNCTION', 'DUMP')) as Buffer) : null;

  await target.flushall();
  if (functions) {
    await target.call('FUNCTION', 'RESTORE', functions, 'FLUSH');
  } else {
    await target.call('FUNCTION', 'FLUSH').catch((err: unknown) => {
      // Redis before 7.0 has no functions, so nothing to flush there.
      if (!/unknown command/i.test(String((err as Error).message))) throw err;
    });
  }

  let keys = 0;
  for (const db of databases) {
    await source.select(db);
    await target.select(db);
    let cursor = '0';
    do {
      signal.throwIfAborted();
      const [next, batch] = await source.scanBuffer(cursor, 'COUNT', REDIS_RESTORE_BATCH);
      cursor = next.toString();
      if (batch.length > 0) keys += await copyBatch(source, target, batch, db);
    } while (cursor !== '0');
  }
  await target.select(0);
  return { keys, databases: databases.length };
}

async function copyBatch(source: Redis, target: Redis, batch: Buffer[], db: number): Promise<number> {
  const read = source.pipeline();
  for (const key of batch) read.pexpiretime(key).dumpBuffer(key);
  const replies = (await read.exec()) ?? [];
  const write = target.pipeline();
  const now = Date.now();
  let queued = 0;
  for (const [i, key] of batch.entries()) {
    const [expiryErr, expiry] = replies[2 * i] ?? [];
    const [dumpErr, payload] = replies[2 * i + 1] ?? [];
    const readErr = expiryErr ?? dumpErr;
    if (readErr) throw new Error(`reading a key of db ${db} from the backup failed: ${readErr.message}`);
    const at = Number(expiry);
    if (payload === null || at === -2 || (at >= 0 && at <= now)) continue; // gone or expired meanwhile
    write.call('RESTORE', key, at < 0 ? 0 : at, payload as Buffer, 'REPLACE', 'ABSTTL');
    queued++;
  }
  if (queued === 0) return 0;
  const results = (await write.exec()) ?? [];
  const failure = results.find(([err]) => err)?.[0];
  if (failure) throw new Error(`restoring a key into db ${db} failed: ${failure.message}`);
  return queued;
}

/** A TCP port free on 127.0.0.1 at the time of the call. */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** The last lines of a redis-server log, without their `pid:role date` prefixes. */
async function logTail(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .slice(-3)
    .map((line) => line.replace(/^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [#*.-] /, '').slice(0, 300))
    .join('; ');
}

/** A redis.conf string argument: double-quoted with `\\` and `\"` escapes (sdssplitargs rules). */
function quoteConfig(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}
