/**
 * The benchmark's data, generated with the tools a sysadmin would use: `sysbench oltp_read_write
 * prepare` for MariaDB, `pgbench -i` for PostgreSQL, `redis-cli --pipe` for a Redis keyspace of
 * mixed types, and a copy of real trees under /usr for a mount.
 */
import { spawn } from 'node:child_process';
import { copyFile, lstat, mkdir, readdir, readlink, symlink } from 'node:fs/promises';
import path from 'node:path';
import { once } from 'node:events';
import type { MariadbServer, PostgresServer, RedisServer } from '../helpers/servers.js';
import { requireBinary, runCommand } from '../helpers/servers.js';

/** The data sizes of one benchmark run. */
export interface BenchSizes {
  /** sysbench: tables of `mariadbRows` rows each. */
  mariadbTables: number;
  mariadbRows: number;
  /** pgbench scale factor (100,000 `pgbench_accounts` rows per unit, about 15 MB). */
  pgbenchScale: number;
  /** Redis keys, of mixed types. */
  redisKeys: number;
  /** Bytes of regular files copied into the mount. */
  mountBytes: number;
}

/** The sizes of issue 6: about 800 MB of MariaDB, 600 MB of PostgreSQL, 1M Redis keys, an 800 MB tree. */
export const FULL_SIZES: BenchSizes = {
  mariadbTables: 8,
  mariadbRows: 400_000,
  pgbenchScale: 40,
  redisKeys: 1_000_000,
  mountBytes: 800 * 1024 * 1024,
};

/** `--quick`: small enough that the whole run takes under two minutes on two cores. */
export const QUICK_SIZES: BenchSizes = {
  mariadbTables: 4,
  mariadbRows: 50_000,
  pgbenchScale: 4,
  redisKeys: 200_000,
  mountBytes: 160 * 1024 * 1024,
};

/** Multiplies every size by `factor` (rounded; tables stay as they are, rows grow). */
export function scaleSizes(s: BenchSizes, factor: number): BenchSizes {
  return {
    mariadbTables: s.mariadbTables,
    mariadbRows: Math.round(s.mariadbRows * factor),
    pgbenchScale: Math.max(1, Math.round(s.pgbenchScale * factor)),
    redisKeys: Math.round(s.redisKeys * factor),
    mountBytes: Math.round(s.mountBytes * factor),
  };
}

/** The MariaDB database sysbench fills. */
export const MARIADB_DATABASE = 'sbtest';
/** The PostgreSQL database pgbench fills. */
export const PG_DATABASE = 'bench';

/**
 * Fills database `sbtest` with `sysbench oltp_read_write prepare` (tables `sbtest1..N`, InnoDB,
 * `N x rows` rows of about 190 bytes each plus a secondary index). The buffer pool is raised to
 * 1 GiB first (a throwaway server starts with 64 MiB), as a production server's would be.
 *
 * @throws Error naming the Debian package `sysbench` when it is missing
 */
export async function fillMariadb(server: MariadbServer, s: BenchSizes): Promise<void> {
  const sysbench = await requireBinary('sysbench', 'sysbench');
  await server.query(
    `SET GLOBAL innodb_buffer_pool_size = ${1024 * 1024 * 1024}; CREATE DATABASE ${MARIADB_DATABASE};`,
  );
  await runCommand(
    sysbench,
    [
      'oltp_read_write',
      '--db-driver=mysql',
      `--mysql-host=${server.host}`,
      `--mysql-port=${server.port}`,
      `--mysql-user=${server.user}`,
      `--mysql-password=${server.password}`,
      `--mysql-db=${MARIADB_DATABASE}`,
      `--tables=${s.mariadbTables}`,
      `--table-size=${s.mariadbRows}`,
      '--threads=2',
      'prepare',
    ],
    { timeoutMs: 3_600_000 },
  );
}

/**
 * Creates database `bench` and fills it with `pgbench -i -s <scale>` (the version-matched pgbench of
 * the server's bin directory; Debian package `postgresql`).
 */
export async function fillPostgres(server: PostgresServer, s: BenchSizes): Promise<void> {
  const pgbench = await requireBinary(path.join(server.binDir, 'pgbench'), 'postgresql');
  await server.psql(`CREATE DATABASE ${PG_DATABASE};`);
  await runCommand(
    pgbench,
    [
      '-i',
      '-q',
      '-s',
      String(s.pgbenchScale),
      '-h',
      server.host,
      '-p',
      String(server.port),
      '-U',
      server.user,
      PG_DATABASE,
    ],
    { timeoutMs: 3_600_000, env: { ...process.env, PGPASSWORD: '' } },
  );
}

/** One RESP command. */
function resp(args: Array<string | number>): string {
  let out = `*${args.length}\r\n`;
  for (const a of args) {
    const s = String(a);
    out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  }
  return out;
}

/**
 * The commands for key `i` of the mixed keyspace: 40% strings (100-byte values), 20% hashes,
 * 15% lists, 15% sets and 10% sorted sets (5 members each); every tenth key expires in a day.
 */
function keyCommands(i: number): string {
  const v = (n: number) => `value-${i}-${n}-`.padEnd(24, 'x');
  const r = i % 20;
  let key: string;
  let cmd: string;
  if (r < 8) {
    key = `str:${i}`;
    cmd = resp(['SET', key, `${v(0)}${'.'.repeat(76)}`]);
  } else if (r < 12) {
    key = `hash:${i}`;
    cmd = resp([
      'HSET',
      key,
      'name',
      v(1),
      'email',
      `u${i}@example.test`,
      'visits',
      i,
      'plan',
      'pro',
      'city',
      v(2),
    ]);
  } else if (r < 15) {
    key = `list:${i}`;
    cmd = resp(['RPUSH', key, v(1), v(2), v(3), v(4), v(5)]);
  } else if (r < 18) {
    key = `set:${i}`;
    cmd = resp(['SADD', key, v(1), v(2), v(3), v(4), v(5)]);
  } else {
    key = `zset:${i}`;
    cmd = resp(['ZADD', key, 1, v(1), 2, v(2), 3, v(3), 4, v(4), 5, v(5)]);
  }
  if (i % 10 === 0) cmd += resp(['EXPIRE', key, 86_400]);
  return cmd;
}

/**
 * Loads `s.redisKeys` keys of mixed types into database 0 through `redis-cli --pipe` (the mass
 * insertion the Redis manual recommends), streamed: the commands are never held whole in memory.
 * Also sets `repl-diskless-sync-delay 0`, so that an RDB transfer (`redis-cli --rdb`, which both
 * envsnap and the raw pipeline use) starts at once instead of waiting 5 s for more replicas.
 */
export async function fillRedis(server: RedisServer, s: BenchSizes): Promise<void> {
  const cli = await requireBinary('redis-cli', 'redis-tools');
  const client = server.client();
  try {
    await client.config('SET', 'repl-diskless-sync-delay', '0');
  } finally {
    client.disconnect();
  }
  const child = spawn(cli, ['-h', server.host, '-p', String(server.port), '--pipe'], {
    env: { ...process.env, REDISCLI_AUTH: server.password },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr.on('data', (b: Buffer) => (output += b.toString()));
  const closed = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  const batch = 5_000;
  for (let i = 0; i < s.redisKeys; i += batch) {
    let chunk = '';
    for (let j = i; j < Math.min(s.redisKeys, i + batch); j++) chunk += keyCommands(j);
    if (!child.stdin.write(chunk)) await once(child.stdin, 'drain');
  }
  child.stdin.end();
  const code = await closed;
  if (code !== 0 || !/errors: 0,/.test(output)) throw new Error(`redis-cli --pipe failed: ${output.trim()}`);
}

/** The key {@link changeRedis} writes; a restore that really loaded the backup removes it. */
export const REDIS_CHANGED_KEY = 'bench:changed-since-backup';

/**
 * One write on the Redis server before envsnap restores it, so that the restore does the work a
 * real one does. Without it the server is exactly where the backup was taken (same replication ID
 * and offset: the RDB of `redis-cli --rdb` carries both), so the target's `REPLICAOF` to the
 * temporary server that loaded that RDB ends in a partial resynchronization of 0 bytes, a no-op,
 * instead of the full sync that transfers and loads the backup. The key also makes a no-op
 * visible: the key count is one too many afterwards.
 */
export async function changeRedis(server: RedisServer): Promise<void> {
  const client = server.client();
  try {
    await client.set(REDIS_CHANGED_KEY, '1');
  } finally {
    client.disconnect();
  }
}

/** Where the mount's files are copied from: documentation, translations, JavaScript, Python, libraries. */
export const TREE_SOURCES: readonly string[] = [
  '/usr/share/doc',
  '/usr/share/locale',
  '/usr/share/javascript',
  '/usr/lib/python3.11',
  '/usr/lib/x86_64-linux-gnu',
  '/usr/lib/llvm-14',
  '/usr/lib/jvm',
];

/** Regular files, symlinks and directories of a tree, depth first, names sorted. */
async function* walk(
  root: string,
  rel = '',
): AsyncGenerator<{ rel: string; kind: 'file' | 'link' | 'dir'; size: number }> {
  let names: string[];
  try {
    names = (await readdir(path.join(root, rel))).sort();
  } catch {
    return;
  }
  for (const name of names) {
    const r = path.join(rel, name);
    const st = await lstat(path.join(root, r)).catch(() => undefined);
    if (!st) continue;
    if (st.isDirectory()) {
      yield { rel: r, kind: 'dir', size: 0 };
      yield* walk(root, r);
    } else if (st.isSymbolicLink()) yield { rel: r, kind: 'link', size: 0 };
    else if (st.isFile()) yield { rel: r, kind: 'file', size: st.size };
  }
}

/** What {@link makeBenchTree} copied. */
export interface BenchTree {
  files: number;
  bytes: number;
}

/**
 * Copies real files into `dir` until `bytes` bytes of regular files are there, taking the next
 * file always from the source in {@link TREE_SOURCES} that has given the fewest bytes so far (each
 * walked depth first with sorted names), so that every size holds the same mix: many small
 * documentation and translation files, scripts, and large libraries. At 800 MB that is about
 * 9,500 files. Symlinks are copied as links; each source lands in `dir/<last two path parts>`.
 */
export async function makeBenchTree(dir: string, bytes: number): Promise<BenchTree> {
  const sources = TREE_SOURCES.map((src) => ({
    src,
    dest: path.join(dir, src.split('/').slice(-2).join('-')),
    it: walk(src),
    taken: 0,
    exhausted: false,
  }));
  const done: BenchTree = { files: 0, bytes: 0 };
  while (done.bytes < bytes) {
    const s = sources.filter((x) => !x.exhausted).sort((a, b) => a.taken - b.taken)[0];
    if (!s) break;
    let next = await s.it.next();
    // Directories and links cost no budget: take them along with the next file.
    while (!next.done && next.value.kind !== 'file') {
      const e = next.value;
      const to = path.join(s.dest, e.rel);
      await mkdir(path.dirname(to), { recursive: true });
      if (e.kind === 'dir') await mkdir(to, { recursive: true });
      else await symlink(await readlink(path.join(s.src, e.rel)), to).catch(() => undefined);
      next = await s.it.next();
    }
    if (next.done) {
      s.exhausted = true;
      continue;
    }
    const to = path.join(s.dest, next.value.rel);
    await mkdir(path.dirname(to), { recursive: true });
    await copyFile(path.join(s.src, next.value.rel), to);
    s.taken += next.value.size;
    done.files++;
    done.bytes += next.value.size;
  }
  return done;
}
