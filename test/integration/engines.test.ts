/**
 * Each engine against throwaway servers: plan, dump every unit to a file, change the data,
 * restore every unit, and compare fingerprints with the state at backup time; then restore into
 * a second, fresh server and compare again.
 */
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { engineFor } from '../../agent/engines/index.js';
import { REDIS_UNIT } from '../../agent/engines/redis.js';
import type { DumpUnit, Engine, EngineContext, ServiceTarget } from '../../agent/engines/index.js';
import { runTool, spawnTool, toolOnPath } from '../../agent/tool-process.js';
import {
  ArtifactCorruptError,
  TargetMismatchError,
  TaskAbortedError,
  ToolFailedError,
  ToolMissingError,
} from '../../shared/errors.js';
import { fillRedis, loadSakilaMariadb, loadSakilaPostgres } from '../helpers/datasets.js';
import { mariadbFingerprint, postgresFingerprint, redisFingerprint } from '../helpers/fingerprints.js';
import {
  startMariadb,
  startPostgres,
  startRedis,
  type MariadbServer,
  type PostgresServer,
  type RedisServer,
} from '../helpers/servers.js';

interface TestContext extends EngineContext {
  logs: string[];
}

async function makeContext(): Promise<TestContext> {
  const logs: string[] = [];
  return {
    signal: new AbortController().signal,
    workDir: await mkdtemp(join(tmpdir(), 'envsnap-engine-work-')),
    log: (message) => logs.push(message),
    logs,
  };
}

/** Dumps every planned unit into `dir`; returns the units. */
async function dumpAll(
  engine: Engine,
  service: ServiceTarget,
  ctx: EngineContext,
  dir: string,
): Promise<DumpUnit[]> {
  const units = await engine.plan(service, ctx);
  for (const unit of units) {
    const dump = await engine.dump(service, unit, ctx);
    await Promise.all([pipeline(dump.stdout, createWriteStream(join(dir, unit.fileName))), dump.wait()]);
  }
  return units;
}

async function restoreAll(
  engine: Engine,
  service: ServiceTarget,
  units: DumpUnit[],
  ctx: EngineContext,
  dir: string,
): Promise<void> {
  for (const unit of units)
    await engine.restore(service, unit, createReadStream(join(dir, unit.fileName)), ctx);
}

async function firstBytes(file: string, n: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(n);
    await fh.read(buf, 0, n, 0);
    return buf;
  } finally {
    await fh.close();
  }
}

describe('engines', function () {
  this.timeout(300_000);
  let files: string;
  let ctx: TestContext;

  beforeEach(async () => {
    files = await mkdtemp(join(tmpdir(), 'envsnap-engine-files-'));
    ctx = await makeContext();
  });
  afterEach(async () => {
    // Engines clean up after themselves: option files, fetched RDBs, temporary servers' dirs.
    assert.deepEqual(await readdir(ctx.workDir), [], 'the engine left files in its work directory');
    await rm(files, { recursive: true, force: true });
    await rm(ctx.workDir, { recursive: true, force: true });
  });

  describe('tool-process', () => {
    it('maps a missing binary, a failure and an abort', async () => {
      await assert.rejects(
        runTool('envsnap-no-such-tool', [], { debianPackage: 'no-such-package' }),
        (err: unknown) => err instanceof ToolMissingError && /no-such-package/.test(err.describe()),
      );
      await assert.rejects(
        runTool('sh', ['-c', 'echo first >&2; echo last words >&2; exit 3'], { debianPackage: 'dash' }),
        (err: unknown) =>
          err instanceof ToolFailedError && err.exitCode === 3 && /last words/.test(err.message),
      );
      assert.equal(await runTool('cat', [], { input: 'hello', debianPackage: 'coreutils' }), 'hello');
      const ac = new AbortController();
      const proc = spawnTool('sleep', ['30'], { signal: ac.signal, debianPackage: 'coreutils' });
      setTimeout(() => ac.abort(), 50);
      await assert.rejects(proc.wait(), TaskAbortedError);
      assert.match((await toolOnPath('sh')) ?? '', /^\/.*\/sh$/);
      assert.equal(await toolOnPath('envsnap-no-such-tool'), null);
    });

    it('keeps only the tail of a long stderr', async () => {
      await assert.rejects(
        runTool('sh', ['-c', 'head -c 100000 /dev/zero | tr "\\0" x >&2; echo END >&2; exit 1'], {
          debianPackage: 'dash',
        }),
        (err: unknown) =>
          err instanceof ToolFailedError && err.message.length < 17_000 && /END$/.test(err.message),
      );
    });
  });

  describe('mariadb', () => {
    let source: MariadbServer;
    let target: MariadbServer;
    const service = (server: MariadbServer, databases: string[] = []): ServiceTarget => ({
      name: 'db',
      kind: 'mariadb',
      connection: { host: server.host, port: server.port, user: server.user, password: server.password },
      databases,
    });

    before(async () => {
      [source, target] = await Promise.all([
        startMariadb({ name: 'source' }),
        startMariadb({ name: 'target' }),
      ]);
      await loadSakilaMariadb(source);
      await source.query(
        'CREATE TABLE sakila.odd (id INT PRIMARY KEY, b LONGBLOB, t TEXT CHARACTER SET utf8mb4, l TEXT CHARACTER SET latin1) ENGINE=InnoDB;' +
          "INSERT INTO sakila.odd VALUES (1, UNHEX('00010D0A0D5C27225A1A'), 'emoji 😀 crlf\\r\\n tab\\t', 'café'), (2, NULL, CONCAT('x', CHAR(0), 'y'), '');" +
          'CREATE TABLE sakila.isam (id INT) ENGINE=MyISAM; INSERT INTO sakila.isam VALUES (1), (2);' +
          'CREATE EVENT sakila.nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM sakila.isam WHERE id > 100;' +
          'CREATE DATABASE `we ird-db`; CREATE TABLE `we ird-db`.t (x INT); INSERT INTO `we ird-db`.t VALUES (7);',
      );
    });
    after(async () => {
      await Promise.all([source?.stop(), target?.stop()]);
    });

    it('plans every non-system database', async () => {
      const units = await engineFor('mariadb').plan(service(source), ctx);
      const names = units.map((u) => u.database);
      assert.ok(names.includes('sakila') && names.includes('we ird-db'), names.join(','));
      for (const system of ['mysql', 'information_schema', 'performance_schema', 'sys']) {
        assert.ok(!names.includes(system));
      }
      assert.deepEqual(
        units.find((u) => u.database === 'we ird-db'),
        { database: 'we ird-db', format: 'sql', fileName: 'we%20ird-db.sql' },
      );
      const named = await engineFor('mysql').plan(service(source, ['sakila']), ctx);
      assert.deepEqual(named, [{ database: 'sakila', format: 'sql', fileName: 'sakila.sql' }]);
    });

    it('restores over changed data, and into a fresh server, equal to the backup', async () => {
      const engine = engineFor('mariadb');
      const databases = ['sakila', 'we ird-db'];
      const before = await Promise.all(databases.map((db) => mariadbFingerprint(source, db)));
      const units = await dumpAll(engine, service(source, databases), ctx, files);
      assert.match((await firstBytes(join(files, 'sakila.sql'), 200)).toString(), /MariaDB dump/);

      await source.query(
        'CREATE TABLE sakila.added (x INT); DELETE FROM sakila.payment WHERE payment_id % 3 = 0;' +
          'DROP VIEW sakila.staff_list; DROP TRIGGER sakila.ins_film; DROP EVENT sakila.nightly;' +
          'UPDATE sakila.odd SET b = NULL; DROP TABLE `we ird-db`.t;',
      );
      await restoreAll(engine, service(source, databases), units, ctx, files);
      const after = await Promise.all(databases.map((db) => mariadbFingerprint(source, db)));
      assert.deepEqual(after, before);

      await restoreAll(engine, service(target, databases), units, ctx, files);
      assert.deepEqual(await Promise.all(databases.map((db) => mariadbFingerprint(target, db))), before);
    });

    it('fails with the tool error and no secret when the password is wrong', async () => {
      const wrong = {
        ...service(source, ['sakila']),
        connection: { ...service(source).connection, password: 'wr0ng#"pw' },
      };
      const dump = await engineFor('mariadb').dump(
        wrong,
        { database: 'sakila', format: 'sql', fileName: 'sakila.sql' },
        ctx,
      );
      dump.stdout.resume();
      await assert.rejects(
        dump.wait(),
        (err: unknown) =>
          err instanceof ToolFailedError &&
          /Access denied/.test(err.message) &&
          !err.message.includes('wr0ng'),
      );
    });

    it('stops a dump when the task is aborted', async () => {
      const ac = new AbortController();
      const dump = await engineFor('mariadb').dump(
        service(source),
        { database: 'sakila', format: 'sql', fileName: 'sakila.sql' },
        { ...ctx, signal: ac.signal },
      );
      dump.stdout.once('data', () => ac.abort());
      dump.stdout.resume();
      await assert.rejects(dump.wait(), TaskAbortedError);
    });
  });

  describe('postgresql', () => {
    let source: PostgresServer;
    let target: PostgresServer;
    const service = (server: PostgresServer, databases: string[] = []): ServiceTarget => ({
      name: 'pg',
      kind: 'postgresql',
      connection: { host: server.host, port: server.port, user: server.user },
      databases,
    });

    before(async () => {
      [source, target] = await Promise.all([
        startPostgres({ name: 'source' }),
        startPostgres({ name: 'target' }),
      ]);
      await loadSakilaPostgres(source);
      await source.psql(
        "CREATE ROLE app LOGIN PASSWORD 'app-secret'; CREATE ROLE reader;" +
          'CREATE DATABASE "app db" OWNER app;' +
          'ALTER DATABASE "app db" SET work_mem = \'8MB\'; COMMENT ON DATABASE "app db" IS \'the app\';',
      );
      await source.psql(
        'SET ROLE app; CREATE TABLE t (id serial PRIMARY KEY, v text, b bytea);' +
          "INSERT INTO t (v, b) VALUES ('a😀', '\\x000102'), ('b', NULL); SELECT setval('t_id_seq', 1000);" +
          "SELECT lo_from_bytea(0, '\\x626c6f6200'::bytea); GRANT SELECT ON t TO reader;",
        'app db',
      );
    });
    after(async () => {
      await Promise.all([source?.stop(), target?.stop()]);
    });

    it('plans the globals first, then every database but the templates', async () => {
      const units = await engineFor('postgresql').plan(service(source), ctx);
      assert.deepEqual(units, [
        { database: '', format: 'pg_globals', fileName: 'globals.sql' },
        { database: 'app db', format: 'pg_custom', fileName: 'app%20db.pgdump' },
        { database: 'postgres', format: 'pg_custom', fileName: 'postgres.pgdump' },
        { database: 'sakila', format: 'pg_custom', fileName: 'sakila.pgdump' },
      ]);
    });

    it('restores over changed data (with a session connected), and into a fresh server, equal to the backup', async () => {
      const engine = engineFor('postgresql');
      const databases = ['sakila', 'app db', 'postgres'];
      const extra = async (server: PostgresServer): Promise<string> =>
        server.psql(
          "SELECT datacl::text, pg_get_userbyid(datdba), shobj_description(oid, 'pg_database'), " +
            '(SELECT setconfig::text FROM pg_db_role_setting WHERE setdatabase = d.oid), ' +
            "(SELECT count(*) FROM pg_roles WHERE rolname IN ('app', 'reader')) FROM pg_database d WHERE datname = 'app db'",
        );
      const largeObjects = (server: PostgresServer): Promise<string> =>
        server.psql("SELECT encode(lo_get(oid), 'hex') FROM pg_largeobject_metadata", 'app db');
      const before = await Promise.all(databases.map((db) => postgresFingerprint(source, db)));
      const beforeExtra = await extra(source);
      const units = await dumpAll(engine, service(source, databases), ctx, files);
      assert.equal((await firstBytes(join(files, 'sakila.pgdump'), 5)).toString(), 'PGDMP');

      await source.psql(
        'CREATE TABLE added (x int); DELETE FROM payment_p2007_02 WHERE payment_id % 2 = 0;' +
          "DROP VIEW staff_list; ALTER TYPE mpaa_rating ADD VALUE 'X'; SELECT setval('actor_actor_id_seq', 5);",
        'sakila',
      );
      await source.psql('DROP TABLE t', 'app db');
      const idle = source.psql('SELECT pg_sleep(120)', 'sakila').catch(() => 'terminated');
      await new Promise((resolve) => setTimeout(resolve, 300));
      await restoreAll(engine, service(source, databases), units, ctx, files);
      assert.equal(await idle, 'terminated');
      assert.deepEqual(await Promise.all(databases.map((db) => postgresFingerprint(source, db))), before);
      assert.equal(await extra(source), beforeExtra);
      assert.equal((await largeObjects(source)).trim(), '626c6f6200');
      assert.ok(
        ctx.logs.some((line) => /globals: \d+ statements skipped/.test(line)),
        ctx.logs.join('\n'),
      );

      await restoreAll(engine, service(target, databases), units, ctx, files);
      assert.deepEqual(await Promise.all(databases.map((db) => postgresFingerprint(target, db))), before);
      assert.equal(await extra(target), beforeExtra);
      assert.equal((await largeObjects(target)).trim(), '626c6f6200');
    });

    it('fails a database restore on the first error', async () => {
      const bad = join(files, 'bad.pgdump');
      const dump = await engineFor('postgresql').dump(
        service(source),
        { database: 'sakila', format: 'pg_custom', fileName: 'x' },
        ctx,
      );
      // Cut the archive: pg_restore must fail, and the failure must surface.
      await Promise.all([pipeline(dump.stdout, createWriteStream(bad)), dump.wait()]);
      const fh = await open(bad, 'r+');
      await fh.truncate(200_000);
      await fh.close();
      // Restored over the target's sakila (from the test above), which must stay as it was.
      const before = await postgresFingerprint(target, 'sakila');
      await assert.rejects(
        engineFor('postgresql').restore(
          service(target),
          { database: 'sakila', format: 'pg_custom', fileName: 'x' },
          createReadStream(bad),
          ctx,
        ),
        ToolFailedError,
      );
      assert.deepEqual(await postgresFingerprint(target, 'sakila'), before);
      assert.equal(
        (
          await target.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'sakila\\_\\_envsnap%'")
        ).trim(),
        '0',
      );
    });
  });

  describe('redis', () => {
    let source: RedisServer;
    let target: RedisServer;
    const service = (server: RedisServer): ServiceTarget => ({
      name: 'cache',
      kind: 'redis',
      connection: { host: server.host, port: server.port, password: server.password },
      databases: [],
    });

    before(async () => {
      [source, target] = await Promise.all([startRedis({ name: 'source' }), startRedis({ name: 'target' })]);
      await fillRedis(source);
      const client = source.client(0);
      await client.call(
        'FUNCTION',
        'LOAD',
        "#!lua name=envsnaplib\nredis.register_function('envsnap_hello', function() return 'hi' end)",
      );
      client.disconnect();
    });
    after(async () => {
      await Promise.all([source?.stop(), target?.stop()]);
    });

    it('restores over changed data, and into a fresh server, equal to the backup (keys, types, exact expiries, functions)', async () => {
      const engine = engineFor('redis');
      const before = await redisFingerprint(source);
      const units = await dumpAll(engine, service(source), ctx, files);
      assert.deepEqual(units, [
        { database: '', format: 'rdb', fileName: 'dump.rdb', redis: { databases: 16, modules: [] } },
      ]);
      assert.equal((await firstBytes(join(files, 'dump.rdb'), 5)).toString(), 'REDIS');

      const client = source.client(0);
      await client.set('added', 'x');
      await client.del('user:050', 'stream:events');
      await client.pexpire('str:utf8', 5000);
      await client.select(5);
      await client.set('in-db-5', 'x');
      await client.call('FUNCTION', 'FLUSH');
      await restoreAll(engine, service(source), units, ctx, files);
      assert.deepEqual(await redisFingerprint(source), before);
      await client.select(0);
      assert.equal(await client.call('FCALL', 'envsnap_hello', '0'), 'hi');
      client.disconnect();
      assert.ok(
        ctx.logs.some((line) =>
          /redis: restored \d+ keys in 2 databases \(full sync, the backup's rdb sent by the agent\)/.test(
            line,
          ),
        ),
        ctx.logs.join('\n'),
      );
      assert.ok(!ctx.logs.some((line) => /temporary server/.test(line)), ctx.logs.join('\n'));

      await restoreAll(engine, service(target), units, ctx, files);
      assert.deepEqual(await redisFingerprint(target), before);
      const admin = target.client(0);
      assert.match(String(await admin.info('replication')), /^role:master\r?$/m);
      assert.deepEqual(await admin.config('GET', 'masterauth'), ['masterauth', '']);
      admin.disconnect();
    });

    it('goes through a temporary server for a backup that does not record its source (older manifests)', async () => {
      const engine = engineFor('redis');
      const before = await redisFingerprint(source);
      const units = await dumpAll(engine, service(source), ctx, files);
      const old = units.map(({ redis: _redis, ...unit }) => unit);
      const admin = target.client(0);
      await admin.flushall();
      await admin.set('stale', 'x');
      admin.disconnect();
      const logs: string[] = [];
      await restoreAll(engine, service(target), old, { ...ctx, log: (m) => logs.push(m) }, files);
      assert.deepEqual(await redisFingerprint(target), before);
      assert.ok(
        logs.some((l) => /redis: restored \d+ keys in 2 databases \(full sync\)$/.test(l)),
        logs.join('\n'),
      );
    });

    /**
     * A backup of `keys` 100-byte strings (big enough that a transfer is under way when its input
     * fails or is cancelled), then a target holding only `precious` and its own masterauth.
     */
    async function bigBackupAndPreciousTarget(keys: number) {
      const engine = engineFor('redis');
      const big = source.client(9);
      await big.eval(
        `for i = 1, ${keys} do redis.call('SET', 'bulk:' .. i, string.rep('x', 100)) end return 1`,
        0,
      );
      const units = await dumpAll(engine, service(source), ctx, files);
      await big.flushdb();
      big.disconnect();
      const client = target.client(0);
      await client.flushall();
      await client.set('precious', 'still here');
      await client.config('SET', 'masterauth', 'the-targets-own');
      return { engine, units, client };
    }

    it('leaves the target untouched when the backup fails mid-transfer (a corrupt artifact), and detaches it', async () => {
      const { engine, units, client } = await bigBackupAndPreciousTarget(200000);
      try {
        const file = join(files, 'dump.rdb');
        const size = (await stat(file)).size;
        // The stream a restore gets for an artifact whose SHA-256 differs: all but the end, then an error.
        const input = Readable.from(
          (async function* () {
            yield* createReadStream(file, { end: Math.floor(size * 0.8) });
            throw new ArtifactCorruptError('artifact dump.rdb.zst: sha-256 differs');
          })(),
        );
        await assert.rejects(
          engine.restore(service(target), units[0]!, input, ctx),
          (err: unknown) => err instanceof ArtifactCorruptError,
        );
        assert.equal(await client.get('precious'), 'still here');
        assert.equal(await client.dbsize(), 1);
        assert.match(String(await client.info('replication')), /^role:master\r?$/m);
        assert.deepEqual(await client.config('GET', 'masterauth'), ['masterauth', 'the-targets-own']);
        await client.set('writable', 'yes');
      } finally {
        await client.config('SET', 'masterauth', '');
        client.disconnect();
      }
    });

    it('cancelled during the sync from the agent: TaskAbortedError, the target detached with its own masterauth, old data or the backup', async () => {
      const { engine, units, client } = await bigBackupAndPreciousTarget(300000);
      try {
        const abort = new AbortController();
        const slow = Readable.from(
          (async function* () {
            for await (const chunk of createReadStream(join(files, 'dump.rdb'), {
              highWaterMark: 256 * 1024,
            })) {
              yield chunk as Buffer;
              await new Promise((r) => setTimeout(r, 20));
            }
          })(),
        );
        const restoring = engine.restore(service(target), units[0]!, slow, { ...ctx, signal: abort.signal });
        restoring.catch(() => {});
        const deadline = Date.now() + 30_000;
        while (!/^role:slave\r?$/m.test(String(await client.info('replication')))) {
          assert.ok(Date.now() < deadline, 'the target never became a replica');
          await new Promise((r) => setTimeout(r, 20));
        }
        await new Promise((r) => setTimeout(r, 200));
        abort.abort();
        await assert.rejects(restoring, (err: unknown) => err instanceof TaskAbortedError);
        assert.match(String(await client.info('replication')), /^role:master\r?$/m);
        assert.deepEqual(await client.config('GET', 'masterauth'), ['masterauth', 'the-targets-own']);
        assert.equal(await client.get('precious'), 'still here');
      } finally {
        await client.config('SET', 'masterauth', '');
        client.disconnect();
      }
    });

    it('leaves the target untouched when the rdb was corrupt already when backed up (its own checksum differs)', async () => {
      const engine = engineFor('redis');
      const units = await dumpAll(engine, service(source), ctx, files);
      const file = join(files, 'dump.rdb');
      const bytes = await readFile(file);
      const corrupt = join(files, 'corrupt.rdb');
      const at = Math.floor(bytes.length / 2);
      bytes.writeUInt8(bytes.readUInt8(at) ^ 0x20, at);
      await writeFile(corrupt, bytes);
      const client = target.client(0);
      await client.flushall();
      await client.set('precious', 'still here');
      try {
        await assert.rejects(
          engine.restore(service(target), units[0]!, createReadStream(corrupt), ctx),
          (err: unknown) => err instanceof ArtifactCorruptError && /checksum/.test(err.message),
        );
        assert.equal(await client.get('precious'), 'still here');
        assert.equal(await client.dbsize(), 1);
        assert.match(String(await client.info('replication')), /^role:master\r?$/m);
      } finally {
        client.disconnect();
      }
    });

    it("refuses, before touching the target, a backup whose rdb version the target's redis cannot read", async () => {
      const bad = join(files, 'future.rdb');
      await writeFile(bad, 'REDIS0099 from a future redis');
      const client = target.client(0);
      await client.set('precious', 'still here');
      await assert.rejects(
        engineFor('redis').restore(
          service(target),
          { ...REDIS_UNIT, redis: { databases: 16, modules: [] } },
          createReadStream(bad),
          ctx,
        ),
        (err: unknown) => err instanceof TargetMismatchError && /rdb version 99/.test(err.message),
      );
      assert.equal(await client.get('precious'), 'still here');
      client.disconnect();
    });

    it('refuses, before touching the target, a backup with keys in a database the target does not have', async () => {
      const wide = await startRedis({ name: 'wide', redisDatabases: 32 });
      try {
        const c = wide.client(20);
        await c.set('in-db-20', 'x');
        c.disconnect();
        const units = await dumpAll(engineFor('redis'), service(wide), ctx, files);
        assert.deepEqual(units[0]?.redis, { databases: 32, modules: [] });
        const client = target.client(0);
        await client.set('precious', 'still here');
        await assert.rejects(
          restoreAll(engineFor('redis'), service(target), units, ctx, files),
          (err: unknown) =>
            err instanceof TargetMismatchError && /keys in database 20 .* 16 databases/.test(err.message),
        );
        assert.equal(await client.get('precious'), 'still here');
        client.disconnect();
      } finally {
        await wide.stop();
      }
    });

    it('copies key by key, equal to the backup, when the user may not make the target a replica (ACL)', async () => {
      const engine = engineFor('redis');
      const before = await redisFingerprint(source);
      const units = await dumpAll(engine, service(source), ctx, files);
      const admin = target.client(0);
      await admin.flushall();
      await admin.set('stale', 'x');
      await admin.call(
        'ACL',
        'SETUSER',
        'restorer',
        'on',
        '>restorer-pw',
        '~*',
        '&*',
        '+@all',
        '-replicaof',
        '-config',
      );
      try {
        const logs: string[] = [];
        const restorer: ServiceTarget = {
          ...service(target),
          connection: { host: target.host, port: target.port, user: 'restorer', password: 'restorer-pw' },
        };
        await restoreAll(engine, restorer, units, { ...ctx, log: (m) => logs.push(m) }, files);
        assert.deepEqual(await redisFingerprint(target), before);
        assert.ok(
          logs.some((l) => /copying key by key: .*NOPERM/.test(l)),
          logs.join('\n'),
        );
        assert.deepEqual(await admin.config('GET', 'masterauth'), ['masterauth', '']);
      } finally {
        await admin.call('ACL', 'DELUSER', 'restorer');
        admin.disconnect();
      }
    });

    it('leaves the target alone when the backup is not a valid RDB', async () => {
      const bad = join(files, 'bad.rdb');
      await writeFile(bad, 'REDIS0010 this is not an rdb');
      const client = target.client(0);
      await client.set('precious', 'still here');
      await assert.rejects(
        engineFor('redis').restore(
          service(target),
          { database: '', format: 'rdb', fileName: 'dump.rdb' },
          createReadStream(bad),
          ctx,
        ),
        (err: unknown) => err instanceof ToolFailedError && /loading DB/.test(err.message),
      );
      assert.equal(await client.get('precious'), 'still here');
      client.disconnect();
    });

    it('fails a dump with a wrong password without showing it', async () => {
      const wrong = {
        ...service(source),
        connection: { ...service(source).connection, password: 'wr0ng-pw' },
      };
      // The dump starts at once and fails as redis-cli does (while the RDB file is read as it grows).
      const run = await engineFor('redis').dump(
        wrong,
        { database: '', format: 'rdb', fileName: 'dump.rdb' },
        ctx,
      );
      await assert.rejects(
        run.wait(),
        (err: unknown) => err instanceof ToolFailedError && !err.message.includes('wr0ng-pw'),
      );
    });
  });
});
