/**
 * Restore-drill stats for Redis, and the drill's throwaway server.
 *
 * Stats (shared/drill-stats.ts): per database index, the key count and how many keys have a time
 * to live, from `INFO keyspace`. Taken right before `redis-cli --rdb` asks for the snapshot, so
 * they describe the RDB exactly only when nothing writes meanwhile (basis `quiesced`, under the
 * environment's quiesce hooks); otherwise the basis is `live` and a drill reports differences as
 * informational. Keys with a time to live may expire between the backup and a drill (a loaded RDB
 * drops expired keys), so a drill checks the keys without one exactly and the others as "not more".
 *
 * Drill: the RDB is written to a scratch directory and loaded by a throwaway `redis-server` on a
 * free loopback port (the one restores use, under the same watchdog), whose `INFO keyspace` is
 * read; the server is stopped and the directory removed whatever happens. The live server is only
 * read (`INFO`) at backup time, never during a drill.
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { Redis } from 'ioredis';

import type { KeyspaceStats } from '../../shared/drill-stats.js';
import { errorMessage, TaskAbortedError } from '../../shared/errors.js';
import type { EngineContext, ResolvedConnection } from './engine.js';
import { startTempServer, targetOptions, type TempServer } from './redis.js';

/**
 * Parses the `# Keyspace` section of `INFO` (`db0:keys=3,expires=1,avg_ttl=0`), databases in index order.
 */
export function parseKeyspace(info: string): KeyspaceStats[] {
  const out: KeyspaceStats[] = [];
  for (const line of info.split(/\r?\n/)) {
    const m = /^db(\d+):keys=(\d+),expires=(\d+)/.exec(line);
    if (m) out.push({ db: Number(m[1]), keys: Number(m[2]), expires: Number(m[3]) });
  }
  return out.sort((a, b) => a.db - b.db);
}

/**
 * The key counts of the server at `conn`.
 *
 * @throws Error from ioredis when the server cannot be reached or refuses `INFO`.
 */
export async function redisKeyspaceStats(conn: ResolvedConnection): Promise<KeyspaceStats[]> {
  const client = new Redis(targetOptions(conn));
  client.on('error', () => {});
  try {
    await client.connect();
    return parseKeyspace(await client.info('keyspace'));
  } finally {
    client.disconnect();
  }
}

/**
 * Drill: loads the RDB (raw bytes from `input`) into a throwaway redis-server and reads its key
 * counts; the server and its files are removed before this returns.
 *
 * @returns the key counts, and `cleanup` ('' once removed, else why not).
 * @throws ToolFailedError when the server cannot load the RDB, TaskAbortedError when cancelled.
 */
export async function drillRedis(
  input: Readable,
  ctx: EngineContext,
): Promise<{ keyspaces: KeyspaceStats[]; cleanup: Promise<string> }> {
  const dir = await mkdtemp(join(ctx.workDir, 'redis-drill-'));
  let server: TempServer | undefined;
  try {
    await pipeline(input, createWriteStream(join(dir, 'dump.rdb'), { mode: 0o600 }), { signal: ctx.signal });
    server = await startTempServer(dir, ctx.signal);
    const keyspaces = parseKeyspace(await Promise.race([server.client.info('keyspace'), server.exited]));
    ctx.log(
      `redis: the RDB loaded into a throwaway server: ${keyspaces.reduce((n, k) => n + k.keys, 0)} keys`,
    );
    return { keyspaces, cleanup: Promise.resolve('') };
  } catch (err) {
    if (ctx.signal.aborted) throw new TaskAbortedError('redis drill was stopped', { cause: err });
    throw err;
  } finally {
    if (server)
      await server
        .stop()
        .catch((err: unknown) => ctx.log(`redis: stopping the throwaway server: ${errorMessage(err)}`));
    await rm(dir, { recursive: true, force: true });
  }
}
