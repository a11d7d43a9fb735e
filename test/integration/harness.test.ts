/**
 * Checks the test harness itself: throwaway servers start, datasets load, fingerprints are
 * non-trivial, stable when taken twice, and change when the data changes.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, unlink, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import {
  BIG_FILE_SIZE,
  fillRedis,
  loadSakilaMariadb,
  loadSakilaPostgres,
  makeMountTree,
} from '../helpers/datasets.js';
import type { RedisFillSummary, TreeSummary } from '../helpers/datasets.js';
import {
  mariadbFingerprint,
  postgresFingerprint,
  redisFingerprint,
  treeFingerprint,
  type MariadbFingerprint,
  type PostgresFingerprint,
  type RedisFingerprint,
  type TreeEntry,
} from '../helpers/fingerprints.js';
import {
  freePort,
  requireBinary,
  runCommand,
  startMariadb,
  startPostgres,
  startRedis,
  type MariadbServer,
  type PostgresServer,
  type RedisServer,
} from '../helpers/servers.js';

/** Set ENVSNAP_TEST_TIMINGS=1 to print start-up and load timings. */
const timings: Record<string, number> = {};
async function timed<T>(label: string, work: () => Promise<T>): Promise<T> {
  const start = performance.now();
  try {
    return await work();
  } finally {
    timings[label] = Math.round(performance.now() - start);
  }
}

/** Awaits all promises; on any failure, stops what did start and rethrows the first error. */
async function allOrStop<T extends readonly unknown[]>(promises: {
  [K in keyof T]: Promise<T[K]>;
}): Promise<T> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) {
    await Promise.allSettled(
      results.map(async (r) => {
        const value: unknown = r.status === 'fulfilled' ? r.value : undefined;
        if (
          value !== null &&
          typeof value === 'object' &&
          'stop' in value &&
          typeof value.stop === 'function'
        ) {
          await (value.stop as () => Promise<void>)();
        }
      }),
    );
    throw failed.reason;
  }
  return results.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

describe('test harness (servers, datasets, fingerprints)', function () {
  let maria: MariadbServer | undefined;
  let pg: PostgresServer | undefined;
  let redis: RedisServer | undefined;
  let treeDir: string | undefined;
  let redisFill: RedisFillSummary;
  let treeSummary: TreeSummary;

  let mariaFp: MariadbFingerprint;
  let pgFp: PostgresFingerprint;
  let redisFp: RedisFingerprint;
  let treeFp: TreeEntry[];

  const m = (): MariadbServer => maria ?? assert.fail('mariadb not started');
  const p = (): PostgresServer => pg ?? assert.fail('postgres not started');
  const r = (): RedisServer => redis ?? assert.fail('redis not started');
  const t = (): string => treeDir ?? assert.fail('tree not made');

  before(async function () {
    const all = performance.now();
    treeDir = path.join(await mkdtemp(path.join(tmpdir(), 'envsnap-tree-')), 'mount');
    const tree = timed('tree', () => makeMountTree(t()));
    [maria, pg, redis] = await allOrStop<[MariadbServer, PostgresServer, RedisServer]>([
      timed('mariadb start', () => startMariadb({ name: 'harness' })),
      timed('postgres start', () => startPostgres({ name: 'harness' })),
      timed('redis start', () => startRedis({ name: 'harness' })),
    ]);
    timings['all servers up'] = Math.round(performance.now() - all);
    [, , redisFill, treeSummary] = await Promise.all([
      timed('mariadb sakila load', () => loadSakilaMariadb(m())),
      timed('postgres sakila load', () => loadSakilaPostgres(p())),
      timed('redis fill', () => fillRedis(r())),
      tree,
    ]);
    timings['before() total'] = Math.round(performance.now() - all);
  });

  after(async function () {
    await Promise.allSettled([maria?.stop(), pg?.stop(), redis?.stop()]);
    if (treeDir !== undefined) await rm(path.dirname(treeDir), { recursive: true, force: true });
    if (process.env.ENVSNAP_TEST_TIMINGS) console.log('harness timings (ms):', timings);
  });

  describe('servers', function () {
    it('freePort returns distinct usable ports', async function () {
      const [a, b] = await Promise.all([freePort(), freePort()]);
      assert.ok(a > 0 && a < 65536 && b > 0 && b < 65536);
    });

    it('requireBinary resolves paths and names the Debian package when missing', async function () {
      assert.equal(path.isAbsolute(await requireBinary('mariadbd', 'mariadb-server')), true);
      await assert.rejects(
        requireBinary('envsnap-no-such-binary', 'envsnap-fake-package'),
        /envsnap-fake-package/,
      );
    });

    it('servers run on their own loopback ports, never the system ones', function () {
      for (const port of [m().port, p().port, r().port]) {
        assert.ok(![3306, 5432, 6379].includes(port), `port ${port}`);
      }
      assert.equal(new Set([m().port, p().port, r().port]).size, 3);
    });

    it('mariadb requires the root password over TCP', async function () {
      assert.equal(await readFile(m().passwordFile, 'utf8'), m().password);
      const mariadb = await requireBinary('mariadb', 'mariadb-client');
      const base = [
        '--no-defaults',
        '-h',
        '127.0.0.1',
        '-P',
        String(m().port),
        '-u',
        'root',
        '-e',
        'SELECT 1',
      ];
      await assert.rejects(runCommand(mariadb, base), /Access denied/);
      const ok = await runCommand(mariadb, [
        ...base,
        `--password=${m().password}`,
        '--batch',
        '--skip-column-names',
      ]);
      assert.equal(ok.stdout.trim(), '1');
      assert.equal((await m().query('SELECT @@port;')).trim(), String(m().port));
    });

    it('redis requires the password', async function () {
      assert.equal(await readFile(r().passwordFile, 'utf8'), r().password);
      const anonymous = new Redis({
        host: '127.0.0.1',
        port: r().port,
        lazyConnect: true,
        enableReadyCheck: false,
        maxRetriesPerRequest: 0,
      });
      try {
        await anonymous.connect();
        await assert.rejects(anonymous.get('user:000'), /NOAUTH/);
      } finally {
        anonymous.disconnect();
      }
    });

    it('postgres answers on its port as the postgres user', async function () {
      const row = (await p().psql("SELECT current_user || ' ' || current_setting('port')")).trim();
      assert.equal(row, `postgres ${p().port}`);
    });
  });

  describe('fingerprints of loaded data', function () {
    it('mariadb sakila: 16 base tables, 7 views, 6 triggers, routines, 16,044 rentals', async function () {
      mariaFp = await mariadbFingerprint(m(), 'sakila');
      assert.equal(Object.keys(mariaFp.tables).length, 16);
      assert.equal(mariaFp.tables.rental?.rows, 16044);
      assert.equal(mariaFp.tables.payment?.rows, 16049);
      assert.equal(mariaFp.tables.film?.rows, 1000);
      assert.equal(Object.keys(mariaFp.views).length, 7);
      // 3 film triggers from the schema file, 3 more (customer, payment, rental) from the data file.
      assert.equal(Object.keys(mariaFp.triggers).length, 6);
      assert.ok(Object.keys(mariaFp.routines).length >= 6, Object.keys(mariaFp.routines).join());
      for (const table of Object.values(mariaFp.tables)) assert.match(table.checksum, /^\d+$/);
      assert.match(mariaFp.tables.film?.createTable ?? '', /enum\('G','PG','PG-13','R','NC-17'\)/);
    });

    it('mariadb fingerprint is stable', async function () {
      assert.deepEqual(await mariadbFingerprint(m(), 'sakila'), mariaFp);
    });

    it('postgres sakila: 16,044 rentals, payment children, enum, domain, views, functions, triggers', async function () {
      pgFp = await postgresFingerprint(p(), 'sakila');
      assert.equal(pgFp.tables['public.rental']?.rows, 16044);
      assert.equal(pgFp.tables['public.film']?.rows, 1000);
      const children = Object.entries(pgFp.tables).filter(([, tb]) => tb.inherits.includes('public.payment'));
      assert.equal(children.length, 6);
      const paymentRows = [pgFp.tables['public.payment'], ...children.map(([, tb]) => tb)].reduce(
        (sum, tb) => sum + (tb?.rows ?? 0),
        0,
      );
      assert.ok(paymentRows > 16000, `payment rows ${paymentRows}`);
      assert.deepEqual(pgFp.enums['public.mpaa_rating'], ['G', 'PG', 'PG-13', 'R', 'NC-17']);
      assert.ok(pgFp.domains['public.year'], 'domain year');
      assert.ok(Object.keys(pgFp.views).length >= 5);
      assert.ok(Object.keys(pgFp.functions).length >= 5);
      assert.ok(Object.keys(pgFp.triggers).length >= 10);
      assert.equal(Object.keys(pgFp.rules).length, 6);
      assert.ok(Object.values(pgFp.sequences).some((s) => s.lastValue !== null));
      for (const table of Object.values(pgFp.tables)) assert.match(table.md5, /^[0-9a-f]{32}$/);
    });

    it('postgres fingerprint is stable', async function () {
      assert.deepEqual(await postgresFingerprint(p(), 'sakila'), pgFp);
    });

    it('redis: every type, TTLs, two databases, binary data', async function () {
      redisFp = await redisFingerprint(r());
      assert.deepEqual(Object.keys(redisFp), ['0', '3']);
      const db0 = redisFp[0] ?? {};
      assert.equal(Object.keys(db0).length, redisFill.keys[0]);
      assert.ok(Object.keys(db0).length >= 300, `db0 has ${Object.keys(db0).length} keys`);
      const types = new Set(Object.values(db0).map((k) => k.type));
      assert.deepEqual([...types].sort(), ['hash', 'list', 'set', 'stream', 'string', 'zset']);
      const withTtl = Object.values({ ...db0, ...redisFp[3] }).filter((k) => k.expireAt > 0);
      assert.equal(withTtl.length, redisFill.withTtl);
      assert.ok(withTtl.length >= 10);
      const short = db0['session:short']?.expireAt ?? 0;
      assert.ok(Math.abs(short - Date.now() - 600_000) < 60_000, `session:short expires at ${short}`);
      assert.equal(db0['str:expireat']?.expireAt, Date.UTC(2099, 0, 1));
      assert.equal(
        db0['str:binary']?.value,
        Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('hex'),
      );
      assert.ok(
        Object.keys(db0).some((k) => k.startsWith('hex:')),
        'binary key name',
      );
      const stream = db0['stream:events']?.value;
      assert.ok(stream !== undefined && !Array.isArray(stream) && typeof stream === 'object');
      assert.equal(stream.entries.length, 49);
      assert.deepEqual(
        stream.groups.map((g) => [g.name, g.pending]),
        [
          ['audit', 0],
          ['workers', 6],
        ],
      );
    });

    it('redis fingerprint is stable', async function () {
      assert.deepEqual(await redisFingerprint(r()), redisFp);
    });

    it('tree: symlinks, empty and private dirs, UTF-8 names, big file, modes, owner, mtimes', async function () {
      treeFp = await treeFingerprint(t());
      const byPath = new Map(treeFp.map((e) => [e.path, e]));
      assert.equal(treeFp.length, treeSummary.files + treeSummary.dirs + treeSummary.symlinks);
      assert.equal(treeFp.filter((e) => e.type === 'symlink').length, 4);
      assert.equal(byPath.get('links/absolute')?.target, '/etc/os-release');
      assert.equal(byPath.get('links/dangling')?.target, '../no/such/file');
      assert.equal(byPath.get('empty')?.type, 'dir');
      assert.ok(!treeFp.some((e) => e.path.startsWith('empty/')));
      assert.equal(byPath.get('private')?.mode, 0o700);
      assert.equal(byPath.get('private/secret.key')?.mode, 0o600);
      assert.equal(byPath.get('bin/run.sh')?.mode, 0o755);
      assert.equal(byPath.get('docs/café menu.txt')?.mode, 0o640);
      assert.equal(byPath.get('日本/ファイル.bin')?.type, 'file');
      assert.equal(byPath.get('data/big.bin')?.size, BIG_FILE_SIZE);
      assert.equal(byPath.get('owned-by-1234.txt')?.uid, 1234);
      assert.equal(byPath.get('docs/readme.txt')?.mtimeSec, Date.UTC(2020, 0, 2, 3, 4, 5) / 1000);
      const times = treeFp.map((e) => e.mtimeSec);
      assert.equal(new Set(times).size, times.length, 'every entry has its own mtime');
      assert.ok(
        times.every((s) => s < Date.UTC(2022, 0, 1) / 1000),
        'mtimes are fixed past dates',
      );
    });

    it('tree fingerprint is stable', async function () {
      assert.deepEqual(await treeFingerprint(t()), treeFp);
    });
  });

  describe('fingerprints detect changes', function () {
    it('mariadb: one changed row, then a dropped table', async function () {
      await m().query("UPDATE sakila.actor SET last_name = 'CHANGED' WHERE actor_id = 7;");
      const changed = await mariadbFingerprint(m(), 'sakila');
      assert.notDeepEqual(changed, mariaFp);
      assert.notEqual(changed.tables.actor?.checksum, mariaFp.tables.actor?.checksum);
      await m().query('DROP TABLE sakila.film_text;');
      const dropped = await mariadbFingerprint(m(), 'sakila');
      assert.equal(dropped.tables.film_text, undefined);
      assert.equal(Object.keys(dropped.tables).length, 15);
    });

    it('postgres: one changed row, a moved sequence, then a dropped table', async function () {
      await p().psql("UPDATE actor SET last_name = 'CHANGED' WHERE actor_id = 7;", 'sakila');
      const changed = await postgresFingerprint(p(), 'sakila');
      assert.notEqual(changed.tables['public.actor']?.md5, pgFp.tables['public.actor']?.md5);
      assert.equal(changed.tables['public.actor']?.rows, pgFp.tables['public.actor']?.rows);
      await p().psql("SELECT setval('actor_actor_id_seq', 5000);", 'sakila');
      const moved = await postgresFingerprint(p(), 'sakila');
      assert.notDeepEqual(moved.sequences, pgFp.sequences);
      // CASCADE also drops the INSERT rule on payment that routes rows to this child.
      await p().psql('DROP TABLE payment_p2007_06 CASCADE;', 'sakila');
      const dropped = await postgresFingerprint(p(), 'sakila');
      assert.equal(dropped.tables['public.payment_p2007_06'], undefined);
      assert.equal(Object.keys(dropped.rules).length, Object.keys(pgFp.rules).length - 1);
    });

    it('redis: a changed expiry, then FLUSHALL', async function () {
      const client = r().client(0);
      try {
        await client.pexpire('user:050', 3_600_000);
        const changed = await redisFingerprint(r());
        assert.notDeepEqual(changed, redisFp);
        assert.ok((changed[0]?.['user:050']?.expireAt ?? -1) > 0);
        await client.flushall();
        assert.deepEqual(await redisFingerprint(r()), {});
      } finally {
        client.disconnect();
      }
    });

    it('tree: a changed mtime, a changed mode, a deleted file', async function () {
      await utimes(path.join(t(), 'docs/readme.txt'), 1_600_000_000, 1_600_000_001);
      assert.notDeepEqual(await treeFingerprint(t()), treeFp);
      await chmod(path.join(t(), 'bin/run.sh'), 0o744);
      assert.notDeepEqual(await treeFingerprint(t()), treeFp);
      await unlink(path.join(t(), 'data/empty.txt'));
      const after = await treeFingerprint(t());
      assert.equal(after.length, treeFp.length - 1);
    });
  });

  describe('stop', function () {
    it('stops every server, removes its directory, and is safe to call twice', async function () {
      const servers = [m(), p(), r()];
      await Promise.all(servers.map((s) => s.stop()));
      await Promise.all(servers.map((s) => s.stop()));
      for (const s of servers) {
        assert.equal(existsSync(s.dir), false, `${s.dir} removed`);
        assert.throws(() => process.kill(s.pid, 0), /ESRCH/, `pid ${s.pid} gone`);
      }
    });
  });
});
