/**
 * Restore drills for real (issue 5 §3): a controller and an agent as processes, real throwaway
 * MariaDB and PostgreSQL (both with Sakila), Redis (every type) and a mount. A backup records its
 * stats in the manifest; `backup:drill` restores it into scratch targets and passes; the scratch
 * targets are gone afterwards and the live data is untouched (fingerprints). Then a backup is
 * altered behind envsnap's back: its MariaDB and PostgreSQL artifacts are decompressed, a row is
 * changed and a table renamed (a missing table), recompressed, and the objects, the catalog and the
 * manifest get the new sizes and SHA-256s, so that `backup:verify` still passes; the drill fails,
 * naming the tables that differ. The result shows in `backup:get` and in the metrics.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Catalog } from '../../controller/catalog.js';
import { fillRedis, loadSakilaMariadb, loadSakilaPostgres, makeMountTree } from '../helpers/datasets.js';
import { EnvsnapCluster, type CliResult } from '../helpers/envsnap.js';
import type { ArtifactStats } from '../../shared/drill-stats.js';
import { storedArtifactKey } from '../../shared/storage/keys.js';
import {
  mariadbFingerprint,
  postgresFingerprint,
  redisFingerprint,
  treeFingerprint,
} from '../helpers/fingerprints.js';
import {
  mariadbConnection,
  postgresConnection,
  redisConnection,
  requireBinary,
  startMariadb,
  startPostgres,
  startRedis,
  type MariadbServer,
  type PostgresServer,
  type RedisServer,
} from '../helpers/servers.js';

const ENV = 'app';

interface DrillJson {
  backup_id: string;
  environment: string;
  result: string;
  source: string;
  artifacts: Array<{
    name: string;
    result: string;
    informational: boolean;
    detail: string;
    differences: string[];
  }>;
}

interface ManifestJson {
  artifacts: Array<{
    name: string;
    kind: string;
    format: string;
    size_bytes: number;
    sha256: string;
    /** Set when stored under an attempt's key (a dump under a dump lock). */
    key?: string;
    stats?: ArtifactStats;
  }>;
}

function shown(r: CliResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

describe('backup:drill: restore drills into scratch targets (real servers)', function () {
  this.timeout(300_000);
  let maria: MariadbServer;
  let pg: PostgresServer;
  let redis: RedisServer;
  let mount: string;
  let c: EnvsnapCluster;
  let good = '';
  let baseline: unknown;

  const fingerprints = async () => ({
    maria: await mariadbFingerprint(maria, 'sakila'),
    pg: await postgresFingerprint(pg, 'sakila'),
    redis: await redisFingerprint(redis),
    tree: await treeFingerprint(mount),
  });

  async function backup(): Promise<string> {
    const r = await c.cli(['backup:create', '-e', ENV, '--yes']);
    assert.equal(r.code, 0, shown(r));
    const m = /^Backup ID: ([0-9a-f]{20})$/m.exec(r.stdout);
    assert.ok(m, shown(r));
    return m[1]!;
  }

  async function drill(args: string[]): Promise<{ r: CliResult; out: DrillJson }> {
    const r = await c.cli(['backup:drill', ...args, '--format', 'json']);
    try {
      return { r, out: JSON.parse(r.stdout) as DrillJson };
    } catch {
      throw new Error(`backup:drill printed no JSON\n${shown(r)}`);
    }
  }

  async function manifest(id: string): Promise<ManifestJson> {
    return JSON.parse(
      await readFile(path.join(c.repository, 'backups', id, 'manifest.json'), 'utf8'),
    ) as ManifestJson;
  }

  /** Nothing a drill makes is left: scratch databases, throwaway redis-servers, scratch directories. */
  async function assertScratchGone(): Promise<void> {
    assert.equal((await maria.query(`SHOW DATABASES LIKE '%envsnap\\_drill%';`)).trim(), '');
    assert.equal(
      (await pg.psql(`SELECT datname FROM pg_database WHERE datname LIKE '%envsnap_drill%';`)).trim(),
      '',
    );
    const servers = spawnSync('pgrep', ['-f', `redis-drill-`], { encoding: 'utf8' });
    assert.equal(servers.stdout.trim(), '', 'a throwaway redis-server is still running');
    const tasks = await readdir(path.join(c.dir, 'work-node-1', 'tasks')).catch(() => []);
    assert.deepEqual(tasks, [], 'task scratch directories left in the agent work dir');
  }

  async function metricLines(name: string): Promise<string[]> {
    const text = await (await fetch(`http://127.0.0.1:${c.metricsPort}/metrics`)).text();
    return text.split('\n').filter((l) => l.startsWith(name));
  }

  before(async () => {
    await requireBinary('zstd', 'zstd');
    [maria, pg, redis] = await Promise.all([startMariadb(), startPostgres(), startRedis()]);
    mount = path.join(maria.dir, 'mounts', 'media');
    await Promise.all([
      loadSakilaMariadb(maria),
      loadSakilaPostgres(pg),
      fillRedis(redis),
      makeMountTree(mount),
    ]);
    c = await EnvsnapCluster.start({
      nodes: ['node-1'],
      controller: { prune_schedule: '0 0 1 1 *' },
      environments: [
        {
          name: ENV,
          services: [
            {
              name: 'db',
              kind: 'mariadb',
              nodes: ['node-1'],
              connection: mariadbConnection(maria),
              databases: ['sakila'],
            },
            {
              name: 'pg',
              kind: 'postgresql',
              nodes: ['node-1'],
              connection: postgresConnection(pg),
              databases: ['sakila'],
            },
            {
              name: 'cache',
              kind: 'redis',
              nodes: ['node-1'],
              connection: redisConnection(redis),
            },
          ],
          mounts: [{ name: 'media', node: 'node-1', path: mount }],
          // Writes paused during consistent backups: the MariaDB and Redis stats are binding.
          hooks: {
            quiesce: [{ nodes: ['node-1'], command: 'true' }],
            resume: [{ nodes: ['node-1'], command: 'true' }],
          },
        },
      ],
    });
    baseline = await fingerprints();
    good = await backup();
  });

  after(async () => {
    await c?.stop();
    await Promise.all([maria?.stop(), pg?.stop(), redis?.stop()]);
  });

  it('records per-table, keyspace and tree stats in the manifest at backup time', async () => {
    const m = await manifest(good);
    const byName = new Map(m.artifacts.map((a) => [a.name, a]));
    const sql = byName.get('db/sakila.sql.zst')!;
    assert.equal(sql.stats?.basis, 'quiesced');
    assert.equal(sql.stats?.level, 'checksums');
    const rental = sql.stats?.tables?.find((t) => t.name === 'rental');
    assert.equal(rental?.rows, 16044);
    assert.match(rental?.checksum ?? '', /^\d+$/);
    assert.equal(sql.stats?.tables?.length, 16);
    // Sakila's schema objects without rows: 7 views, 6 triggers, 3 procedures, 3 functions.
    const objects = sql.stats?.objects ?? [];
    for (const o of [
      'view actor_info',
      'trigger ins_film',
      'procedure film_in_stock',
      'function get_customer_balance',
    ])
      assert.ok(objects.includes(o), objects.join(', '));
    assert.equal(objects.filter((o) => o.startsWith('view ')).length, 7);
    assert.equal(objects.filter((o) => o.startsWith('trigger ')).length, 6);
    const pgdump = m.artifacts.find((a) => a.format === 'pg_custom')!;
    assert.equal(pgdump.stats?.basis, 'snapshot', 'PostgreSQL stats come from the dump snapshot');
    const pgRental = pgdump.stats?.tables?.find((t) => t.name === 'public.rental');
    assert.equal(pgRental?.rows, 16044);
    assert.match(
      pgRental?.checksum ?? '',
      /^r1:-?\d+$/,
      'PostgreSQL 14+ rows are hashed with the record hash',
    );
    assert.equal(m.artifacts.find((a) => a.format === 'pg_globals')?.stats, undefined);
    const rdb = m.artifacts.find((a) => a.kind === 'redis')!;
    assert.equal(rdb.stats?.basis, 'quiesced');
    assert.ok((rdb.stats?.keyspaces ?? []).reduce((n, k) => n + k.keys, 0) > 0);
    const tar = m.artifacts.find((a) => a.kind === 'mount')!;
    assert.equal(tar.stats?.basis, 'snapshot');
    assert.ok((tar.stats?.tree?.files ?? 0) > 0);
    assert.match(tar.stats?.tree?.sha256 ?? '', /^[0-9a-f]{64}$/);
  });

  it('passes on a good backup, removes its scratch targets and leaves the live data untouched', async () => {
    const { r, out } = await drill([good]);
    assert.equal(r.code, 0, shown(r));
    assert.equal(out.result, 'pass', JSON.stringify(out, null, 2));
    const results = Object.fromEntries(out.artifacts.map((a) => [a.name, a.result]));
    assert.equal(results['db/sakila.sql.zst'], 'pass');
    assert.equal(results['pg/sakila.pgdump.zst'], 'pass');
    assert.equal(results['pg/globals.sql.zst'], 'skipped');
    assert.equal(results['cache/dump.rdb.zst'], 'pass');
    assert.equal(results['media/files.tar.zst'], 'pass');
    assert.ok(out.artifacts.every((a) => a.differences.length === 0));
    await assertScratchGone();
    assert.deepEqual(await fingerprints(), baseline, 'the drill changed the live data');
    const b = await c.json<{ drill: DrillJson | null }>(['backup:get', good]);
    assert.equal(b.drill?.result, 'pass');
    assert.ok(
      (await metricLines('envsnap_drill_last_result{')).includes(
        `envsnap_drill_last_result{environment="${ENV}",status="pass"} 1`,
      ),
    );
  });

  it('fails on a backup whose data was altered after the backup, though its bytes verify', async () => {
    const bad = await backup();
    const m = await manifest(bad);
    const changed = new Map<string, { size: number; sha256: string }>();
    // Decompress, alter, recompress, and put the object back in place.
    for (const a of m.artifacts) {
      if (!['db/sakila.sql.zst', 'pg/sakila.pgdump.zst', 'cache/dump.rdb.zst'].includes(a.name)) continue;
      const file = path.join(c.repository, ...storedArtifactKey(bad, a).split('/'));
      const raw = spawnSync('zstd', ['-dc', file], { maxBuffer: 1 << 30 });
      assert.equal(raw.status, 0, String(raw.stderr));
      let text = raw.stdout.toString('latin1');
      // The RDB: one byte flipped in its body, which its CRC64 trailer catches when it loads.
      if (a.name === 'cache/dump.rdb.zst') {
        const at = Math.floor(text.length / 2);
        text = text.slice(0, at) + String.fromCharCode(text.charCodeAt(at) ^ 0xff) + text.slice(at + 1);
      }
      // One changed row (same length, so the PostgreSQL archive stays well-formed) ...
      if (a.kind !== 'redis') {
        assert.ok(text.includes('PENELOPE'));
        text = text.replace('PENELOPE', 'PENELOPX');
      }
      // ... and, in the SQL dump, a table and a trigger that are not there any more under their names.
      if (a.name.endsWith('.sql.zst')) {
        text = text.replaceAll('`category`', '`categorx`');
        assert.ok(text.includes('TRIGGER `del_film`'));
        text = text.replaceAll('TRIGGER `del_film`', 'TRIGGER `del_filx`');
      }
      const packed = spawnSync('zstd', ['-q', '-c'], {
        input: Buffer.from(text, 'latin1'),
        maxBuffer: 1 << 30,
      });
      assert.equal(packed.status, 0, String(packed.stderr));
      await writeFile(file, packed.stdout);
      const sha256 = createHash('sha256').update(packed.stdout).digest('hex');
      changed.set(a.name, { size: packed.stdout.length, sha256 });
      a.size_bytes = packed.stdout.length;
      a.sha256 = sha256;
    }
    assert.equal(changed.size, 3);
    await writeFile(
      path.join(c.repository, 'backups', bad, 'manifest.json'),
      JSON.stringify(m, null, 2) + '\n',
    );
    // The catalog too: stop the controller, rewrite the record, start it again.
    c.controller.child.kill('SIGTERM');
    await c.controller.exited;
    const catalog = await Catalog.open(path.join(c.dir, 'state'));
    const rec = await catalog.getBackup(bad);
    for (const a of rec.artifacts) {
      const n = changed.get(a.name);
      if (n) Object.assign(a, { size_bytes: n.size, sha256: n.sha256 });
    }
    rec.sizeBytes = rec.artifacts.reduce((s, a) => s + a.size_bytes, 0);
    await catalog.putBackup(rec);
    await catalog.close();
    await c.startController();
    await c.waitFor(async () => {
      const agents = await c.json<Array<{ node_id: string; connected: boolean }>>(['agent:list']);
      return agents.some((x) => x.connected);
    }, 'the agent to reconnect');

    const verify = await c.cli(['backup:verify', bad]);
    assert.equal(verify.code, 0, `the altered bytes must still verify\n${shown(verify)}`);

    const { r, out } = await drill(['--latest', '-e', ENV]);
    assert.equal(r.code, 1, shown(r));
    assert.equal(out.backup_id, bad);
    assert.equal(out.result, 'fail');
    const byName = new Map(out.artifacts.map((a) => [a.name, a]));
    const sql = byName.get('db/sakila.sql.zst')!;
    assert.equal(sql.result, 'fail');
    assert.ok(
      sql.differences.some((d) => /^table actor: checksum \d+ at backup time, \d+ restored$/.test(d)),
      sql.differences.join('\n'),
    );
    assert.ok(
      sql.differences.includes('table category: missing after the restore (16 rows at backup time)'),
      sql.differences.join('\n'),
    );
    assert.ok(sql.differences.includes("table categorx: restored but not in the backup's stats"));
    assert.ok(
      sql.differences.includes('trigger del_film: missing after the restore'),
      sql.differences.join('\n'),
    );
    assert.ok(sql.differences.includes("trigger del_filx: restored but not in the backup's stats"));
    const pgd = byName.get('pg/sakila.pgdump.zst')!;
    assert.equal(pgd.result, 'fail');
    assert.ok(
      pgd.differences.some((d) => d.startsWith('table public.actor: checksum ')),
      pgd.differences.join('\n'),
    );
    assert.equal(pgd.differences.length, 1, pgd.differences.join('\n'));
    // An artifact that does not restore at all is an error, and its throwaway server is gone too.
    const rdb = byName.get('cache/dump.rdb.zst')!;
    assert.equal(rdb.result, 'error', JSON.stringify(rdb));
    assert.match(rdb.detail, /redis-server/);
    assert.equal(byName.get('media/files.tar.zst')?.result, 'pass');

    // The table output names what differed too, and exits 1.
    const table = await c.cli(['backup:drill', bad]);
    assert.equal(table.code, 1, shown(table));
    assert.match(table.stdout, /table category: missing after the restore/);

    await assertScratchGone();
    assert.deepEqual(await fingerprints(), baseline, 'the drill changed the live data');
    const b = await c.json<{ drill: DrillJson | null }>(['backup:get', bad]);
    assert.equal(b.drill?.result, 'fail');
    const lines = await metricLines('envsnap_drill_last_result{');
    assert.ok(
      lines.includes(`envsnap_drill_last_result{environment="${ENV}",status="fail"} 1`),
      lines.join('\n'),
    );
    assert.ok(
      lines.includes(`envsnap_drill_last_result{environment="${ENV}",status="pass"} 0`),
      lines.join('\n'),
    );
    assert.ok((await metricLines('envsnap_drill_duration_seconds_count{')).length >= 1);
  });

  it('drills a live backup: PostgreSQL stats bind (same snapshot), MariaDB and Redis ones are informational', async () => {
    const r = await c.cli(['backup:create', '-e', ENV, '--live', '--yes']);
    assert.equal(r.code, 0, shown(r));
    const live = /^Backup ID: ([0-9a-f]{20})$/m.exec(r.stdout)![1]!;
    const m = await manifest(live);
    const basis = Object.fromEntries(m.artifacts.map((a) => [a.name, a.stats?.basis ?? null]));
    assert.deepEqual(basis, {
      'cache/dump.rdb.zst': 'live',
      'db/sakila.sql.zst': 'live',
      'media/files.tar.zst': 'snapshot',
      'pg/globals.sql.zst': null,
      'pg/sakila.pgdump.zst': 'snapshot',
    });
    const { r: dr, out } = await drill([live]);
    assert.equal(dr.code, 0, shown(dr));
    assert.equal(out.result, 'pass');
    assert.ok(out.artifacts.filter((a) => a.name !== 'pg/globals.sql.zst').every((a) => a.result === 'pass'));
    await assertScratchGone();
    assert.deepEqual(await fingerprints(), baseline, 'the drill changed the live data');
  });
});
