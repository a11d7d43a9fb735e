/**
 * High availability for real: three agents (node-1..node-3) as separate
 * processes on one machine, an HA MariaDB group and an HA PostgreSQL group
 * (each one throwaway server that every node reaches), quiesce and resume
 * hooks that append to a file, and the failure cases: the dump lock holder
 * killed with SIGKILL, frozen with SIGSTOP past its lease, a failing quiesce,
 * the controller killed mid-backup (the agents' watchdog resumes), and
 * concurrent db-dump calls.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { EnvsnapCluster, type EnvironmentYaml } from '../helpers/envsnap.js';
import { mariadbFingerprint } from '../helpers/fingerprints.js';
import {
  mariadbConnection,
  postgresConnection,
  startMariadb,
  startPostgres,
  type MariadbServer,
  type PostgresServer,
} from '../helpers/servers.js';

interface ArtifactJson {
  name: string;
  service: string;
  node: string;
}
interface BackupJson {
  id: string;
  status: string;
  live: boolean;
  error: string | null;
  artifacts: ArtifactJson[];
}
interface LockJson {
  key: string;
  holder: string;
  fencing_token: number;
  expires: string;
}

const NODES = ['node-1', 'node-2', 'node-3'];
/** Rows of the table that makes a MariaDB dump last a few seconds. */
const BIG_ROWS = 600_000;

describe('high availability: dump locks, quiesce/resume, db-dump (three agents)', function () {
  this.timeout(300_000);
  let work: string;
  let maria: MariadbServer;
  let pg: PostgresServer;
  let hookLog: string;
  let cluster: EnvsnapCluster;

  const services = (dumpFrom?: string[]) => [
    {
      name: 'db',
      kind: 'mariadb',
      nodes: NODES,
      ...(dumpFrom ? { dump_from: dumpFrom } : {}),
      connection: mariadbConnection(maria),
      databases: ['shop'],
    },
    {
      name: 'pg',
      kind: 'postgresql',
      nodes: NODES,
      connection: postgresConnection(pg),
      databases: ['orders'],
    },
  ];
  const hook = (phase: string, extra = '') =>
    NODES.map((n) => ({
      nodes: [n],
      command: `echo "${phase} $ENVSNAP_NODE $(date +%s%N)" >> ${hookLog}${extra}`,
    }));

  /** The hook file's lines as { phase, node, t (ms) }. */
  async function hookLines(): Promise<Array<{ phase: string; node: string; t: number }>> {
    const text = existsSync(hookLog) ? await readFile(hookLog, 'utf8') : '';
    return text
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const [phase, node, ns] = l.split(' ');
        return { phase: phase!, node: node!, t: Number(BigInt(ns!) / 1_000_000n) };
      });
  }

  /** Dump intervals the agents logged, per node, for one service. */
  async function dumpIntervals(
    service: string,
  ): Promise<Array<{ node: string; start: number; end?: number }>> {
    const out: Array<{ node: string; start: number; end?: number; task: string }> = [];
    for (const node of NODES) {
      const text = await readFile(path.join(cluster.dir, `agent-${node}.log`), 'utf8').catch(() => '');
      for (const line of text.split('\n')) {
        if (!line.includes('"interval"')) continue;
        const rec = JSON.parse(line) as { interval: string; service: string; task: string; time: string };
        if (rec.service !== service) continue;
        const t = Date.parse(rec.time);
        if (rec.interval === 'start') out.push({ node, start: t, task: rec.task });
        else {
          const open = out.find((i) => i.task === rec.task);
          if (open) open.end = t;
        }
      }
    }
    return out.sort((a, b) => a.start - b.start);
  }

  async function backup(id: string): Promise<BackupJson> {
    return cluster.json<BackupJson>(['backup:get', id]);
  }

  async function waitBackupDone(id: string, timeoutMs = 120_000): Promise<BackupJson> {
    let b: BackupJson | undefined;
    await cluster.waitFor(
      async () => {
        b = await backup(id);
        return b.status === 'complete' || b.status === 'failed';
      },
      `backup ${id} to finish`,
      timeoutMs,
    );
    return b!;
  }

  async function locks(): Promise<LockJson[]> {
    return cluster.json<LockJson[]>(['lock:list']);
  }

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'envsnap-ha-'));
    hookLog = path.join(work, 'hooks.log');
    [maria, pg] = await Promise.all([startMariadb(), startPostgres()]);
    await maria.query(
      `CREATE DATABASE shop; USE shop;
       CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB;
       INSERT INTO items VALUES (1,'apple'),(2,'pear'),(3,'plum');
       CREATE TABLE big (id INT PRIMARY KEY, pad CHAR(200)) ENGINE=InnoDB;
       INSERT INTO big SELECT seq, REPEAT(CHAR(65 + seq % 26), 200) FROM seq_1_to_${BIG_ROWS};`,
    );
    await pg.psql('CREATE DATABASE orders');
    await pg.psql(
      "CREATE TABLE o (id int primary key, what text); INSERT INTO o SELECT g, 'order ' || g FROM generate_series(1, 1000) g;",
      'orders',
    );
    const envs: EnvironmentYaml[] = [
      {
        name: 'ha',
        services: services(['node-2', 'node-3', 'node-1']),
        hooks: {
          quiesce: hook('quiesce'),
          resume: hook('resume'),
          post_restore: hook('post_restore').slice(0, 1),
        },
        max_pause: 120,
        // The SIGSTOP case freezes the lock holder mid-upload; drill stats are not what it tests
        // (and were once taken before the dump started, which froze it before its upload began).
        drill_stats: 'off',
      },
      {
        name: 'ha-fail',
        services: services(),
        hooks: {
          quiesce: [
            ...hook('quiesce'),
            { nodes: ['node-3'], command: 'echo maintenance refused >&2; exit 3' },
          ],
          resume: hook('resume'),
        },
      },
      {
        name: 'ha-bad',
        services: [{ ...services()[1]!, databases: ['nosuch'] }],
      },
      {
        name: 'ha-wd',
        services: services(['node-1']),
        hooks: { quiesce: hook('quiesce'), resume: hook('resume') },
        max_pause: 4,
      },
    ];
    cluster = await EnvsnapCluster.start({
      nodes: NODES,
      environments: envs,
      controller: { lease_ttl: 3, dump_attempts: 3 },
    });
  });

  after(async () => {
    await cluster?.stop(true);
    await Promise.all([maria?.stop(), pg?.stop()]);
    await rm(work, { recursive: true, force: true });
  });

  it('a consistent backup: quiesce on every node, exactly one dump per service from the preferred node, then resume', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'ha', '--yes']);
    assert.equal(r.code, 0, r.stderr);
    const id = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    const b = await backup(id);
    assert.equal(b.status, 'complete');
    assert.equal(b.live, false);
    const db = b.artifacts.filter((a) => a.service === 'db');
    const pgs = b.artifacts.filter((a) => a.service === 'pg');
    assert.deepEqual(
      db.map((a) => a.node),
      ['node-2'],
      'dump_from puts node-2 first; one artifact (database shop)',
    );
    assert.ok(pgs.length >= 1 && pgs.every((a) => a.node === 'node-1'), JSON.stringify(pgs));
    // Each service was dumped by exactly one node.
    const dbIntervals = await dumpIntervals('db');
    assert.deepEqual(
      dbIntervals.map((i) => i.node),
      ['node-2'],
    );

    const lines = await hookLines();
    const q = lines.filter((l) => l.phase === 'quiesce');
    const res = lines.filter((l) => l.phase === 'resume');
    assert.deepEqual(q.map((l) => l.node).sort(), NODES);
    assert.deepEqual(res.map((l) => l.node).sort(), NODES);
    const dumps = [...dbIntervals, ...(await dumpIntervals('pg'))];
    const lastQuiesce = Math.max(...q.map((l) => l.t));
    const firstResume = Math.min(...res.map((l) => l.t));
    for (const d of dumps) {
      assert.ok(d.start >= lastQuiesce, `dump on ${d.node} started before the last quiesce ended`);
      assert.ok(d.end! <= firstResume, `dump on ${d.node} ended after the first resume`);
    }
    const log = await cluster.cli(['activity:log', await activityOf(id)]);
    assert.match(log.stdout + log.stderr, /site paused for \d+\.\d s/);
    assert.deepEqual(await locks(), [], 'every lock is released');
    const metrics = await (await fetch(`http://127.0.0.1:${cluster.metricsPort}/metrics`)).text();
    assert.match(metrics, /envsnap_quiesce_pause_seconds_count\{environment="ha"\} 1/);
  });

  async function activityOf(backupId: string): Promise<string> {
    const list = await cluster.json<Array<{ id: string; backup_id: string | null }>>(['activity:list']);
    const a = list.find((x) => x.backup_id === backupId);
    assert.ok(a, `activity of ${backupId}`);
    return a.id;
  }

  it('a live backup runs no hooks, and it restores correctly', async () => {
    const before = (await hookLines()).length;
    const r = await cluster.cli(['backup:create', '-e', 'ha', '--live', '--yes']);
    assert.equal(r.code, 0, r.stderr);
    const id = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    assert.equal((await hookLines()).length, before, 'no quiesce or resume for --live');
    const b = await backup(id);
    assert.equal(b.live, true);
    const good = await mariadbFingerprint(maria, 'shop');
    await maria.query(
      "DELETE FROM items WHERE id = 1; UPDATE big SET pad = 'changed' WHERE id < 100;",
      'shop',
    );
    await pg.psql('DELETE FROM o WHERE id > 10', 'orders');
    const restored = await cluster.cli(['backup:restore', id, '--yes']);
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(restored.stderr, /running the post_restore hooks/);
    assert.deepEqual(
      (await hookLines()).filter((l) => l.phase === 'post_restore').map((l) => l.node),
      ['node-1'],
    );
    assert.deepEqual(await mariadbFingerprint(maria, 'shop'), good);
    assert.equal((await pg.psql('SELECT count(*) FROM o', 'orders')).trim(), '1000');
    // The data the restore replaced is kept until the next complete backup, which drops it.
    const preRestore = async () =>
      (await maria.query("SHOW DATABASES LIKE 'shop\\_\\_envsnap\\_pre\\_restore'")).trim();
    assert.equal(await preRestore(), 'shop__envsnap_pre_restore');
    const next = await cluster.cli(['backup:create', '-e', 'ha', '--live']);
    assert.equal(next.code, 0, next.stderr);
    await cluster.waitFor(async () => (await preRestore()) === '', 'the pre-restore copy to be dropped');
  });

  it('kill -9 of the holder mid-dump: its lease expires, another node takes over, no partial artifact remains, dumps never overlap', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'ha', '--live', '--no-wait']);
    assert.equal(r.code, 0, r.stderr);
    const id = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    await cluster.waitFor(
      async () => (await locks()).some((l) => l.key === 'ha/db' && l.holder === 'node-2'),
      'node-2 to hold the dump lock of ha/db',
    );
    const killedAt = Date.now();
    cluster.agents.get('node-2')!.child.kill('SIGKILL');
    const b = await waitBackupDone(id);
    assert.equal(b.status, 'complete', b.error ?? '');
    assert.deepEqual(
      b.artifacts.filter((a) => a.service === 'db').map((a) => a.node),
      ['node-3'],
    );
    // Stored under the new holder's attempt key; the dead holder's attempt and its upload in
    // progress (a temporary file named after its key) are gone.
    const manifest = JSON.parse(
      await readFile(path.join(cluster.repository, 'backups', id, 'manifest.json'), 'utf8'),
    ) as { artifacts: Array<{ service: string; key?: string }> };
    const dbDir = path.join(cluster.repository, 'backups', id, 'db');
    const stored = (await readdir(dbDir, { recursive: true, withFileTypes: true }))
      .filter((e) => e.isFile())
      .map((e) => path.relative(cluster.repository, path.join(e.parentPath, e.name)))
      .sort();
    assert.deepEqual(
      stored,
      manifest.artifacts.filter((a) => a.service === 'db').map((a) => a.key),
      'only the new holder artifact is stored',
    );
    const pending = (await readdir(path.join(cluster.repository, '.tmp'))).filter((n) =>
      n.startsWith(encodeURIComponent(`backups/${id}/`)),
    );
    assert.deepEqual(pending, [], 'no upload in progress is left');
    const intervals = (await dumpIntervals('db')).filter((i) => i.start >= killedAt - 30_000);
    const taker = intervals.find((i) => i.node === 'node-3');
    assert.ok(taker && taker.start >= killedAt, 'node-3 started after node-2 died');
    assertNoOverlap(await dumpIntervals('db'), killedAt);
    const log = await cluster.cli(['activity:log', await activityOf(id)]);
    assert.match(log.stdout + log.stderr, /dump reassigned to node-3/);
    await cluster.startAgent('node-2');
  });

  it('a holder frozen with SIGSTOP past its lease: the dump moves, and its late upload is rejected by fencing token', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'ha', '--live', '--no-wait']);
    assert.equal(r.code, 0, r.stderr);
    const id = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    let token = 0;
    await cluster.waitFor(async () => {
      const l = (await locks()).find((x) => x.key === 'ha/db' && x.holder === 'node-2');
      token = l?.fencing_token ?? 0;
      return Boolean(l);
    }, 'node-2 to hold the dump lock');
    const agent2 = cluster.agents.get('node-2')!.child;
    agent2.kill('SIGSTOP');
    try {
      const b = await waitBackupDone(id);
      assert.equal(b.status, 'complete', b.error ?? '');
      assert.deepEqual(
        b.artifacts.filter((a) => a.service === 'db').map((a) => a.node),
        ['node-3'],
      );
    } finally {
      agent2.kill('SIGCONT');
    }
    // node-2 wakes up, finds its upload refused, and never writes into the backup.
    await cluster.waitFor(
      async () => {
        const text = await readFile(path.join(cluster.dir, 'agent-node-2.log'), 'utf8');
        return text.includes(`fencing token ${token}`);
      },
      'node-2 to log the rejection of its stale upload',
      30_000,
    );
    const b = await backup(id);
    assert.equal(b.status, 'complete');
    // The recorded copies are node-3's attempt files (its fencing token in the key), complete: a
    // stale holder writes under its own token, never in place of them (its files, if any, are
    // orphans for repository:check --repair).
    const manifest = JSON.parse(
      await readFile(path.join(cluster.repository, 'backups', id, 'manifest.json'), 'utf8'),
    ) as { artifacts: Array<{ name: string; service: string; key?: string; sha256: string }> };
    const dbCopies = manifest.artifacts.filter((a) => a.service === 'db');
    assert.deepEqual(
      dbCopies.map((a) => a.name),
      b.artifacts.filter((a) => a.service === 'db').map((a) => a.name),
    );
    for (const a of dbCopies) {
      assert.ok(a.key && !a.key.includes(`/t${token}/`), a.key);
      const bytes = await readFile(path.join(cluster.repository, a.key));
      assert.equal(createHash('sha256').update(bytes).digest('hex'), a.sha256);
    }
    const ctl = await readFile(path.join(cluster.dir, 'controller.log'), 'utf8');
    assert.match(ctl, new RegExp(`fencing token ${token}`));
    await cluster.waitFor(
      async () =>
        (await cluster.json<Array<{ node_id: string; connected: boolean }>>(['agent:list'])).every(
          (a) => a.connected,
        ),
      'node-2 to reconnect',
    );
  });

  it('a failed quiesce resumes every node and fails the backup with the reason', async () => {
    await writeFile(hookLog, '');
    const since = Date.now();
    const r = await cluster.cli(['backup:create', '-e', 'ha-fail', '--yes']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /quiesce of ha-fail failed: node-3: .*exited 3: maintenance refused/);
    const lines = await hookLines();
    assert.deepEqual(
      lines
        .filter((l) => l.phase === 'resume')
        .map((l) => l.node)
        .sort(),
      NODES,
    );
    assert.deepEqual(await dumpIntervalsSince('db', since), [], 'nothing was dumped');
    assert.deepEqual(await locks(), []);
  });

  async function dumpIntervalsSince(service: string, since: number) {
    return (await dumpIntervals(service)).filter((i) => i.start >= since);
  }

  it('a failing dump tool fails the backup with its message, and every agent stays up', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'ha-bad', '--live']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /pg_dump exited with status 1: .*database "nosuch" does not exist/);
    const agents = await cluster.json<Array<{ node_id: string; connected: boolean }>>(['agent:list']);
    assert.deepEqual(
      agents.map((a) => [a.node_id, a.connected]),
      NODES.map((n) => [n, true]),
    );
    assert.deepEqual(await locks(), []);
  });

  it('concurrent db-dump calls: one runs, the others are refused naming the holder; the file is a gzip SQL dump', async () => {
    const dir = path.join(work, 'dumps');
    const runs = await Promise.all(
      [0, 1, 2].map(() => cluster.cli(['db-dump', '-e', 'ha', 'shop', '--dump-directory', dir, '--live'])),
    );
    const ok = runs.filter((r) => r.code === 0);
    const refused = runs.filter((r) => r.code !== 0);
    assert.equal(ok.length, 1, runs.map((r) => r.stderr).join('\n'));
    for (const r of refused) assert.match(r.stderr, /dump lock of ha\/db is held (for|by) node-2/);
    const [node, file] = ok[0]!.stdout.trim().split(':');
    assert.equal(node, 'node-2');
    assert.match(path.basename(file!), /^dump-shop-\d{10}\.sql\.gz$/);
    const tables = execFileSync('sh', ['-c', `gzip -dc ${file} | grep -o 'CREATE TABLE \`[a-z]*\`'`])
      .toString()
      .trim()
      .split('\n');
    assert.deepEqual(tables, ['CREATE TABLE `big`', 'CREATE TABLE `items`']);
    const unknown = await cluster.cli(['db-dump', '-e', 'ha', 'nosuchdb']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /database "nosuchdb" is not configured in environment ha/);
  });

  it('the controller killed mid-backup: the agent watchdog resumes the site, and after a restart the backup is failed with a reason and the lock is gone', async () => {
    await writeFile(hookLog, '');
    const r = await cluster.cli(['backup:create', '-e', 'ha-wd', '--no-wait']);
    assert.equal(r.code, 0, r.stderr);
    const id = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    await cluster.waitFor(
      async () => (await locks()).some((l) => l.key === 'ha-wd/db'),
      'the dump of ha-wd/db to start',
    );
    cluster.controller.child.kill('SIGKILL');
    await cluster.controller.exited;
    // max_pause is 4 s: every node's watchdog runs its resume hook by itself.
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if ((await hookLines()).filter((l) => l.phase === 'resume').length === 3) break;
      await sleep(250);
    }
    assert.deepEqual(
      (await hookLines())
        .filter((l) => l.phase === 'resume')
        .map((l) => l.node)
        .sort(),
      NODES,
    );
    await cluster.startController();
    for (const n of NODES) await cluster.startAgent(n).catch(() => undefined);
    const b = await backup(id);
    assert.equal(b.status, 'failed');
    assert.match(b.error ?? '', /controller stopped/);
    await cluster.waitFor(
      async () => (await locks()).length === 0,
      'the lease to expire after the restart',
      15_000,
    );
  });
});

/** Dump intervals of one service must not overlap; an interval without an end ended at `killedAt`. */
function assertNoOverlap(
  intervals: Array<{ node: string; start: number; end?: number }>,
  killedAt: number,
): void {
  const closed = intervals.map((i) => ({ ...i, end: i.end ?? killedAt }));
  for (let i = 1; i < closed.length; i++) {
    const prev = closed[i - 1]!;
    const cur = closed[i]!;
    assert.ok(
      cur.start >= prev.end,
      `dump on ${cur.node} started at ${cur.start} before the dump on ${prev.node} ended at ${prev.end}`,
    );
  }
}
