/**
 * Safe restores (issue 5 §5) against throwaway servers: a database is loaded into a staging
 * database and swapped in only once the load succeeded; the previous data stays as a pre-restore
 * copy; a restore killed with SIGKILL mid-load (run in a child process, as an agent dies) leaves
 * the live database as it was, and the next restore removes what it left behind. Mounts: a
 * restore killed mid-extract leaves the live tree as it was.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path, { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

import { engineFor } from '../../agent/engines/index.js';
import type { DumpUnit, EngineContext, ServiceTarget } from '../../agent/engines/index.js';
import { MariadbClient } from '../../agent/engines/mariadb-client.js';
import { rewriteDumpToStaging } from '../../agent/engines/mariadb-dump-rewrite.js';
import {
  planSwap,
  readSchema,
  renderPreRestoreCopy,
  renderSwapScript,
} from '../../agent/engines/mariadb-swap.js';
import { createMountArchive, extractMountArchive } from '../../agent/mount-archive.js';
import { feedTool, runTool, spawnTool } from '../../agent/tool-process.js';
import { TargetMismatchError, ToolFailedError } from '../../shared/errors.js';
import { loadSakilaMariadb, loadSakilaPostgres, makeMountTree } from '../helpers/datasets.js';
import { mariadbFingerprint, postgresFingerprint, treeFingerprint } from '../helpers/fingerprints.js';
import type { RestoreChildJob } from '../helpers/restore-child.js';
import {
  requireBinary,
  runCommand,
  startMariadb,
  startPostgres,
  startRedis,
  type MariadbServer,
  type PostgresServer,
  type RedisServer,
} from '../helpers/servers.js';

const CHILD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../helpers/restore-child.js');

/** Starts a restore in a child process (see test/helpers/restore-child.ts). */
function startRestoreChild(job: RestoreChildJob): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, [CHILD], {
    env: { ...process.env, ENVSNAP_RESTORE_CHILD: JSON.stringify(job) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout?.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
  return { child, output: () => text };
}

async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Whether a running process has `text` in its command line (/proc/<pid>/cmdline). */
async function processesMentioning(text: string): Promise<boolean> {
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(text)) return true;
  }
  return false;
}

async function killAndReap(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

function context(workDir: string, logs: string[] = []): EngineContext {
  return { signal: new AbortController().signal, workDir, log: (m) => logs.push(m) };
}

describe('safe restores', function () {
  this.timeout(600_000);
  let work: string;
  let files: string;

  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), 'envsnap-safe-work-'));
    files = await mkdtemp(join(tmpdir(), 'envsnap-safe-files-'));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
    await rm(files, { recursive: true, force: true });
  });

  async function dumpTo(service: ServiceTarget, unit: DumpUnit): Promise<string> {
    const file = join(files, unit.fileName);
    const dump = await engineFor(service.kind).dump(service, unit, context(work));
    await Promise.all([pipeline(dump.stdout, createWriteStream(file)), dump.wait()]);
    return file;
  }

  describe('mariadb', () => {
    let server: MariadbServer;
    const service = (databases: string[]): ServiceTarget => ({
      name: 'db',
      kind: 'mariadb',
      connection: { host: server.host, port: server.port, user: server.user, password: server.password },
      databases,
    });
    const unit = (database: string): DumpUnit => ({ database, format: 'sql', fileName: `${database}.sql` });
    const databases = async (): Promise<string[]> =>
      (await server.query('SHOW DATABASES')).split('\n').filter((n) => n !== '');
    /** Metadata the fingerprint does not hold: the settings each object was created with. */
    const objectSettings = (db: string): Promise<string> =>
      server.query(
        `SELECT name, type, character_set_client, collation_connection, db_collation, sql_mode, HEX(body)
           FROM mysql.proc WHERE db = '${db}' ORDER BY name, type;
         SELECT TRIGGER_NAME, ACTION_ORDER, SQL_MODE, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION
           FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '${db}' ORDER BY TRIGGER_NAME;
         SELECT EVENT_NAME, STATUS, SQL_MODE, TIME_ZONE, CHARACTER_SET_CLIENT, DATABASE_COLLATION
           FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '${db}' ORDER BY EVENT_NAME;
         SELECT TABLE_NAME, CHARACTER_SET_CLIENT, COLLATION_CONNECTION
           FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '${db}' ORDER BY TABLE_NAME;
         SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA
           WHERE SCHEMA_NAME = '${db}';`,
      );

    before(async () => {
      server = await startMariadb({ name: 'safe' });
      await loadSakilaMariadb(server);
      // Objects whose settings differ from the session's: a routine made by a latin1 client, one
      // recorded with another database collation, an event, and a view that uses a view and
      // sorts before it (so that creating views by name order would fail).
      await server.query(
        "SET NAMES latin1; CREATE PROCEDURE sakila.latin_client() SELECT 'café' AS x; SET NAMES utf8mb4;" +
          'ALTER DATABASE sakila COLLATE utf8mb4_unicode_ci; CREATE FUNCTION sakila.other_collation() RETURNS INT DETERMINISTIC RETURN 7;' +
          'ALTER DATABASE sakila COLLATE latin1_swedish_ci;' +
          "SET time_zone = '+02:00'; CREATE EVENT sakila.nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM sakila.film_text WHERE film_id > 100000; SET time_zone = SYSTEM;" +
          'CREATE VIEW sakila.a_top_actors AS SELECT actor_id, first_name FROM sakila.actor_info WHERE actor_id < 10;' +
          'CREATE TRIGGER sakila.ins_film_second AFTER INSERT ON sakila.film FOR EACH ROW FOLLOWS ins_film SET @envsnap_second = NEW.film_id;',
      );
    });
    after(async () => {
      await server?.stop();
    });

    it('restores through a staging schema, equal to the backup, and keeps the previous data as a pre-restore copy', async () => {
      const engine = engineFor('mariadb');
      const backup = await mariadbFingerprint(server, 'sakila');
      const backupSettings = await objectSettings('sakila');
      const file = await dumpTo(service(['sakila']), unit('sakila'));

      // Change everything a restore must undo: data, tables, a view that takes a table's name,
      // routines, triggers, events, the schema's default collation.
      await server.query(
        'CREATE TABLE sakila.added (x INT); INSERT INTO sakila.added VALUES (1);' +
          'DELETE FROM sakila.payment WHERE payment_id % 3 = 0; UPDATE sakila.actor SET last_name = LOWER(last_name);' +
          'DROP VIEW sakila.staff_list; DROP TRIGGER sakila.ins_film; DROP EVENT sakila.nightly;' +
          'DROP PROCEDURE sakila.latin_client; CREATE PROCEDURE sakila.added_proc() SELECT 1;' +
          'DROP TABLE sakila.film_text; CREATE VIEW sakila.film_text AS SELECT film_id, title, description FROM sakila.film;' +
          'CREATE EVENT sakila.added_event ON SCHEDULE EVERY 1 HOUR DO SELECT 1;' +
          'ALTER DATABASE sakila COLLATE latin1_general_ci;',
      );
      const changed = await mariadbFingerprint(server, 'sakila');

      const logs: string[] = [];
      const started = Date.now();
      await engine.restore(service(['sakila']), unit('sakila'), createReadStream(file), context(work, logs));
      const took = Date.now() - started;

      assert.deepEqual(await mariadbFingerprint(server, 'sakila'), backup);
      assert.equal(await objectSettings('sakila'), backupSettings);
      const names = await databases();
      assert.ok(!names.includes('sakila__envsnap_staging'), names.join(','));
      assert.ok(names.includes('sakila__envsnap_pre_restore'), names.join(','));
      assert.ok(
        logs.some((l) =>
          /sakila: restored through sakila__envsnap_staging; the previous data is kept in/.test(l),
        ),
        logs.join('\n'),
      );
      assert.equal(
        logs.filter((l) => /not copied|failed/.test(l)).length,
        0,
        `restore took ${took} ms; ${logs.join('\n')}`,
      );

      // The pre-restore copy holds the changed data, with its views, routines, triggers, and its
      // events disabled.
      const pre = await mariadbFingerprint(server, 'sakila__envsnap_pre_restore');
      assert.deepEqual(pre.tables, changed.tables);
      assert.deepEqual(Object.keys(pre.views), Object.keys(changed.views));
      assert.deepEqual(pre.routines, changed.routines);
      assert.deepEqual(pre.triggers, changed.triggers);
      assert.deepEqual(Object.keys(pre.events), Object.keys(changed.events));
      assert.ok(Object.values(pre.events).every((e) => e.status === 'DISABLED'));
      assert.deepEqual(pre.database, changed.database);

      // Backups planned from the server's list leave both work schemas out.
      const planned = (await engine.plan(service([]), context(work))).map((u) => u.database);
      assert.ok(
        planned.includes('sakila') && !planned.some((n) => n.includes('__envsnap_')),
        planned.join(','),
      );

      // A second restore replaces the copy; cleanup drops it.
      await engine.restore(service(['sakila']), unit('sakila'), createReadStream(file), context(work));
      assert.deepEqual(await mariadbFingerprint(server, 'sakila'), backup);
      assert.deepEqual(
        (await mariadbFingerprint(server, 'sakila__envsnap_pre_restore')).tables,
        backup.tables,
      );
      assert.deepEqual(await engine.dropPreRestoreCopies(service(['sakila']), context(work)), [
        'sakila__envsnap_pre_restore',
      ]);
      assert.ok(!(await databases()).includes('sakila__envsnap_pre_restore'));
      assert.deepEqual(await engine.dropPreRestoreCopies(service([]), context(work)), []);
      assert.deepEqual(await readdir(work), [], 'the engine left files in its work directory');
    });

    it('fails with the error of its input, leaving the live database as it was, when the input failed before the load began', async () => {
      const engine = engineFor('mariadb');
      const before = await mariadbFingerprint(server, 'sakila');
      // What a restore's raw stream does when its artifact is missing or fails its check before the
      // engine has read a byte (agent/artifact-pipelines.ts, downloadAndApply).
      const input = new Readable({ read() {} });
      input.on('error', () => {});
      input.destroy(new Error('the copy is missing'));
      await assert.rejects(
        engine.restore(service(['sakila']), unit('sakila'), input, context(work)),
        /the copy is missing/,
      );
      assert.deepEqual(await mariadbFingerprint(server, 'sakila'), before);
      assert.ok(!(await databases()).includes('sakila__envsnap_staging'));
    });

    it('leaves the live database as it was when the swap cannot get a table lock, and says so', async () => {
      const engine = engineFor('mariadb');
      const file = await dumpTo(service(['sakila']), unit('sakila'));
      await server.query('DELETE FROM sakila.rental WHERE rental_id % 5 = 0;');
      const before = await mariadbFingerprint(server, 'sakila');
      const beforeSettings = await objectSettings('sakila');
      // Another session holds a metadata lock on a table (an open transaction that read it).
      await server.query('SET GLOBAL lock_wait_timeout = 2');
      const holder = spawn(
        'mariadb',
        [
          `--defaults-file=${server.defaultsFile}`,
          '-e',
          'BEGIN; SELECT COUNT(*) FROM sakila.actor; SELECT SLEEP(60);',
        ],
        { stdio: 'ignore' },
      );
      try {
        await waitFor('the lock holder', 10_000, async () =>
          /User sleep/.test(await server.query('SHOW PROCESSLIST')),
        );
        await assert.rejects(
          engine.restore(service(['sakila']), unit('sakila'), createReadStream(file), context(work)),
          (err: unknown) =>
            err instanceof ToolFailedError &&
            /swap into the live database failed and was undone: Lock wait timeout/.test(err.message),
        );
      } finally {
        await killAndReap(holder);
        await server.query('SET GLOBAL lock_wait_timeout = DEFAULT');
      }
      assert.deepEqual(await mariadbFingerprint(server, 'sakila'), before);
      assert.equal(await objectSettings('sakila'), beforeSettings);
      const left = await databases();
      assert.ok(!left.includes('sakila__envsnap_staging'), left.join(','));
      assert.ok(!left.includes('sakila__envsnap_pre_restore'), 'the empty pre-restore schema is dropped');
    });

    it('leaves the live database as it was when killed with SIGKILL mid-load; the next restore removes the leftovers', async () => {
      await server.query(
        'CREATE DATABASE bulk; CREATE TABLE bulk.big (id INT PRIMARY KEY, pad VARCHAR(200)) ENGINE=InnoDB;' +
          'INSERT INTO bulk.big SELECT seq, REPEAT(CHAR(65 + seq % 26), 200) FROM bulk.seq_1_to_600000;' +
          'CREATE TABLE bulk.small (x INT); INSERT INTO bulk.small VALUES (1), (2);',
      );
      const backup = await mariadbFingerprint(server, 'bulk');
      const file = await dumpTo(service(['bulk']), unit('bulk'));
      await server.query(
        'DELETE FROM bulk.big WHERE id % 10 = 0; DROP TABLE bulk.small; CREATE TABLE bulk.extra (y INT);',
      );
      const changed = await mariadbFingerprint(server, 'bulk');

      const { child, output } = startRestoreChild({
        kind: 'service',
        service: service(['bulk']),
        unit: unit('bulk'),
        file,
        workDir: work,
      });
      try {
        await waitFor('rows loading into bulk__envsnap_staging', 120_000, async () => {
          const n = await server.query(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = 'bulk__envsnap_staging' AND INFO LIKE 'INSERT INTO `big`%'",
          );
          return Number(n) > 0;
        });
        await new Promise((resolve) => setTimeout(resolve, 300));
      } finally {
        await killAndReap(child);
      }
      assert.doesNotMatch(output(), /done/, 'the restore finished before it was killed');
      // The killed agent's client reads to the end of its pipe and exits: wait for it.
      await waitFor('the orphaned client to finish', 60_000, async () => {
        const n = await server.query(
          "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = 'bulk__envsnap_staging'",
        );
        return Number(n) === 0;
      });
      assert.deepEqual(await mariadbFingerprint(server, 'bulk'), changed);
      const left = await databases();
      assert.ok(left.includes('bulk__envsnap_staging'), 'expected the staging schema of the killed load');
      assert.ok(!left.includes('bulk__envsnap_pre_restore'));

      await engineFor('mariadb').restore(
        service(['bulk']),
        unit('bulk'),
        createReadStream(file),
        context(work),
      );
      assert.deepEqual(await mariadbFingerprint(server, 'bulk'), backup);
      assert.deepEqual(
        (await mariadbFingerprint(server, 'bulk__envsnap_pre_restore')).tables,
        changed.tables,
      );
      assert.ok(!(await databases()).includes('bulk__envsnap_staging'));
      await server.query('DROP DATABASE bulk; DROP DATABASE bulk__envsnap_pre_restore;');
    });

    it('refuses a dump that names another database before anything is loaded', async () => {
      const bad = join(files, 'bad.sql');
      await writeFile(
        bad,
        '/*!40000 DROP DATABASE IF EXISTS `sakila`*/;\nCREATE DATABASE `sakila`;\nUSE `sakila`;\nCREATE TABLE t (x INT);\nUSE `mysql`;\nDROP TABLE user;\n',
      );
      const before = await mariadbFingerprint(server, 'sakila');
      await assert.rejects(
        engineFor('mariadb').restore(
          service(['sakila']),
          unit('sakila'),
          createReadStream(bad),
          context(work),
        ),
        /statement for another database \(mysql\)/,
      );
      assert.deepEqual(await mariadbFingerprint(server, 'sakila'), before);
      assert.ok(!(await databases()).includes('sakila__envsnap_staging'));
      assert.match(await server.query("SELECT COUNT(*) FROM mysql.user WHERE user = 'root'"), /[1-9]/);
    });

    it('swaps statement by statement, the form used against MySQL, to the same result', async () => {
      const file = await dumpTo(service(['sakila']), unit('sakila'));
      const backup = await mariadbFingerprint(server, 'sakila');
      await server.query(
        'DROP VIEW sakila.staff_list; DROP TRIGGER sakila.upd_film; DROP FUNCTION sakila.other_collation;' +
          'CREATE PROCEDURE sakila.added_proc() SELECT 2; DELETE FROM sakila.rental WHERE rental_id < 100;',
      );
      const changed = await mariadbFingerprint(server, 'sakila');
      const [staging, pre] = ['sakila__envsnap_staging', 'sakila__envsnap_pre_restore'];
      const client = await MariadbClient.open(
        'mariadb',
        'mariadb-client',
        service([]).connection,
        work,
        new AbortController().signal,
      );
      try {
        await client.exec(`DROP DATABASE IF EXISTS ${staging};`);
        const load = spawnTool('mariadb', client.args(), {
          stdio: ['pipe', 'ignore'],
          debianPackage: 'mariadb-client',
        });
        await feedTool(createReadStream(file).pipe(rewriteDumpToStaging('sakila', staging)), load);
        const staged = await readSchema(client, staging);
        const live = await readSchema(client, 'sakila');
        assert.ok(staged && live);
        await client.exec(`DROP DATABASE IF EXISTS ${pre}; CREATE DATABASE ${pre};`);
        await client.exec(
          renderSwapScript('sakila', planSwap('sakila', staging, pre, live, staged, 'mysql')),
        );
        await client.exec(`DROP DATABASE ${staging};`);
        await client.rows(renderPreRestoreCopy(pre, live, 'mysql'));
      } finally {
        await client.close();
      }
      assert.deepEqual(await mariadbFingerprint(server, 'sakila'), backup);
      const copy = await mariadbFingerprint(server, pre);
      assert.deepEqual(copy.tables, changed.tables);
      assert.deepEqual(copy.routines, changed.routines);
      assert.deepEqual(copy.triggers, changed.triggers);
      assert.ok(Object.values(copy.events).every((e) => e.status === 'DISABLED'));
      await server.query(`DROP DATABASE ${pre}`);
    });

    it('runs a compound statement to its end after its client is killed (what the swap relies on)', async () => {
      const client = spawn('mariadb', [`--defaults-file=${server.defaultsFile}`], {
        stdio: ['pipe', 'ignore', 'ignore'],
      });
      client.stdin?.end(
        'DELIMITER //\nBEGIN NOT ATOMIC\n  DO SLEEP(1.5);\n  CREATE TABLE sakila.after_kill (x INT);\nEND//\n',
      );
      await waitFor('the block to start', 10_000, async () =>
        /User sleep/.test(await server.query('SHOW PROCESSLIST')),
      );
      await killAndReap(client);
      await waitFor('the rest of the block to run', 20_000, async () =>
        /after_kill/.test(await server.query('SHOW TABLES FROM sakila')),
      );
      await server.query('DROP TABLE sakila.after_kill');
    });
  });

  describe('postgresql', () => {
    let server: PostgresServer;
    const service = (databases: string[]): ServiceTarget => ({
      name: 'pg',
      kind: 'postgresql',
      connection: { host: server.host, port: server.port, user: server.user },
      databases,
    });
    const unit = (database: string): DumpUnit => ({
      database,
      format: 'pg_custom',
      fileName: `${database}.pgdump`,
    });
    const databases = async (): Promise<string[]> =>
      (await server.psql('SELECT datname FROM pg_database')).split('\n').filter((n) => n !== '');
    /** The database's grants and those on table rental (the fingerprint holds neither). */
    const grants = async (): Promise<string> =>
      `${(await server.psql("SELECT datacl::text FROM pg_database WHERE datname = 'sakila'")).trim()}|${(
        await server.psql("SELECT relacl::text FROM pg_class WHERE relname = 'rental'", 'sakila')
      ).trim()}`;

    /** `file` compressed with zstd, as the agent stores it, next to it. */
    async function zstdOf(file: string): Promise<string> {
      await runTool('zstd', ['-q', '-f', file, '-o', `${file}.zst`], { debianPackage: 'zstd' });
      return `${file}.zst`;
    }

    /**
     * Restores `file` as sakila, from the raw archive and from the artifact as stored (zstd), which
     * must fail as `expected` says and leave sakila as it was, no staging database and nothing in
     * the work directory (the spooled start of the archive).
     */
    async function failsLeavingSakila(
      file: string,
      expected: RegExp | ((err: unknown) => boolean),
    ): Promise<void> {
      const before = await postgresFingerprint(server, 'sakila');
      const engine = engineFor('postgresql');
      const zst = await zstdOf(file);
      for (const attempt of [
        () => engine.restore(service(['sakila']), unit('sakila'), createReadStream(file), context(work)),
        () =>
          engine.restoreCompressed!(
            service(['sakila']),
            unit('sakila'),
            { stream: createReadStream(zst), compression: 'zstd' },
            context(work),
          ),
      ]) {
        await assert.rejects(attempt(), expected);
        assert.deepEqual(await postgresFingerprint(server, 'sakila'), before);
        assert.ok(!(await databases()).includes('sakila__envsnap_staging'));
        assert.deepEqual(await readdir(work), []);
      }
    }

    before(async () => {
      server = await startPostgres({ name: 'safe' });
      await loadSakilaPostgres(server);
    });
    after(async () => {
      await server?.stop();
    });

    it('restores through a staging database, equal to the backup, and keeps the previous one as a pre-restore copy', async () => {
      const engine = engineFor('postgresql');
      await server.psql(
        "COMMENT ON DATABASE sakila IS 'rentals'; ALTER DATABASE sakila SET work_mem = '7MB';" +
          'CREATE ROLE rentals_reader; GRANT CONNECT, TEMPORARY ON DATABASE sakila TO rentals_reader;',
      );
      await server.psql('GRANT SELECT ON rental TO rentals_reader', 'sakila');
      const backup = await postgresFingerprint(server, 'sakila');
      const backupGrants = await grants();
      const file = await dumpTo(service(['sakila']), unit('sakila'));
      await server.psql(
        'CREATE TABLE added (x int); DELETE FROM payment_p2007_02 WHERE payment_id % 2 = 0; DROP VIEW staff_list;',
        'sakila',
      );
      await server.psql(
        "COMMENT ON DATABASE sakila IS 'changed'; REVOKE ALL ON DATABASE sakila FROM rentals_reader",
      );
      await server.psql('REVOKE ALL ON rental FROM rentals_reader', 'sakila');
      assert.notEqual(await grants(), backupGrants);
      const changed = await postgresFingerprint(server, 'sakila');
      const idle = server.psql('SELECT pg_sleep(120)', 'sakila').catch(() => 'terminated');
      await new Promise((resolve) => setTimeout(resolve, 300));

      const logs: string[] = [];
      await engine.restore(service(['sakila']), unit('sakila'), createReadStream(file), context(work, logs));
      assert.equal(await idle, 'terminated');
      assert.deepEqual(await postgresFingerprint(server, 'sakila'), backup);
      assert.equal(
        (
          await server.psql(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'sakila'",
          )
        ).trim(),
        'rentals',
      );
      assert.match(
        await server.psql(
          "SELECT setconfig::text FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE datname = 'sakila'",
        ),
        /work_mem=7MB/,
      );
      assert.equal(await grants(), backupGrants);
      assert.match(backupGrants, /rentals_reader=Tc\/.*\|.*rentals_reader=r\//);
      assert.deepEqual(await readdir(work), [], 'the spooled start of the archive was removed');
      assert.deepEqual(await postgresFingerprint(server, 'sakila__envsnap_pre_restore'), changed);
      assert.ok(!(await databases()).includes('sakila__envsnap_staging'));
      assert.ok(
        logs.some((l) => /previous data is kept in sakila__envsnap_pre_restore/.test(l)),
        logs.join('\n'),
      );
      // Again, from the artifact as the agent reads it (zstd, decompressed straight into the
      // pg_restore runs): the older pre-restore copy is dropped in the swap's session, and replaced.
      await engine.restoreCompressed!(
        service(['sakila']),
        unit('sakila'),
        { stream: createReadStream(await zstdOf(file)), compression: 'zstd' },
        context(work),
      );
      assert.deepEqual(await postgresFingerprint(server, 'sakila'), backup);
      assert.deepEqual(await postgresFingerprint(server, 'sakila__envsnap_pre_restore'), backup);

      const planned = (await engine.plan(service([]), context(work))).map((u) => u.database);
      assert.ok(!planned.some((n) => n.includes('__envsnap_')), planned.join(','));
      assert.deepEqual(await engine.dropPreRestoreCopies(service([]), context(work)), [
        'sakila__envsnap_pre_restore',
      ]);
      assert.ok(!(await databases()).includes('sakila__envsnap_pre_restore'));
    });

    it('leaves the live database as it was when killed with SIGKILL mid-load; the next restore removes the leftovers', async () => {
      // pgbench ships with the server (Debian: postgresql-15, from the postgresql package).
      const pgbench = await requireBinary(join(server.binDir, 'pgbench'), 'postgresql');
      await server.psql('CREATE DATABASE bench');
      await runCommand(
        pgbench,
        ['-i', '-q', '-s', '8', '-h', server.host, '-p', String(server.port), '-U', server.user, 'bench'],
        { timeoutMs: 300_000 },
      );
      const backup = await postgresFingerprint(server, 'bench');
      const file = await dumpTo(service(['bench']), unit('bench'));
      await server.psql(
        'DELETE FROM pgbench_accounts WHERE aid % 10 = 0; CREATE TABLE extra (y int);',
        'bench',
      );
      const changed = await postgresFingerprint(server, 'bench');

      const { child, output } = startRestoreChild({
        kind: 'service',
        service: service(['bench']),
        unit: unit('bench'),
        file,
        workDir: work,
      });
      try {
        await waitFor('a COPY into bench__envsnap_staging', 120_000, async () => {
          const n = await server.psql(
            "SELECT count(*) FROM pg_stat_progress_copy p JOIN pg_database d ON d.oid = p.datid WHERE d.datname = 'bench__envsnap_staging' AND p.tuples_processed > 0",
          );
          return Number(n) > 0;
        });
      } finally {
        await killAndReap(child);
      }
      assert.doesNotMatch(output(), /done/, 'the restore finished before it was killed');
      await waitFor('the orphaned pg_restore and psql to finish', 60_000, async () => {
        const n = await server.psql(
          "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench__envsnap_staging'",
        );
        return Number(n) === 0;
      });
      assert.deepEqual(await postgresFingerprint(server, 'bench'), changed);
      const left = await databases();
      assert.ok(left.includes('bench__envsnap_staging'), 'expected the staging database of the killed load');
      assert.ok(!left.includes('bench__envsnap_pre_restore'));

      await engineFor('postgresql').restore(
        service(['bench']),
        unit('bench'),
        createReadStream(file),
        context(work),
      );
      assert.deepEqual(await postgresFingerprint(server, 'bench'), backup);
      assert.deepEqual(await postgresFingerprint(server, 'bench__envsnap_pre_restore'), changed);
      assert.ok(!(await databases()).includes('bench__envsnap_staging'));
    });

    it('fails on an archive damaged in its table data, leaving the live database, no staging database and no spool', async () => {
      const file = await dumpTo(service(['sakila']), unit('sakila'));
      // A timestamp in the table data, past the table of contents that the first pg_restore reads:
      // the data's load into the staging database fails.
      const archive = await readFile(file);
      const at = archive.indexOf('\t2006-02-15 ');
      assert.ok(at > 0, 'a Sakila timestamp in the archive');
      archive.write('\tXXXX', at, 'latin1');
      await writeFile(file, archive);
      await server.psql('CREATE TABLE kept (x int)', 'sakila');
      await failsLeavingSakila(
        file,
        (err: unknown) =>
          err instanceof ToolFailedError && /invalid input syntax for type timestamp/.test(err.message),
      );
    });

    it('refuses an archive whose script would leave the staging database, before anything runs', async () => {
      // A custom-format archive of a database named "other" restored as unit "sakila": its
      // CREATE DATABASE and \connect name another database.
      await server.psql('CREATE DATABASE other');
      const file = await dumpTo(service(['other']), unit('other'));
      await failsLeavingSakila(file, /creates another database/);

      // A database that does not exist is restored, with no pre-restore copy.
      await server.psql('DROP DATABASE other');
      const logs: string[] = [];
      await engineFor('postgresql').restore(
        service(['other']),
        unit('other'),
        createReadStream(file),
        context(work, logs),
      );
      assert.ok(
        logs.some((l) => /did not exist before/.test(l)),
        logs.join('\n'),
      );
      const now = await databases();
      assert.ok(now.includes('other') && !now.includes('other__envsnap_pre_restore'), now.join(','));
    });
  });

  describe('redis', () => {
    let server: RedisServer;
    before(async () => {
      server = await startRedis({ name: 'safe' });
    });
    after(async () => {
      await server?.stop();
    });

    /** Processes as [pid, ppid, command line], read from /proc (no dependency on procps). */
    const processes = async (): Promise<[number, number, string][]> => {
      const out: [number, number, string][] = [];
      for (const name of await readdir('/proc')) {
        if (!/^\d+$/.test(name)) continue;
        try {
          const stat = await readFile(`/proc/${name}/stat`, 'utf8');
          const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
          const cmdline = (await readFile(`/proc/${name}/cmdline`, 'utf8')).replace(/\0/g, ' ').trim();
          out.push([Number(name), ppid, cmdline]);
        } catch {
          // the process ended meanwhile
        }
      }
      return out;
    };
    /** The pid of the redis-server that `parent` (the restore child) runs under its watchdog shell. */
    const tempServerOf = async (parent: number): Promise<number | undefined> => {
      const all = await processes();
      const shells = new Set(all.filter(([, ppid]) => ppid === parent).map(([pid]) => pid));
      return all.find(([, ppid, args]) => shells.has(ppid) && args.startsWith('redis-server'))?.[0];
    };
    const alive = async (pid: number): Promise<boolean> => (await processes()).some(([p]) => p === pid);

    it('leaves the target untouched, and no temporary server behind, when killed with SIGKILL before the copy', async () => {
      const service: ServiceTarget = {
        name: 'cache',
        kind: 'redis',
        connection: { host: server.host, port: server.port, password: server.password },
        databases: [],
      };
      const unit: DumpUnit = { database: '', format: 'rdb', fileName: 'dump.rdb' };
      const client = server.client(0);
      try {
        // Enough keys that the temporary server takes a while to load them.
        await client.eval("for i = 1, 1500000 do redis.call('SET', 'bulk:' .. i, i) end return 1", 0);
        const file = await dumpTo(service, unit);
        await client.set('marker', 'after the backup');
        await client.del('bulk:7');
        const size = await client.dbsize();

        const { child, output } = startRestoreChild({ kind: 'service', service, unit, file, workDir: work });
        let temp: number | undefined;
        try {
          await waitFor('the temporary server', 60_000, async () => {
            temp = await tempServerOf(child.pid ?? -1);
            return temp !== undefined;
          });
        } finally {
          await killAndReap(child);
        }
        assert.doesNotMatch(output(), /done/);
        await waitFor(
          'the watchdog to stop the temporary server',
          10_000,
          async () => !(await alive(temp ?? -1)),
        );
        assert.equal(await client.get('marker'), 'after the backup');
        assert.equal(await client.exists('bulk:7'), 0);
        assert.equal(await client.dbsize(), size);
      } finally {
        await client.flushall();
        client.disconnect();
      }
    });
    /**
     * Kills the restore child with SIGKILL while the target is a replica, then checks that the
     * watchdog detached it with its own masterauth, holding the old data or the backup, never half.
     * `fromAgent`: the backup records its source, so the agent serves the sync itself (no
     * temporary server); else a temporary server does, and must be stopped by its watchdog too.
     */
    async function killDuringSync(fromAgent: boolean): Promise<void> {
      const service: ServiceTarget = {
        name: 'cache',
        kind: 'redis',
        connection: { host: server.host, port: server.port, password: server.password },
        databases: [],
      };
      const unit: DumpUnit = {
        database: '',
        format: 'rdb',
        fileName: 'dump.rdb',
        ...(fromAgent ? { redis: { databases: 16, modules: [] } } : {}),
      };
      const client = server.client(0);
      const role = async (): Promise<string> =>
        /^role:(\w+)/m.exec(String(await client.info('replication')))?.[1] ?? '?';
      try {
        await client.eval("for i = 1, 1500000 do redis.call('SET', 'bulk:' .. i, i) end return 1", 0);
        const file = await dumpTo(service, unit);
        const backupSize = await client.dbsize();
        await client.set('marker', 'after the backup');
        await client.del('bulk:7');
        const changedSize = await client.dbsize();
        await client.config('SET', 'masterauth', 'the-targets-own-masterauth');

        const { child, output } = startRestoreChild({ kind: 'service', service, unit, file, workDir: work });
        let temp: number | undefined;
        try {
          await waitFor(
            `the target to become a replica of ${fromAgent ? 'the agent' : 'the temporary server'}`,
            120_000,
            async () => {
              temp ??= await tempServerOf(child.pid ?? -1);
              return (await role()) === 'slave';
            },
          );
          assert.equal(temp === undefined, fromAgent, `temporary server: ${temp}`);
        } finally {
          await killAndReap(child);
        }
        assert.doesNotMatch(output(), /done/);
        await waitFor('the watchdog to detach the target', 30_000, async () => (await role()) === 'master');
        if (!fromAgent) {
          await waitFor(
            'the watchdog to stop the temporary server',
            10_000,
            async () => !(await alive(temp ?? -1)),
          );
        }
        await waitFor(
          "the watchdog to put the target's masterauth back",
          10_000,
          async () =>
            ((await client.config('GET', 'masterauth')) as string[])[1] === 'the-targets-own-masterauth',
        );
        const marker = await client.get('marker');
        if (marker === null) {
          // The sync had completed: the backup, whole.
          assert.equal(await client.dbsize(), backupSize);
          assert.equal(await client.get('bulk:7'), '7');
        } else {
          assert.equal(marker, 'after the backup');
          assert.equal(await client.exists('bulk:7'), 0);
          assert.equal(await client.dbsize(), changedSize);
        }
        await client.set('writable', 'yes');
      } finally {
        await client.config('SET', 'masterauth', '');
        await client.flushall();
        client.disconnect();
      }
    }

    it('killed with SIGKILL during the full sync: the watchdog detaches the target, which holds the old data or the backup, never half, and takes writes again', () =>
      killDuringSync(false));

    it('killed with SIGKILL while the agent itself serves the full sync: the watchdog detaches the target, which holds the old data or the backup, never half', () =>
      killDuringSync(true));

    it('refuses a target that is a replica (e.g. left so by a restore killed with its watchdog), before touching it', async () => {
      const service: ServiceTarget = {
        name: 'cache',
        kind: 'redis',
        connection: { host: server.host, port: server.port, password: server.password },
        databases: [],
      };
      const unit: DumpUnit = { database: '', format: 'rdb', fileName: 'dump.rdb' };
      const client = server.client(0);
      try {
        await client.set('in-backup', 'x');
        const file = await dumpTo(service, unit);
        await client.set('precious', 'still here');
        await client.call('REPLICAOF', '127.0.0.1', '1'); // a primary that is not there
        await assert.rejects(
          engineFor('redis').restore(service, unit, createReadStream(file), context(work)),
          (err: unknown) =>
            err instanceof TargetMismatchError &&
            /is a replica of 127\.0\.0\.1:1/.test(err.message) &&
            /REPLICAOF NO ONE/.test(err.hint ?? ''),
        );
        await client.call('REPLICAOF', 'NO', 'ONE');
        assert.equal(await client.get('precious'), 'still here');
      } finally {
        await client.call('REPLICAOF', 'NO', 'ONE');
        await client.flushall();
        client.disconnect();
      }
    });
  });

  describe('mounts', () => {
    // Raw: the agent feeds tar. zstd: the decompressor writes into tar, as a restore of a stored artifact does.
    for (const compression of [undefined, 'zstd'] as const) {
      it(`leaves the live tree as it was when killed with SIGKILL mid-extract${compression ? ` (${compression} into tar)` : ''}; the next restore removes the leftover staging directory`, async () => {
        const root = join(files, 'mount');
        await makeMountTree(root);
        // Enough data that the extraction takes a while: 48 files of 4 MiB.
        await mkdir(join(root, 'bulk'));
        for (let i = 0; i < 48; i++)
          await writeFile(join(root, 'bulk', `f${i}.bin`), randomBytes(4 * 1024 * 1024));
        const backup = await treeFingerprint(root);
        const archive = join(files, 'files.tar');
        const made = createMountArchive(root, {});
        await Promise.all([pipeline(made.stream, createWriteStream(archive)), made.done]);

        await rm(join(root, 'docs'), { recursive: true });
        await writeFile(join(root, 'added.txt'), 'added after the backup\n');
        const changed = await treeFingerprint(root);
        const live = async (): Promise<unknown> =>
          (await treeFingerprint(root)).filter((e) => !e.path.startsWith('.envsnap-'));

        if (compression) execFileSync('zstd', ['-q', '-f', '-1', archive, '-o', `${archive}.zst`]);
        const { child, output } = startRestoreChild({
          kind: 'mount',
          file: compression ? `${archive}.zst` : archive,
          compression,
          root,
        });
        try {
          await waitFor('files in the staging directory', 60_000, async () => {
            const staging = (await readdir(root)).find((n) => n.startsWith('.envsnap-staging-'));
            if (!staging) return false;
            const bulk = await readdir(join(root, staging, 'bulk')).catch(() => []);
            return bulk.length >= 4;
          });
        } finally {
          await killAndReap(child);
        }
        assert.doesNotMatch(output(), /done/, 'the restore finished before it was killed');
        assert.deepEqual(await live(), changed);
        const staging = (await readdir(root)).find((n) => n.startsWith('.envsnap-staging-'));
        assert.ok(staging);
        // tar (and zstd) outlive the agent until their input ends, then exit on their own.
        await waitFor('tar to exit', 30_000, async () => !(await processesMentioning(staging)));

        await extractMountArchive(createReadStream(archive), root);
        assert.deepEqual(await treeFingerprint(root), backup);
      });
    }
  });
});
