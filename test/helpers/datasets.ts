/**
 * Test data: the Sakila sample database for MariaDB and PostgreSQL, a Redis keyspace with every
 * data type and TTLs, and a directory tree with the awkward cases a file backup must keep.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, lutimes, mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChainableCommander, Redis } from 'ioredis';
import type { MariadbServer, PostgresServer, RedisServer } from './servers.js';

/**
 * Directory of the repository (the nearest directory above this file holding package.json;
 * this file runs compiled from dist/test/helpers/).
 *
 * @returns absolute path of the repository root
 */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/**
 * The shared datasets directory: `$ENVSNAP_DATASETS`, else `<repo root>/../shared/datasets`.
 *
 * @returns absolute path
 * @throws Error when the directory does not exist
 */
export function datasetsDir(): string {
  const dir = process.env.ENVSNAP_DATASETS ?? path.resolve(repoRoot(), '..', 'shared', 'datasets');
  if (!existsSync(dir)) {
    throw new Error(
      `datasets directory ${dir} not found; set ENVSNAP_DATASETS to the directory with sakila/`,
    );
  }
  return dir;
}

function sakilaFile(name: string): string {
  const file = path.join(datasetsDir(), 'sakila', name);
  if (!existsSync(file)) throw new Error(`dataset file ${file} not found`);
  return file;
}

/**
 * Loads Sakila into a MariaDB server (schema then data, utf8mb4), creating database `sakila`
 * (16 base tables, 7 views, 3 triggers, 6 routines; 16,044 rentals).
 *
 * @param server a server from `startMariadb`
 */
export async function loadSakilaMariadb(server: MariadbServer): Promise<void> {
  await server.queryFile(sakilaFile('mysql-sakila-schema.sql'));
  await server.queryFile(sakilaFile('mysql-sakila-data.sql'));
}

/**
 * Loads Sakila into a PostgreSQL server: `CREATE DATABASE`, then the schema and data scripts
 * with ON_ERROR_STOP (enum, domain, inheritance children payment_p2007_01..06, functions,
 * triggers; 16,044 rentals).
 *
 * @param server a server from `startPostgres`
 * @param db database to create and fill (must not exist)
 */
export async function loadSakilaPostgres(server: PostgresServer, db = 'sakila'): Promise<void> {
  await server.psql(`CREATE DATABASE "${db.replace(/"/g, '""')}";`);
  await server.psqlFile(sakilaFile('postgres-sakila-schema.sql'), db);
  await server.psqlFile(sakilaFile('postgres-sakila-data.sql'), db);
}

/** What {@link fillRedis} wrote. */
export interface RedisFillSummary {
  /** Number of keys per database index (0 and 3). */
  keys: Record<number, number>;
  /** Number of keys with an expiry, all databases. */
  withTtl: number;
}

async function execPipeline(pipeline: ChainableCommander): Promise<void> {
  const results = await pipeline.exec();
  for (const [error] of results ?? []) {
    if (error) throw error;
  }
}

const HOUR_MS = 3_600_000;

/**
 * Fills a Redis server with every data type: in db 0 about 330 keys (strings incl. raw binary,
 * UTF-8, empty, 100 KiB and integer-encoded; lists incl. a 1,000-item one; intset, listpack and
 * hashtable sets; sorted sets with ±inf and fractional scores; small and 600-field hashes; a
 * stream with a deleted entry, two consumer groups and pending entries; a HyperLogLog; a bitmap;
 * a key whose name is binary), and 4 keys in db 3. Expiries (PEXPIRE): 1 h on user:000..009,
 * 2 h on queue:000..004 and leader:000, 10 min on session:short, 1 h + 123 ms on a hash, an
 * absolute EXPIREAT in 2099; every other key has none.
 *
 * @param server a server from `startRedis` (databases 0 and 3 should be empty)
 * @returns key counts per database and the number of keys with a TTL
 */
export async function fillRedis(server: RedisServer): Promise<RedisFillSummary> {
  const r = server.client(0);
  const r3 = server.client(3);
  try {
    let p = r.pipeline();
    // Strings.
    for (let i = 0; i < 200; i++) {
      const id = String(i).padStart(3, '0');
      p.set(`user:${id}`, JSON.stringify({ id: i, name: `user ${i}`, email: `u${i}@example.test` }));
    }
    const allBytes = Buffer.alloc(256);
    for (let i = 0; i < 256; i++) allBytes[i] = i;
    p.set('str:binary', allBytes);
    p.set('str:utf8', 'héllo wörld — 日本語のテキスト — 🚀✓');
    p.set('str:empty', '');
    p.set('str:big', randomBytes(100 * 1024));
    p.set('str:crlf', 'line1\r\nline2\n\0nul');
    p.set('counter', '0');
    p.incrby('counter', 41);
    p.incr('counter');
    p.set(
      Buffer.from([0x00, 0xff, 0xfe, 0x62, 0x69, 0x6e, 0x3a, 0x6b, 0x65, 0x79]),
      'value of a binary key name',
    );
    p.set('ключ:日本', 'UTF-8 key name');
    // Lists.
    for (let i = 0; i < 30; i++) {
      const id = String(i).padStart(3, '0');
      p.rpush(`queue:${id}`, ...Array.from({ length: 5 + i }, (_, j) => `job-${i}-${j}`));
    }
    p.rpush('list:long', ...Array.from({ length: 1000 }, (_, j) => `item ${j} ${'x'.repeat(j % 50)}`));
    p.rpush('list:binary', allBytes, Buffer.from([0]), 'text', '');
    // Sets.
    for (let i = 0; i < 20; i++) {
      p.sadd(
        `tags:${String(i).padStart(3, '0')}`,
        ...Array.from({ length: 3 + i }, (_, j) => `tag${(j * 7) % 50}`),
      );
    }
    p.sadd('set:ints', 1, 2, 3, 42, -7, 1_000_000);
    p.sadd('set:big', ...Array.from({ length: 300 }, (_, j) => `member-${j}`));
    // Sorted sets.
    for (let i = 0; i < 20; i++) {
      const members: (string | number)[] = [];
      for (let j = 0; j < 5 + i; j++) members.push((j * 37) % 101, `player-${j}`);
      p.zadd(`leader:${String(i).padStart(3, '0')}`, ...members);
    }
    p.zadd(
      'zset:edge',
      '-inf',
      'minus-infinity',
      'inf',
      'plus-infinity',
      0.1,
      'a tenth',
      -2.5,
      'negative',
      0,
      'zero',
    );
    p.zadd('zset:big', ...Array.from({ length: 200 }, (_, j) => [j * 1.5, `m${j}`]).flat());
    // Hashes.
    for (let i = 0; i < 30; i++) {
      p.hset(`profile:${String(i).padStart(3, '0')}`, {
        name: `Name ${i}`,
        city: i % 2 === 0 ? 'Zürich' : '東京',
        visits: String(i * 3),
      });
    }
    p.hset(
      'hash:big',
      Object.fromEntries(Array.from({ length: 600 }, (_, j) => [`field:${j}`, `value ${j}`])),
    );
    p.hset('hash:ttl', { a: '1', b: '2' });
    // HyperLogLog and bitmap.
    p.pfadd('hll:visitors', ...Array.from({ length: 1000 }, (_, j) => `visitor-${j}`));
    for (const offset of [0, 3, 7, 8, 1000, 65_535]) p.setbit('bitmap:flags', offset, 1);
    // Expiries.
    for (let i = 0; i < 10; i++) p.pexpire(`user:${String(i).padStart(3, '0')}`, HOUR_MS);
    for (let i = 0; i < 5; i++) p.pexpire(`queue:${String(i).padStart(3, '0')}`, 2 * HOUR_MS);
    p.pexpire('leader:000', 2 * HOUR_MS);
    p.set('session:short', 'expires in ten minutes', 'PX', 600_000);
    p.pexpire('hash:ttl', HOUR_MS + 123);
    p.set('str:expireat', 'absolute expiry');
    p.expireat('str:expireat', Math.floor(Date.UTC(2099, 0, 1) / 1000));
    await execPipeline(p);

    // A stream with a consumer group that has pending and acknowledged entries.
    const ids: string[] = [];
    for (let i = 0; i < 50; i++) {
      const id = await r.xadd('stream:events', '*', 'type', i % 3 === 0 ? 'order' : 'click', 'n', String(i));
      if (id === null) throw new Error('XADD returned null');
      ids.push(id);
    }
    await r.xdel('stream:events', ids[10]!);
    await r.xgroup('CREATE', 'stream:events', 'workers', '0');
    await r.call('XREADGROUP', 'GROUP', 'workers', 'alice', 'COUNT', '5', 'STREAMS', 'stream:events', '>');
    await r.xack('stream:events', 'workers', ids[0]!, ids[1]!);
    await r.call('XREADGROUP', 'GROUP', 'workers', 'bob', 'COUNT', '3', 'STREAMS', 'stream:events', '>');
    await r.xgroup('CREATE', 'stream:events', 'audit', '$');

    p = r3.pipeline();
    p.set('cache:page:/', '<html>home</html>', 'PX', HOUR_MS);
    p.hset('cache:meta', { hits: '10', misses: '2' });
    p.rpush('cache:log', 'a', 'b', 'c');
    p.sadd('cache:set', 'x', 'y');
    await execPipeline(p);

    const keys: Record<number, number> = { 0: await r.dbsize(), 3: await r3.dbsize() };
    const withTtl = (await expiringKeys(r)) + (await expiringKeys(r3));
    return { keys, withTtl };
  } finally {
    r.disconnect();
    r3.disconnect();
  }
}

async function expiringKeys(client: Redis): Promise<number> {
  const info = await client.info('keyspace');
  const db = (client.options.db ?? 0).toString();
  const match = new RegExp(`^db${db}:keys=\\d+,expires=(\\d+)`, 'm').exec(info);
  return match ? Number(match[1]) : 0;
}

/** What {@link makeMountTree} created (the root directory itself not counted). */
export interface TreeSummary {
  files: number;
  dirs: number;
  symlinks: number;
  /** Total bytes of regular files. */
  bytes: number;
}

/** Size of the big random file: 3 MiB plus an odd tail, so no chunk size divides it. */
export const BIG_FILE_SIZE = 3 * 1024 * 1024 + 123;

/**
 * Builds a tree for file-backup tests under `dir` (created if missing): nested directories, an
 * empty directory, a 0700 directory, a dot directory; text and binary files (random bytes, one
 * of {@link BIG_FILE_SIZE} bytes), an empty file; names with spaces and UTF-8 (`docs/café menu.txt`,
 * `日本/ファイル.bin`); a relative, an absolute (`/etc/os-release`), a dangling and a directory
 * symlink; modes 0600, 0640, 0644, 0755; one file owned by uid/gid 1234; and fixed mtimes in
 * whole seconds on every entry (set bottom-up, symlinks with lutimes).
 *
 * @param dir target directory; its own mode and mtime are left alone
 * @returns counts of what was created
 */
export async function makeMountTree(dir: string): Promise<TreeSummary> {
  await mkdir(dir, { recursive: true });
  const summary: TreeSummary = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  const created: { rel: string; kind: 'file' | 'dir' | 'symlink' }[] = [];
  const at = (rel: string): string => path.join(dir, ...rel.split('/'));

  const mkdirs = async (rel: string, mode = 0o755): Promise<void> => {
    await mkdir(at(rel), { recursive: true });
    await chmod(at(rel), mode);
    created.push({ rel, kind: 'dir' });
    summary.dirs++;
  };
  const file = async (rel: string, content: string | Buffer, mode = 0o644): Promise<void> => {
    await writeFile(at(rel), content);
    await chmod(at(rel), mode);
    created.push({ rel, kind: 'file' });
    summary.files++;
    summary.bytes += Buffer.byteLength(content);
  };
  const link = async (rel: string, target: string): Promise<void> => {
    await symlink(target, at(rel));
    created.push({ rel, kind: 'symlink' });
    summary.symlinks++;
  };

  for (const d of [
    'docs',
    'docs/notes',
    'docs/notes/deep',
    'docs/notes/deep/deeper',
    '日本',
    'bin',
    'data',
  ]) {
    await mkdirs(d);
  }
  await mkdirs('empty');
  await mkdirs('private', 0o700);
  await mkdirs('.hidden');
  await mkdirs('with space', 0o750);
  await mkdirs('links');

  await file('docs/readme.txt', 'envsnap test tree\nsecond line\n');
  await file('docs/café menu.txt', 'Crème brûlée — 4,50 €\nSmørrebrød\n', 0o640);
  await file('docs/notes/deep/deeper/leaf.txt', 'deep leaf\n'.repeat(100));
  await file('日本/ファイル.bin', randomBytes(64 * 1024));
  await file('bin/run.sh', '#!/bin/sh\necho "hello from envsnap"\n', 0o755);
  await file('data/big.bin', randomBytes(BIG_FILE_SIZE));
  await file('data/one-byte.bin', Buffer.from([0xff]));
  await file('data/empty.txt', '');
  await file('private/secret.key', randomBytes(32).toString('base64') + '\n', 0o600);
  await file('.hidden/config', 'key = value\n', 0o600);
  await file('with space/file (1) [copy].txt', 'spaces and brackets\n');
  await file('owned-by-1234.txt', 'not owned by root\n', 0o640);
  await chown(at('owned-by-1234.txt'), 1234, 1234);

  await link('links/relative', '../docs/readme.txt');
  await link('links/absolute', '/etc/os-release');
  await link('links/dangling', '../no/such/file');
  await link('links/to-dir', '../docs');

  // Fixed, distinct, whole-second mtimes; directories last and deepest first, since creating
  // entries inside a directory updates its mtime.
  const base = Date.UTC(2020, 0, 2, 3, 4, 5) / 1000;
  const stamp = (i: number): number => base + i * 86_400 + i * 7;
  let i = 0;
  for (const entry of created) {
    if (entry.kind === 'dir') continue;
    const t = stamp(i++);
    if (entry.kind === 'symlink') await lutimes(at(entry.rel), t, t);
    else await utimes(at(entry.rel), t, t);
  }
  const dirs = created
    .filter((entry) => entry.kind === 'dir')
    .sort((a, b) => b.rel.split('/').length - a.rel.split('/').length);
  for (const entry of dirs) {
    const t = stamp(i++);
    await utimes(at(entry.rel), t, t);
  }
  return summary;
}
