/**
 * Redis: a point-in-time RDB snapshot, restored by a full sync from the agent itself (or, for
 * backups that do not record their source, a temporary server).
 *
 * Backup: `redis-cli --rdb FILE` asks the server for the RDB it would send a new replica
 * (REPLCONF + SYNC), which the server produces with a fork: one consistent snapshot of every
 * database at one instant, functions included, without pausing clients (Redis manual, "Redis
 * persistence" and `redis-cli --rdb`). Needs the SYNC permission when ACLs are on. The unit is the
 * whole server (`dump.rdb`, format `rdb`); the config's `databases` list does not apply.
 * The RDB is written to a file in the task's work directory and streamed from there as it grows, then deleted:
 * `redis-cli --rdb -` (stdout) of Redis 7.0 leaves the 40-byte end-of-transfer mark of a diskless
 * sync at the end of its output, because it trims that mark with ftruncate(), which fails on a pipe
 * (checked with redis-cli 7.0.15: 236 bytes on stdout for a 196-byte RDB). A server with diskless
 * replication (the default since Redis 7.0) waits `repl-diskless-sync-delay` seconds (default 5)
 * for more replicas before it starts sending, so a dump takes at least that long.
 *
 * Restore: a running server can only load an RDB file when it restarts, and envsnap does not own the
 * server (its config, process manager, persistence files). But a replica loads a whole RDB from its
 * primary at run time (a full sync), natively. Two ways to be that primary:
 *
 * A. The agent itself (agent/engines/redis-sync-master.ts), when the backup records its source
 *    (`redis` in the manifest: the source's `databases` setting and loaded modules, read by
 *    {@link RedisEngine.plan} with `CONFIG GET databases` and `MODULE LIST`) and the target runs on
 *    this node (a loopback host or a socket). Checks first, with the target untouched: the RDB
 *    header's format version (its first 9 bytes, `REDIS00NN`) against the target's Redis version
 *    (a replica that cannot load a full sync empties itself); a standalone primary (not a replica,
 *    not Redis Cluster); at least as many `databases` as the source had (every index in the RDB is
 *    below the source's setting; a replica that loads an index it lacks exits, rdb.c); no modules at
 *    the source (module data needs its module on the target: a Redis that loads it without exits);
 *    `repl-diskless-load disabled` on the target (the default: it writes the transfer to a
 *    temporary file and flushes and loads only once the transfer is complete; `swapdb` and
 *    `on-empty-db` parse the transfer as it arrives, before the artifact's SHA-256 is checked, and a
 *    loading Redis exits on a corrupt RDB). Then: `CONFIG SET masterauth` to a random password
 *    (and `masteruser` to none), `REPLICAOF 127.0.0.1 <the agent's port>`; the agent answers the
 *    handshake (only that password gets anything), replies `+FULLRESYNC` and streams the
 *    decompressed artifact into the socket as it arrives, nothing written to disk, the end-of-
 *    transfer mark only once the artifact matched its manifest and the RDB its own CRC-64
 *    (agent/engines/redis-rdb-checksum.ts: what a temporary server's load would have caught of an
 *    RDB corrupt already when it was backed up, and a loading target would exit on); on an
 *    error it drops the connection first, and the target aborts the transfer with its data as it
 *    was; waits until the target's link is up (the backup loaded: keys, exact expiries, all databases, function
 *    libraries), then `REPLICAOF NO ONE` and puts `masterauth`/`masteruser` back. The key count in
 *    the log comes from the target's `INFO keyspace` after the load. When the checks cannot decide
 *    (CONFIG refused, fewer `databases` on the target than the source had, modules, another
 *    `repl-diskless-load`), or the target may not be made a replica or does not connect within
 *    {@link REDIS_SYNC_START_MS}, nothing was sent and B runs instead. A transfer that stalls for
 *    the target's `repl-timeout` (60 s by default) because the artifact stops arriving fails the
 *    restore, the target untouched.
 * B. A temporary server (older backups, targets elsewhere, and A's fallbacks):
 * 1. writes the RDB to a file in the work directory;
 * 2. starts a temporary `redis-server` on a free loopback port, with a random password, `dir` set to
 *    that directory, `save ""`, `appendonly no` and diskless replication without delay, which loads
 *    the file at start. A corrupt or too new RDB fails here, before the target is touched;
 * 3. checks the target, still untouched: a standalone primary (not a replica, not Redis Cluster),
 *    with as many `databases` as the backup uses (a replica that loads an RDB with a database index
 *    it lacks exits), running a Redis whose RDB version is at least the temporary server's (a
 *    replica that cannot load a full sync empties itself) (TargetMismatchError otherwise);
 * 4. full sync, when the target runs on this node (a loopback host or a socket: it must reach the
 *    temporary server's loopback port): as in A, with the temporary server as the primary, which
 *    forks and writes a new RDB for the target. What connected clients see (A and B):
 *    the old data until the transfer ends, then `-LOADING` errors while the target loads it (its
 *    `repl-diskless-load`, default `disabled`: the target writes the transfer to a temporary file in
 *    its `dir`, then replaces its `dbfilename` with it, and flushes and loads at once), then the
 *    backup; from `REPLICAOF` to `REPLICAOF NO ONE` writes fail with `-READONLY` (a target with
 *    `replica-read-only no` accepts them, and the load discards those made before it). In B, a
 *    target nobody wrote to since the backup is still at the replication ID and offset the RDB records,
 *    which the temporary server takes over when it loads the RDB: its sync is then an empty
 *    partial resynchronization, nothing sent or loaded, which Redis accepts because the target
 *    equals the backup (A always answers with a full sync under a fresh replication ID). Its own
 *    replicas resync from it. If the target may not be made a replica (CONFIG or REPLICAOF refused
 *    by ACLs or renamed) or does not connect within {@link REDIS_SYNC_START_MS}, it is detached,
 *    untouched, and step 5 runs instead;
 * 5. otherwise, key by key: `FLUSHALL` and the function libraries replaced with the backup's
 *    (`FUNCTION DUMP` / `FUNCTION RESTORE ... FLUSH`, Redis 7+); then for every database of the
 *    temporary server, walks all keys with `SCAN` and copies each with `DUMP` from the temporary
 *    server and `RESTORE key ttl payload REPLACE ABSTTL` on the target, where `ttl` is the key's
 *    absolute expiry from `PEXPIRETIME` (0 = none); keys that expired meanwhile are skipped. Both
 *    sides are pipelined, {@link REDIS_RESTORE_BATCH} keys per round trip;
 * 6. stops the temporary server and deletes the files, on success and on any error. The server
 *    runs under a watchdog shell that kills it when the agent's pipe to it closes, so it does not
 *    outlive an agent that is killed; while the target is its replica (step 4), the watchdog then
 *    also detaches the target (`REPLICAOF NO ONE`, `masterauth`/`masteruser` put back) with
 *    `redis-cli`, from a script in the work directory (mode 0600: it holds the old `masterauth`).
 *    In A, a watchdog shell of the same kind runs that script when the agent's pipe to it closes
 *    while the target is the agent's replica.
 *
 * What a failure or a kill leaves (issue 5, "safe restores"): before step 4 the target is
 * untouched. During a full sync the target holds the old data until the transfer is complete and
 * then the backup, whole (the load flushes and loads in one step): a failure or a kill leaves one
 * or the other, never part. The residual window: a kill of the agent together with its watchdog
 * (e.g. the whole process group, `systemctl kill`), or a crash of the machine, between `REPLICAOF`
 * and `REPLICAOF NO ONE`, leaves the target a read-only replica of a primary that is gone, with the
 * temporary `masterauth`, until someone runs `REPLICAOF NO ONE` (and resets `masterauth`); the
 * next restore refuses such a target with that hint. In the key-by-key copy, from the `FLUSHALL`
 * on, the target holds only the keys copied so far: a failure or a kill there leaves it partly
 * restored (a new restore starts over). Atomicity within the protocol was not chosen there:
 * `MULTI`/`EXEC` around every `RESTORE` is queued whole in the server's memory and blocks every
 * other client while it runs; `SWAPDB` into spare database indexes needs indexes the application
 * never uses and does not exist in Redis Cluster. A Redis restore keeps no pre-restore copy.
 * In A the agent holds no copy of the dataset: it passes the artifact through (a few MB of buffers);
 * in B the temporary server holds the whole dataset in memory on the agent's node, next to the
 * target's own. Not supported: Redis Cluster targets, and RDBs holding module data types (A does
 * not send them, B's temporary server does not load modules).
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { pipeline as pipeStreams, Readable, type Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';

import { Redis, type RedisOptions } from 'ioredis';

import {
  errorMessage,
  TargetMismatchError,
  TaskAbortedError,
  ToolFailedError,
  ToolMissingError,
} from '../../shared/errors.js';
import { readGrowingFile } from '../../shared/growing-file.js';
import type { RedisSource } from '../../shared/manifest.js';
import { runTool, spawnTool, toolOnPath, type ToolProcess } from '../tool-process.js';
import type {
  DumpProcess,
  DumpRun,
  DumpUnit,
  Engine,
  EngineContext,
  ResolvedConnection,
  ServiceTarget,
} from './engine.js';
import { rdbChecksumCheck } from './redis-rdb-checksum.js';
import { startRdbSyncMaster, type RdbSyncMaster } from './redis-sync-master.js';

/** Keys copied per pipelined round trip during a restore. */
export const REDIS_RESTORE_BATCH = 500;

/** Databases the temporary restore server is configured with (the RDB may use more than the default 16). */
export const REDIS_TEMP_SERVER_DATABASES = 1024;

/** The only unit of a Redis plan. */
export const REDIS_UNIT: Readonly<DumpUnit> = { database: '', format: 'rdb', fileName: 'dump.rdb' };

const CLI_PACKAGE = 'redis-tools';
const SERVER_PACKAGE = 'redis-server';
const TEMP_SERVER_START_MS = 60_000;
/**
 * How often the temporary server is asked whether it has loaded the RDB, in ms: its port, until it
 * accepts connections, then its `INFO` `loading` flag (ioredis's ready check). ioredis otherwise
 * sleeps the server's `loading_eta_seconds` between two looks (up to its `maxLoadingRetryTime`,
 * 10 s), and the first estimate of a load is far too long: 8 s of waiting for an RDB of 1M keys
 * that loaded in 2.2 s (docs/benchmarks-history.md, "Redis restore: where the time goes").
 */
const TEMP_SERVER_POLL_MS = 50;

/** The engine for services of kind `redis`. */
export class RedisEngine implements Engine {
  readonly consistency =
    'point-in-time snapshot of the whole server (the RDB Redis forks for a replica, fetched with redis-cli --rdb)';

  /**
   * The one whole-server unit `dump.rdb`, with what a restore needs to know about the source
   * (`redis`: its `databases` setting and loaded modules, see {@link readSourceShape}); without it
   * when the source refuses `CONFIG GET` or `MODULE LIST` (a restore then loads the RDB into a
   * temporary server first). Never rejects for that.
   */
  async plan(service: ServiceTarget, ctx: EngineContext): Promise<DumpUnit[]> {
    const redis = await readSourceShape(service.connection).catch((err: unknown) => {
      ctx.log(
        `redis: the source's databases and modules are not recorded (${redisErrorWord(err)}): a restore of this backup will load it into a temporary server first`,
      );
      return undefined;
    });
    return [{ ...REDIS_UNIT, ...(redis ? { redis } : {}) }];
  }

  /**
   * `redis-cli --rdb` into a file in the task's work directory, and that file read as it grows
   * (shared/growing-file.ts): as `stdout`, or written into `into` (see Engine.dump), so that the
   * compressor works while the RDB still arrives. The file is removed when it has been read. Not
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
    let cli: ToolProcess;
    try {
      dir = await mkdtemp(join(ctx.workDir, 'redis-dump-'));
      cli = spawnTool(
        'redis-cli',
        [...cliConnectionArgs(service.connection), '--rdb', join(dir, 'dump.rdb')],
        {
          env: { REDISCLI_AUTH: service.connection.password },
          stdio: ['ignore', 'ignore'],
          signal: ctx.signal,
          debianPackage: CLI_PACKAGE,
        },
      );
    } catch (err) {
      into?.destroy(); // the engine owns `into`
      await removeDir();
      throw err;
    }
    // redis-cli writes the file from the start, in order, and at the end only truncates the
    // end-of-transfer mark of a diskless sync off it: held back until it exited, nothing passed on
    // is ever rewritten or cut off.
    const rdb = readGrowingFile(join(dir, 'dump.rdb'), cli.wait(), {
      holdBackBytes: RDB_EOF_MARK_BYTES,
      minChunkBytes: FOLLOW_MIN_CHUNK_BYTES,
      signal: ctx.signal,
    });
    const stdout = Readable.from(rdb, { objectMode: false });
    const onAbort = (): void => {
      stdout.destroy(new TaskAbortedError('redis dump was stopped'));
    };
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    const streamed = into ? pipeline(stdout, into) : finished(stdout);
    streamed.catch(() => {});
    // redis-cli's failure fails the dump at once, also when nobody reads `stdout`.
    const done = Promise.all([cli.wait(), streamed])
      .then(() => undefined)
      .finally(async () => {
        ctx.signal.removeEventListener('abort', onAbort);
        stdout.destroy();
        cli.kill();
        await cli.wait().catch(() => undefined);
        await removeDir();
      });
    done.catch(() => {});
    const kill = (): void => {
      cli.kill();
      stdout.destroy();
      into?.destroy();
    };
    return into ? { wait: () => done, kill } : { stdout, wait: () => done, kill };
  }

  /** Redis restores keep no pre-restore copy (see the file comment): resolves with no names. */
  dropPreRestoreCopies(): Promise<string[]> {
    return Promise.resolve([]);
  }

  /**
   * Restores the RDB (see the file comment): sent by the agent itself to a local target when the
   * backup records its source ({@link DumpUnit.redis}) and the target fits, else through a
   * temporary server.
   *
   * @throws TargetMismatchError when the target cannot take the backup (before it is touched),
   *   ToolFailedError when the sync or the temporary server fails, TaskAbortedError when cancelled.
   */
  async restore(service: ServiceTarget, unit: DumpUnit, input: Readable, ctx: EngineContext): Promise<void> {
    let rest = input;
    if (unit.redis && isLocal(service.connection)) {
      let peeked: { head: Buffer; stream: Readable };
      try {
        peeked = await peekHead(input, RDB_HEADER_BYTES);
      } catch (err) {
        if (ctx.signal.aborted) throw new TaskAbortedError('redis restore was stopped', { cause: err });
        throw err;
      }
      rest = peeked.stream;
      const synced = await restoreBySync(service, unit.redis, unit.rawBytes ?? 0, peeked, ctx);
      if (synced.done) return;
      if (synced.rest) rest = synced.rest;
      ctx.log(`redis: loading the backup into a temporary server first: ${synced.why}`);
    }
    await restoreThroughTempServer(service, rest, ctx);
  }
}

/** The restore through a temporary server that loads the RDB first (steps 1-6 of the file comment). */
async function restoreThroughTempServer(
  service: ServiceTarget,
  input: Readable,
  ctx: EngineContext,
): Promise<void> {
  const dir = await mkdtemp(join(ctx.workDir, 'redis-restore-'));
  const detachScript = join(dir, 'detach.sh');
  let server: TempServer | undefined;
  let target: Redis | undefined;
  try {
    await pipeline(input, createWriteStream(join(dir, 'dump.rdb'), { mode: 0o600 }), {
      signal: ctx.signal,
    });
    server = await startTempServer(dir, ctx.signal, {
      detachScript,
      targetPassword: service.connection.password,
    });
    target = new Redis(targetOptions(service.connection));
    target.on('error', () => {}); // failures reach us through the commands' promises
    await raceExit(target.connect(), server);
    const temp = server;
    const checked = await raceExit(checkTarget(temp.client, target), temp);
    const synced = isLocal(service.connection)
      ? await raceExit(
          fullSyncFrom(tempSyncSource(temp), target, {
            connection: service.connection,
            detachScript,
            signal: ctx.signal,
          }),
          temp,
        )
      : { done: false, why: 'the target is not on this node (loopback or socket)' };
    if (synced.done) {
      ctx.log(`redis: restored ${checked.keys} keys in ${checked.databases.length} databases (full sync)`);
      return;
    }
    ctx.log(`redis: copying key by key: ${synced.why}`);
    const copied = await raceExit(copyAll(temp.client, target, checked.databases, ctx.signal), temp);
    ctx.log(`redis: restored ${copied.keys} keys in ${copied.databases} databases`);
  } catch (err) {
    if (ctx.signal.aborted) throw new TaskAbortedError('redis restore was stopped', { cause: err });
    throw err;
  } finally {
    target?.disconnect();
    // Left only when the target could not be detached over our connection (e.g. -LOADING).
    if (existsSync(detachScript)) {
      await runTool('sh', [detachScript], {
        env: { REDISCLI_AUTH: service.connection.password },
        debianPackage: 'dash',
      }).catch((err: unknown) => ctx.log(`redis: could not detach the target: ${errorMessage(err)}`));
      await rm(detachScript, { force: true });
    }
    if (server) await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Bytes of an RDB's header: `REDIS` and the format version in four digits (Redis source, rdb.c). */
const RDB_HEADER_BYTES = 9;

/**
 * A watchdog for the agent's own full sync: `cat` reads the pipe from the agent until it closes
 * (the agent is done, or died, `kill -9` included), then the detach script (`$1`) runs if it
 * exists, which it does only while the target is a replica of the agent.
 */
const DETACH_WATCHDOG = 'cat >/dev/null 2>&1; if [ -f "$1" ]; then sh "$1"; fi >/dev/null 2>&1';

/**
 * The restore without a temporary server (step 4 of the file comment with the agent as the
 * primary, agent/engines/redis-sync-master.ts). Checks first, with the target untouched: a
 * standalone primary; a Redis that reads the RDB's format version (from its header); at least as
 * many `databases` as the source had (every index in the RDB is below the source's setting); no
 * modules loaded at the source (module data would need the module on the target, which a load
 * without it ends with the server's exit). Then makes the target a replica of the agent, which
 * streams the RDB's bytes to it, and detaches it once its link is up (the backup loaded).
 *
 * Resolves `{ done: false, why, rest }` with the target untouched and nothing of the RDB consumed
 * beyond its head (the caller then goes through a temporary server, reading `rest` if given, else
 * `rdb.stream`) when the checks cannot decide or the target may not be made a replica, or did not
 * connect in time.
 *
 * @throws TargetMismatchError when the target cannot take the backup; ToolFailedError when the
 *   sync failed after it started (the target is detached, and holds its old data when the transfer
 *   did not complete); TaskAbortedError when cancelled.
 */
async function restoreBySync(
  service: ServiceTarget,
  source: RedisSource,
  rawBytes: number,
  rdb: { head: Buffer; stream: Readable },
  ctx: EngineContext,
): Promise<{ done: boolean; why: string; rest?: Readable }> {
  const version = /^REDIS(\d{4})$/.exec(rdb.head.toString('latin1'))?.[1];
  if (version === undefined) return { done: false, why: 'the backup does not start with an rdb header' };
  if (source.modules.length > 0)
    return { done: false, why: `the source had modules loaded (${source.modules.join(', ')})` };
  const target = new Redis(targetOptions(service.connection));
  target.on('error', () => {}); // failures reach us through the commands' promises
  let dir: string | undefined;
  let master: RdbSyncMaster | undefined;
  let watchdog: ToolProcess | undefined;
  try {
    await target.connect();
    const shape = await readTarget(target);
    checkTargetRole(shape);
    const have = targetRdbVersion(shape);
    if (have === undefined) return { done: false, why: "the target's redis version is not known" };
    if (have < Number(version)) {
      throw new TargetMismatchError(
        `the redis target (${infoField(shape.info, 'redis_version')}) cannot load the backup's rdb version ${Number(version)}`,
        { hint: 'restore into a redis at least as new as the one backed up' },
      );
    }
    if (shape.databases === undefined)
      return { done: false, why: "the target's databases setting cannot be read (CONFIG)" };
    if (shape.databases < source.databases) {
      return {
        done: false,
        why: `the target has ${shape.databases} databases and the source had ${source.databases}: the databases the backup uses are read from it`,
      };
    }
    // Only a target that loads the transfer once it is complete: one that parses it as it arrives
    // (swapdb, on-empty-db) would see the bytes before their SHA-256 is checked, and a corrupt RDB
    // makes a loading Redis exit.
    if (shape.disklessLoad !== 'disabled')
      return {
        done: false,
        why: `the target's repl-diskless-load is ${shape.disklessLoad ?? 'not readable'}, not disabled`,
      };
    dir = await mkdtemp(join(ctx.workDir, 'redis-restore-'));
    const detachScript = join(dir, 'detach.sh');
    // The RDB's own checksum is checked on the way: the end mark goes out only when it matched.
    const checked = pipeStreams(rdb.stream, rdbChecksumCheck(Number(version), 'dump.rdb'), () => {});
    master = await startRdbSyncMaster(checked, rawBytes);
    const sync = master;
    if ((await toolOnPath('sh')) === null) throw new ToolMissingError('sh', 'dash');
    // Not stopped by a cancellation: it is what detaches the target when our own detach failed.
    watchdog = spawnTool('sh', ['-c', DETACH_WATCHDOG, 'sh', detachScript], {
      env: { REDISCLI_AUTH: service.connection.password },
      stdio: ['pipe', 'ignore'],
      debianPackage: 'dash',
    });
    watchdog.wait().catch(() => {});
    // The sync's failure on the agent's side (the input's error, a lost link) ends the wait at once,
    // and fullSyncFrom detaches the target.
    const failed = new AbortController();
    sync.lost.catch((err: unknown) => failed.abort(err));
    sync.sent.catch((err: unknown) => failed.abort(err));
    const synced = await fullSyncFrom(
      {
        port: sync.port,
        password: sync.password,
        syncing: () => Promise.resolve(sync.started()),
        linkUp: () => sync.close(),
      },
      target,
      {
        connection: service.connection,
        detachScript,
        signal: AbortSignal.any([ctx.signal, failed.signal]),
      },
    );
    if (!synced.done) {
      if (sync.started()) throw new ToolFailedError('redis-server', null, null, synced.why);
      return { ...synced, rest: checked };
    }
    const keyspace = [...String(await target.info('keyspace')).matchAll(/^db(\d+):keys=(\d+)/gm)];
    const keys = keyspace.reduce((sum, m) => sum + Number(m[2]), 0);
    ctx.log(
      `redis: restored ${keys} keys in ${keyspace.length} databases (full sync, the backup's rdb sent by the agent)`,
    );
    return { done: true, why: '' };
  } catch (err) {
    if (ctx.signal.aborted) throw new TaskAbortedError('redis restore was stopped', { cause: err });
    throw err;
  } finally {
    // fullSyncFrom detached the target (or left the script for the watchdog when it could not).
    master?.close();
    target.disconnect();
    if (watchdog) {
      watchdog.child.stdin?.end(); // the watchdog runs the detach script if it is still there
      await watchdog
        .wait()
        .catch((err: unknown) => ctx.log(`redis: could not detach the target: ${errorMessage(err)}`));
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

/**
 * What a restore needs to know about the source (see {@link RedisSource}): `CONFIG GET databases`
 * and `MODULE LIST`.
 *
 * @throws Error from ioredis when the server cannot be reached or refuses either command.
 */
export async function readSourceShape(conn: ResolvedConnection): Promise<RedisSource> {
  const client = new Redis(targetOptions(conn));
  client.on('error', () => {});
  try {
    await client.connect();
    const databases = Number(((await client.config('GET', 'databases')) as string[])[1]);
    if (!Number.isSafeInteger(databases) || databases <= 0) throw new Error('ERR no databases setting');
    // RESP2: one flat array per module, `name <name> ver <n> ...`.
    const list = (await client.call('MODULE', 'LIST')) as unknown[][];
    const modules = list.map((m) => {
      const name = m[m.indexOf('name') + 1];
      return typeof name === 'string' ? name : '?';
    });
    return { databases, modules };
  } finally {
    client.disconnect();
  }
}

/**
 * Reads the first `n` bytes of `input` (fewer if it ends first) and returns them with a stream
 * that gives every byte of `input` again from the first, errors included. Destroying that stream
 * destroys `input`.
 */
export async function peekHead(input: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const it = (input as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let size = 0;
  let ended = false;
  while (size < n) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    chunks.push(r.value);
    size += r.value.length;
  }
  const first = Buffer.concat(chunks);
  async function* replay(): AsyncGenerator<Buffer> {
    if (first.length > 0) yield first;
    if (ended) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  const stream = Readable.from(replay(), { objectMode: false });
  stream.once('close', () => input.destroy());
  return { head: first.subarray(0, n), stream };
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

/** A throwaway redis-server on loopback holding an RDB (restores and restore drills). */
export interface TempServer {
  client: Redis;
  /** Its loopback port and its (random) password. */
  port: number;
  password: string;
  /** Rejects with ToolFailedError when the server exits before `stop()`. */
  exited: Promise<never>;
  stop(): Promise<void>;
}

/** What the watchdog of the temporary server does when the agent goes away. */
interface WatchdogOptions {
  /** A shell script the watchdog runs, if it exists then, after killing the server. */
  detachScript: string;
  /** The target's password, for that script's redis-cli (REDISCLI_AUTH in the watchdog's environment). */
  targetPassword: string | undefined;
}

/** Bytes of the end-of-transfer mark of a diskless sync, which redis-cli truncates off its file at the end. */
const RDB_EOF_MARK_BYTES = 40;

/** A read of the growing RDB file shorter than this waits before the next one (behind a slow transfer). */
const FOLLOW_MIN_CHUNK_BYTES = 256 * 1024;

/** Starts redis-server on the RDB in `dir`, retrying on a port taken between probe and bind. */
export async function startTempServer(
  dir: string,
  signal: AbortSignal,
  watchdog?: WatchdogOptions,
): Promise<TempServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startTempServerOnce(dir, signal, watchdog);
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
 * whole dataset in memory. Then, if the detach script (`$1`) exists, which it does only while the
 * target is a replica of the server, it runs it, so that the target does not stay a read-only
 * replica of a server that is gone. The shell exits with the server's status.
 */
const WATCHDOG = [
  'detach=$1',
  'shift',
  'exec 3<&0',
  '"$@" </dev/null 3<&- &',
  'pid=$!',
  '{ cat <&3 >/dev/null 2>&1; kill -KILL "$pid" 2>/dev/null; if [ -f "$detach" ]; then sh "$detach"; fi; } >/dev/null 2>&1 &',
  'exec 3<&-',
  'wait "$pid"',
].join('\n');

async function startTempServerOnce(
  dir: string,
  signal: AbortSignal,
  watchdog: WatchdogOptions | undefined,
): Promise<TempServer> {
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
    // The full sync to the target: streamed from memory, at once (no wait for more replicas).
    'repl-diskless-sync yes',
    'repl-diskless-sync-delay 0',
    'loglevel warning',
    // A file, not /dev/stderr: the child's stderr is a socket, which redis-server cannot open.
    `logfile ${quoteConfig(logFile)}`,
  ];
  await writeFile(configFile, config.join('\n') + '\n', { mode: 0o600 });
  if ((await toolOnPath('redis-server')) === null) throw new ToolMissingError('redis-server', SERVER_PACKAGE);
  const proc: ToolProcess = spawnTool(
    'sh',
    // Without a target (restore drills) there is nothing to detach: a script that never exists.
    ['-c', WATCHDOG, 'sh', watchdog?.detachScript ?? join(dir, 'no-detach.sh'), 'redis-server', configFile],
    {
      env: { REDISCLI_AUTH: watchdog?.targetPassword },
      stdio: ['pipe', 'ignore'],
      signal,
      debianPackage: 'dash',
    },
  );
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
  // out LOADING, looking every TEMP_SERVER_POLL_MS), the server exits, or the start-up time runs out.
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
        maxLoadingRetryTime: TEMP_SERVER_POLL_MS,
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
        await new Promise((r) => setTimeout(r, TEMP_SERVER_POLL_MS));
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { client, port, password, exited, stop };
}

async function raceExit<T>(work: Promise<T>, server: TempServer): Promise<T> {
  return Promise.race([work, server.exited]);
}

interface CopyResult {
  keys: number;
  databases: number;
}

/** The key-by-key copy (see the file comment), into the target's `databases` (from {@link checkTarget}). */
async function copyAll(
  source: Redis,
  target: Redis,
  databases: readonly number[],
  signal: AbortSignal,
): Promise<CopyResult> {
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

/** What {@link checkTarget} found in the backup. */
interface BackupKeyspace {
  /** The database indexes that hold keys. */
  databases: number[];
  /** Keys in all of them. */
  keys: number;
}

/** What the checks read from the target (`INFO server`, `INFO replication`, `CONFIG GET databases`). */
interface TargetShape {
  info: string;
  /** Its `databases` setting; undefined when CONFIG is not permitted. */
  databases: number | undefined;
  /** Its `repl-diskless-load` setting; undefined when CONFIG is not permitted. */
  disklessLoad: string | undefined;
}

async function readTarget(target: Redis): Promise<TargetShape> {
  const info = String(await target.info('server')) + String(await target.info('replication'));
  const databases = await target
    .config('GET', 'databases')
    .then((r) => Number((r as string[])[1]))
    .catch(() => NaN);
  const disklessLoad = await target
    .config('GET', 'repl-diskless-load')
    .then((r) => (r as string[])[1])
    .catch(() => undefined);
  return { info, databases: Number.isFinite(databases) ? databases : undefined, disklessLoad };
}

function infoField(text: string, name: string): string | undefined {
  return new RegExp(`^${name}:(.*?)\\r?$`, 'm').exec(text)?.[1];
}

/**
 * The target must be a standalone primary: not Redis Cluster, not a replica.
 *
 * @throws TargetMismatchError naming what does not fit.
 */
function checkTargetRole(shape: TargetShape): void {
  const { info } = shape;
  if (infoField(info, 'redis_mode') === 'cluster') {
    throw new TargetMismatchError('the redis target runs in cluster mode', {
      hint: 'envsnap restores standalone redis servers only',
    });
  }
  if (infoField(info, 'role') !== 'master') {
    throw new TargetMismatchError(
      `the redis target is a replica of ${infoField(info, 'master_host') ?? '?'}:${infoField(info, 'master_port') ?? '?'}`,
      {
        hint: 'restore into the primary; if a killed restore left it a replica of 127.0.0.1, run REPLICAOF NO ONE on it',
      },
    );
  }
}

/** The RDB format version the target's Redis reads up to (see {@link rdbVersion}), undefined if unknown. */
function targetRdbVersion(shape: TargetShape): number | undefined {
  return rdbVersion(infoField(shape.info, 'redis_version'));
}

/**
 * Checks, before the target is touched, that it can take the backup the temporary server loaded:
 * a standalone primary (not a replica, not Redis Cluster), with enough databases (a replica that
 * loads an RDB with a database index it does not have exits), running a Redis whose RDB version
 * is at least the temporary server's (a replica that cannot load the full sync empties itself).
 *
 * @throws TargetMismatchError naming what does not fit.
 */
async function checkTarget(source: Redis, target: Redis): Promise<BackupKeyspace> {
  const keyspace = [...String(await source.info('keyspace')).matchAll(/^db(\d+):keys=(\d+)/gm)];
  const databases = keyspace.map((m) => Number(m[1]));
  const keys = keyspace.reduce((sum, m) => sum + Number(m[2]), 0);
  const shape = await readTarget(target);
  checkTargetRole(shape);
  const have = targetRdbVersion(shape);
  const need = rdbVersion(infoField(String(await source.info('server')), 'redis_version'));
  if (have !== undefined && need !== undefined && have < need) {
    throw new TargetMismatchError(
      `the redis target (${infoField(shape.info, 'redis_version')}) cannot load rdb version ${need} written by this node's redis-server`,
      { hint: "install the target's redis version (or older) on the agent's node, or upgrade the target" },
    );
  }
  // CONFIG not permitted (undefined): the copy or the sync reports a missing database.
  const count = shape.databases;
  const highest = Math.max(-1, ...databases);
  if (count !== undefined && highest >= count) {
    throw new TargetMismatchError(
      `the backup has keys in database ${highest} but the redis target has ${count} databases`,
      { hint: `set databases ${highest + 1} (or more) in the target's config` },
    );
  }
  return { databases, keys };
}

/** The RDB format version a Redis version writes (Redis source, rdb.h), or undefined if unknown. */
function rdbVersion(version: string | undefined): number | undefined {
  const m = /^(\d+)\.(\d+)/.exec(version ?? '');
  if (!m) return undefined;
  const v = Number(m[1]) * 100 + Number(m[2]);
  if (v >= 704) return 12;
  if (v >= 702) return 11;
  if (v >= 700) return 10;
  if (v >= 500) return 9;
  if (v >= 400) return 8;
  return 7;
}

/** Whether the target runs on this node, where it can reach the temporary server's loopback port. */
function isLocal(conn: ResolvedConnection): boolean {
  if (conn.socket) return true;
  const host = conn.host ?? '127.0.0.1';
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** How long the target may take to connect to the temporary server and start its sync, in ms. */
export const REDIS_SYNC_START_MS = 30_000;

/** How often the target's replication state is polled during a full sync, in ms. */
const SYNC_POLL_MS = 50;

/** The primary a target syncs from in {@link fullSyncFrom}: the temporary server, or the agent itself. */
interface SyncSource {
  /** Its loopback port and the password the target must send (`masterauth`). */
  port: number;
  password: string;
  /** Whether a replica is connected to it and syncing (the temporary server lists it in `INFO`). */
  syncing(): Promise<boolean>;
  /** Called once the target's link is up (the backup loaded), before the target is detached. */
  linkUp?(): void;
}

/** The temporary server as a {@link SyncSource}. */
function tempSyncSource(temp: TempServer): SyncSource {
  return {
    port: temp.port,
    password: temp.password,
    syncing: async () => /^slave\d+:/m.test(String(await temp.client.info('replication'))),
  };
}

/**
 * The full-sync restore (see the file comment): makes the target a replica of `source`
 * (`CONFIG SET masterauth`, `REPLICAOF 127.0.0.1 <port>`), waits until its link is up (the RDB is
 * transferred and loaded), then `REPLICAOF NO ONE` and puts `masterauth`/`masteruser` back. The
 * detach commands are written to `detachScript` first, which the temporary server's watchdog runs
 * if the agent dies meanwhile.
 *
 * Resolves `{ done: false, why }`, with the target detached and its data untouched, when the
 * target may not be made a replica (CONFIG or REPLICAOF refused, e.g. by ACLs or a renamed
 * command) or did not start syncing within {@link REDIS_SYNC_START_MS}: the caller then copies key
 * by key. Rejects with ToolFailedError when the sync started but failed, TaskAbortedError when
 * aborted (the target is detached in both cases).
 */
async function fullSyncFrom(
  source: SyncSource,
  target: Redis,
  opts: { connection: ResolvedConnection; detachScript: string; signal: AbortSignal },
): Promise<{ done: boolean; why: string }> {
  const config = async (name: string): Promise<string | undefined> =>
    ((await target.config('GET', name)) as string[])[1];
  let saved: { masterauth: string | undefined; masteruser: string | undefined };
  try {
    saved = { masterauth: await config('masterauth'), masteruser: await config('masteruser') };
  } catch (err) {
    return { done: false, why: `cannot read the target's config (${redisErrorWord(err)})` };
  }
  const restoreConfig = Object.entries(saved).flatMap(([name, value]) =>
    value === undefined ? [] : [`CONFIG SET ${name} ${quoteConfig(value)}`],
  );
  const cli = ['redis-cli', ...cliConnectionArgs(opts.connection)].map(quoteShell).join(' ');
  // The config first (once the target is a master again, it is already its own, unless the target
  // refused CONFIG while loading), then REPLICAOF NO ONE, which is refused (-LOADING) while the target
  // loads the transfer: retry, up to 10 minutes; then the config again.
  const script = [
    `${cli} >/dev/null 2>&1 <<'EOF'`,
    ...restoreConfig,
    'EOF',
    'i=0',
    `until [ "$(${cli} REPLICAOF NO ONE 2>/dev/null)" = OK ] || [ $i -ge 1200 ]; do i=$((i+1)); sleep 0.5; done`,
    `${cli} >/dev/null 2>&1 <<'EOF'`,
    ...restoreConfig,
    'EOF',
    '',
  ].join('\n');
  await writeFile(opts.detachScript, script, { mode: 0o600 });
  let detached = false;
  const detachNow = async (): Promise<void> => {
    await target.call('REPLICAOF', 'NO', 'ONE');
    if (saved.masterauth !== undefined) await target.config('SET', 'masterauth', saved.masterauth);
    if (saved.masteruser !== undefined) await target.config('SET', 'masteruser', saved.masteruser);
    detached = true;
  };
  try {
    try {
      if (saved.masteruser) await target.config('SET', 'masteruser', '');
      await target.config('SET', 'masterauth', source.password);
      await target.call('REPLICAOF', '127.0.0.1', String(source.port));
    } catch (err) {
      await detachNow();
      return { done: false, why: `the target may not be made a replica (${redisErrorWord(err)})` };
    }
    const started = Date.now();
    let syncing = false;
    let lastProgress = started;
    for (;;) {
      opts.signal.throwIfAborted();
      const info = String(await target.info('replication'));
      if (/^master_link_status:up\r?$/m.test(info)) {
        source.linkUp?.();
        await detachNow();
        return { done: true, why: '' };
      }
      if ((await source.syncing()) || /^master_sync_in_progress:1\r?$/m.test(info)) {
        syncing = true;
        lastProgress = Date.now();
      } else if (syncing && Date.now() - lastProgress > REDIS_SYNC_START_MS) {
        // It started, then stopped (e.g. the target could not load it): fail, do not retry forever.
        throw new ToolFailedError(
          'redis-server',
          null,
          null,
          "the target's full sync stopped; see the target's log",
        );
      }
      if (!syncing && Date.now() - started > REDIS_SYNC_START_MS) {
        await detachNow();
        return {
          done: false,
          why: `the target did not connect to 127.0.0.1:${source.port} within ${REDIS_SYNC_START_MS / 1000} s`,
        };
      }
      await new Promise((r) => setTimeout(r, SYNC_POLL_MS));
    }
  } finally {
    if (!detached) await detachNow().catch(() => undefined);
    // Detached by us: the watchdog has nothing left to do. Otherwise it tries when the server stops.
    if (detached) await rm(opts.detachScript, { force: true });
  }
}

/** The first word of a Redis error reply (NOPERM, ERR, ...), never its text (it may echo arguments). */
function redisErrorWord(err: unknown): string {
  return /^[A-Z]+/.exec(err instanceof Error ? err.message : '')?.[0] ?? 'error';
}

/** A single-quoted sh word. */
function quoteShell(value: string): string {
  return `'${value.replace(/'/g, "'\\''")}'`;
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
