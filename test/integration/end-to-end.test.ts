/**
 * envsnap end to end: a controller and an agent as separate processes, the
 * CLI as a child process, real throwaway MariaDB, PostgreSQL and Redis servers
 * loaded with Sakila and every Redis type, and a mount with awkward files.
 * Back up, damage, restore, compare; restore into another environment; and
 * the failure cases (kill -9, a corrupt byte, inactive, mismatch, bad config).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fillRedis, loadSakilaMariadb, loadSakilaPostgres, makeMountTree } from '../helpers/datasets.js';
import { EnvsnapCluster, runBin } from '../helpers/envsnap.js';
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
  startMariadb,
  startPostgres,
  startRedis,
  type MariadbServer,
  type PostgresServer,
  type RedisServer,
} from '../helpers/servers.js';

interface Servers {
  maria: MariadbServer;
  pg: PostgresServer;
  redis: RedisServer;
  mount: string;
}

interface BackupJson {
  id: string;
  environment: string;
  created: string;
  status: string;
  restorable: boolean;
  size_bytes: number;
  live: boolean;
}

interface BackupGetJson extends BackupJson {
  artifacts: Array<{
    name: string;
    service: string;
    kind: string;
    node: string;
    size_bytes: number;
    raw_bytes: number | null;
    sha256: string;
  }>;
}

function services(s: Servers): Array<Record<string, unknown>> {
  return [
    {
      name: 'db',
      kind: 'mariadb',
      nodes: ['node-1'],
      connection: mariadbConnection(s.maria),
    },
    {
      name: 'pg',
      kind: 'postgresql',
      nodes: ['node-1'],
      connection: postgresConnection(s.pg),
      databases: ['sakila'],
    },
    {
      name: 'cache',
      kind: 'redis',
      nodes: ['node-1'],
      connection: redisConnection(s.redis),
    },
  ];
}

async function fingerprints(s: Servers) {
  return {
    maria: await mariadbFingerprint(s.maria, 'sakila'),
    pg: await postgresFingerprint(s.pg, 'sakila'),
    redis: await redisFingerprint(s.redis),
    tree: await treeFingerprint(s.mount),
  };
}

/** Where an artifact is stored in the repository: the manifest's `key` (an attempt's), else `backups/<id>/<name>`. */
function storedKey(
  manifest: { artifacts: Array<{ name: string; key?: string }> },
  id: string,
  name: string,
): string {
  const a = manifest.artifacts.find((x) => x.name === name);
  assert.ok(a, `no ${name} in the manifest`);
  return a.key ?? `backups/${id}/${name}`;
}

function backupIdOf(stdout: string): string {
  const m = /^Backup ID: ([0-9a-f]{20})$/m.exec(stdout);
  assert.ok(m, `no "Backup ID:" line in:\n${stdout}`);
  return m[1]!;
}

describe('end to end: controller, agent and CLI', function () {
  this.timeout(300_000);
  let source: Servers;
  let target: Servers;
  let cluster: EnvsnapCluster;
  let root: string;
  let bigMount: string;
  let baseline: Awaited<ReturnType<typeof fingerprints>>;
  let backupId = '';

  before(async () => {
    const [sm, sp, sr, tm, tp, tr] = await Promise.all([
      startMariadb({ name: 'source' }),
      startPostgres({ name: 'source' }),
      startRedis({ name: 'source' }),
      startMariadb({ name: 'target' }),
      startPostgres({ name: 'target' }),
      startRedis({ name: 'target' }),
    ]);
    root = path.join(sm.dir, 'mounts');
    source = { maria: sm, pg: sp, redis: sr, mount: path.join(root, 'media') };
    target = { maria: tm, pg: tp, redis: tr, mount: path.join(root, 'media-target') };
    bigMount = path.join(root, 'big');
    await Promise.all([
      loadSakilaMariadb(sm),
      loadSakilaPostgres(sp),
      fillRedis(sr),
      makeMountTree(source.mount),
    ]);
    await mkdir(target.mount, { recursive: true });
    await writeFile(path.join(target.mount, 'stale.txt'), 'must disappear after the restore\n');
    // A mount large enough that a backup is still running when the agent is killed.
    await mkdir(bigMount, { recursive: true });
    const fh = await open(path.join(bigMount, 'random.bin'), 'w');
    const chunk = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < 48; i++) {
      for (let j = 0; j < chunk.length; j += 4) chunk.writeUInt32LE((Math.random() * 0xffffffff) >>> 0, j);
      await fh.write(chunk);
    }
    await fh.close();

    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [
        {
          name: 'main',
          type: 'production',
          active: true,
          services: services(source),
          mounts: [{ name: 'media', node: 'node-1', path: source.mount }],
        },
        {
          name: 'staging',
          type: 'staging',
          active: true,
          services: services(target),
          mounts: [{ name: 'media', node: 'node-1', path: target.mount }],
        },
        { name: 'old', type: 'development', active: false, services: services(target).slice(0, 1) },
        { name: 'partial', type: 'development', active: true, services: services(target).slice(0, 1) },
        {
          name: 'big',
          type: 'development',
          active: true,
          mounts: [{ name: 'big', node: 'node-1', path: bigMount }],
        },
      ],
    });
  });

  after(async () => {
    if (cluster) await cluster.stop();
    await Promise.all(
      [source, target].flatMap((s) => (s ? [s.maria.stop(), s.pg.stop(), s.redis.stop()] : [])),
    );
  });

  it('backup:create backs up every service and mount and prints the backup ID', async () => {
    baseline = await fingerprints(source);
    const r = await cluster.cli(['backup:create', '-e', 'main', '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^Creating backup of main$/m);
    backupId = backupIdOf(r.stdout);
  });

  it('backup:list shows it restorable, newest first, as a table and as JSON', async () => {
    const list = await cluster.json<BackupJson[]>(['backup:list', '-e', 'main']);
    assert.equal(list[0]!.id, backupId);
    assert.equal(list[0]!.environment, 'main');
    assert.equal(list[0]!.status, 'complete');
    assert.equal(list[0]!.restorable, true);
    assert.ok(list[0]!.size_bytes > 1000);
    assert.ok(!Number.isNaN(Date.parse(list[0]!.created)));
    const table = await cluster.cli(['backups', '-e', 'main']);
    assert.equal(table.code, 0);
    assert.match(table.stdout, /Created.*Backup ID.*Restorable/);
    assert.match(table.stdout, new RegExp(`${backupId}.*true`));
  });

  it('backup:get shows the manifest, which matches the stored artifacts', async () => {
    const b = await cluster.json<BackupGetJson>(['backup:get', backupId]);
    const names = b.artifacts.map((a) => a.name).sort();
    assert.deepEqual(names, [
      'cache/dump.rdb.zst',
      'db/sakila.sql.zst',
      'media/files.tar.zst',
      'pg/globals.sql.zst',
      'pg/sakila.pgdump.zst',
    ]);
    const dir = path.join(cluster.repository, 'backups', backupId);
    const manifest = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8')) as {
      format_version: number;
      artifacts: Array<BackupGetJson['artifacts'][number] & { key?: string }>;
    };
    assert.equal(manifest.format_version, 1);
    for (const a of b.artifacts) {
      assert.equal(a.node, 'node-1');
      // A dump under a dump lock is stored under its attempt's key (the manifest's `key`).
      const file = path.join(cluster.repository, storedKey(manifest, backupId, a.name));
      const bytes = await readFile(file);
      assert.equal(bytes.length, a.size_bytes, a.name);
      assert.equal(createHash('sha256').update(bytes).digest('hex'), a.sha256, a.name);
      assert.equal(bytes.readUInt32LE(0), 0xfd2fb528, `${a.name} is zstd`);
      // The dump tools write straight into zstd; the raw size is zstd's own count.
      const raw = spawnSync('zstd', ['-dc', file], { maxBuffer: 512 * 1024 * 1024 });
      assert.equal(raw.status, 0, `zstd -dc ${a.name}`);
      assert.equal(a.raw_bytes, raw.stdout.length, `${a.name} raw_bytes`);
    }
    assert.deepEqual(manifest.artifacts.map((a) => a.sha256).sort(), b.artifacts.map((a) => a.sha256).sort());
  });

  it('backup:restore brings back damaged databases, cache and files exactly', async () => {
    await source.maria.query(
      'SET FOREIGN_KEY_CHECKS=0; DROP TABLE payment; DROP TABLE rental; DROP VIEW customer_list; UPDATE film SET title = "X";',
      'sakila',
    );
    await source.pg.psql(
      "DROP TABLE payment CASCADE; UPDATE film SET title = 'X'; SELECT setval('actor_actor_id_seq', 99999);",
      'sakila',
    );
    const redis = source.redis.client();
    await redis.flushall();
    await redis.set('added-after-backup', '1');
    redis.disconnect();
    await rm(path.join(source.mount, 'docs'), { recursive: true, force: true });
    await writeFile(path.join(source.mount, 'new-file.txt'), 'not in the backup');
    assert.notDeepEqual(await fingerprints(source), baseline);

    const r = await cluster.cli(['backup:restore', backupId, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    const after = await fingerprints(source);
    assert.deepEqual(after.maria, baseline.maria);
    assert.deepEqual(after.pg, baseline.pg);
    assert.deepEqual(after.redis, baseline.redis);
    assert.deepEqual(after.tree, baseline.tree);
  });

  it('backup:restore --target restores into another environment', async () => {
    const r = await cluster.cli(['backup:restore', backupId, '--target', 'staging', '--yes']);
    assert.equal(r.code, 0, r.stderr);
    const t = await fingerprints(target);
    assert.deepEqual(t.maria, baseline.maria);
    assert.deepEqual(t.pg, baseline.pg);
    assert.deepEqual(t.redis, baseline.redis);
    assert.deepEqual(t.tree, baseline.tree);
  });

  it('refuses a restore without a TTY and without --yes', async () => {
    const r = await cluster.cli(['backup:restore', backupId]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /refusing to restore without confirmation.*--yes/);
  });

  it('refuses a target that lacks a service of the backup, before touching anything', async () => {
    const before = await mariadbFingerprint(target.maria, 'sakila');
    const r = await cluster.cli(['backup:restore', backupId, '--target', 'partial', '--yes']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /does not match environment partial: .*service "pg" is missing in partial/);
    assert.deepEqual(await mariadbFingerprint(target.maria, 'sakila'), before);
  });

  it('refuses inactive environments and unknown ids with clear errors', async () => {
    const inactive = await cluster.cli(['backup:create', '-e', 'old']);
    assert.equal(inactive.code, 1);
    assert.match(inactive.stderr, /environment "old" is not active/);
    const unknownEnv = await cluster.cli(['backup:create', '-e', 'nope']);
    assert.match(unknownEnv.stderr, /environment "nope" not found.*main/);
    const badId = await cluster.cli(['backup:restore', 'not-an-id', '--yes']);
    assert.match(badId.stderr, /invalid backup id "not-an-id"/);
    const missing = await cluster.cli(['backup:get', '0'.repeat(20)]);
    assert.match(missing.stderr, /backup 0{20} not found/);
  });

  it('backup:restore --yes of an unknown backup says so, with nothing asked of it first', async () => {
    const r = await cluster.cli(['backup:restore', '0'.repeat(20), '--yes']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /backup 0{20} not found.*backup:list/);
  });

  it('a corrupt byte in an artifact makes the restore refuse before any data is touched', async () => {
    await source.maria.query('UPDATE actor SET first_name = "CHANGED" WHERE actor_id = 1', 'sakila');
    const damaged = await mariadbFingerprint(source.maria, 'sakila');
    const manifest = JSON.parse(
      await readFile(path.join(cluster.repository, 'backups', backupId, 'manifest.json'), 'utf8'),
    ) as { artifacts: Array<{ name: string; key?: string }> };
    const file = path.join(cluster.repository, storedKey(manifest, backupId, 'pg/sakila.pgdump.zst'));
    const original = await readFile(file);
    const corrupt = Buffer.from(original);
    const at = Math.floor(corrupt.length / 2);
    corrupt[at] = corrupt[at]! ^ 0xff;
    await writeFile(file, corrupt);
    try {
      const r = await cluster.cli(['backup:restore', backupId, '--yes']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /artifact pg\/sakila\.pgdump\.zst is corrupt/);
      assert.deepEqual(await mariadbFingerprint(source.maria, 'sakila'), damaged);
    } finally {
      await writeFile(file, original);
    }
  });

  it('activity:list and activity:log show what happened; agent:list shows the agent', async () => {
    const acts = await cluster.json<Array<{ id: string; type: string; state: string }>>(['activity:list']);
    assert.ok(acts.some((a) => a.type === 'backup.create' && a.state === 'complete'));
    assert.ok(acts.some((a) => a.type === 'backup.restore' && a.state === 'failed'));
    const created = acts.find((a) => a.type === 'backup.create')!;
    const log = await cluster.cli(['activity:log', created.id]);
    assert.equal(log.code, 0);
    assert.match(log.stdout, /backup [0-9a-f]{20} of main started \(consistent\)/);
    const agents = await cluster.json<Array<{ node_id: string; connected: boolean; version: string }>>([
      'agent:list',
    ]);
    assert.deepEqual(
      agents.map((a) => [a.node_id, a.connected]),
      [['node-1', true]],
    );
  });

  it('exports metrics on the controller and the agent', async () => {
    const c = await (await fetch(`http://127.0.0.1:${cluster.metricsPort}/metrics`)).text();
    assert.match(c, /^envsnap_backups_total\{environment="main",status="complete"\} 1$/m);
    assert.match(c, /^envsnap_agents_connected 1$/m);
    assert.match(c, /^envsnap_last_successful_backup_timestamp_seconds\{environment="main"\} \d/m);
    assert.match(c, /^envsnap_backup_duration_seconds_count\{environment="main",status="complete"\} 1$/m);
    const a = await (
      await fetch(`http://127.0.0.1:${cluster.agentMetricsPorts.get('node-1')}/metrics`)
    ).text();
    assert.match(a, /^envsnap_agent_tasks_total\{type="backup",kind="mariadb",status="ok"\} 1$/m);
    assert.match(a, /^envsnap_agent_connected 1$/m);
  });

  it('never writes a secret into a log', async () => {
    const logs = await cluster.logs();
    assert.ok(logs.length > 0);
    for (const secret of [
      source.maria.password,
      source.redis.password,
      target.maria.password,
      target.redis.password,
    ]) {
      assert.ok(!logs.includes(secret), 'a password appears in the logs');
    }
  });

  it('kill -9 of the agent mid-backup fails the backup and leaves no partial artifact', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'big', '--no-wait']);
    assert.equal(r.code, 0, r.stderr);
    const id = backupIdOf(r.stdout);
    const dir = path.join(cluster.repository, 'backups', id);
    // Wait until bytes are flowing into the repository, then kill the agent.
    await cluster.waitFor(
      async () => (await readdir(path.join(cluster.repository, '.tmp'))).length > 0,
      'the upload to start',
      20_000,
    );
    cluster.agents.get('node-1')!.child.kill('SIGKILL');
    await cluster.waitFor(
      async () => (await cluster.json<BackupJson>(['backup:get', id])).status === 'failed',
      'the backup to fail',
    );
    const b = await cluster.json<BackupGetJson & { error: string }>(['backup:get', id]);
    assert.equal(b.restorable, false);
    assert.match(b.error, /agent node-1 disconnected/);
    assert.equal(existsSync(dir), false, 'partial artifacts remain');
    assert.deepEqual(await readdir(path.join(cluster.repository, '.tmp')), []);
    const restore = await cluster.cli(['backup:restore', id, '--yes']);
    assert.match(restore.stderr, /is failed, not restorable/);
    await cluster.startAgent('node-1');
  });

  it('a bad config stops the controller before it does anything, naming file and field', async () => {
    const file = path.join(cluster.dir, 'bad.yaml');
    await writeFile(
      file,
      'controller:\n  state_dir: relative/dir\nenvironments:\n  - name: main\n    services:\n      - name: db\n        kind: oracle\n',
    );
    const r = await runBin('envsnap-controller', ['--config', file]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(
        `${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: invalid config: controller\\.state_dir: must be an absolute path`,
      ),
    );
    assert.match(r.stderr, /environments\[0\]\.services\[0\]\.kind/);
    assert.equal(existsSync(path.join(cluster.dir, 'relative')), false);
  });

  it('SIGTERM stops agent and controller cleanly (exit 0)', async () => {
    const codes = await cluster.stop(true);
    assert.deepEqual(codes, { 'node-1': 0, controller: 0 });
    await rm(cluster.dir, { recursive: true, force: true });
  });
});
