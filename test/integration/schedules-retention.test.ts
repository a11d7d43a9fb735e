/**
 * Schedules and retention for real: the controller and an agent as
 * processes, node-cron firing seconds-level specs, pruning after each backup,
 * a controller killed with SIGKILL and restarted (catch-up and missed runs), a
 * prune killed between deleting the artifacts and deleting the catalog entry
 * (failpoint), overlapping runs skipped, the manual backup limit and the
 * restorable window.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { EnvsnapCluster, type EnvironmentYaml } from '../helpers/envsnap.js';

interface BackupJson {
  id: string;
  environment: string;
  created: string;
  status: string;
  restorable: boolean;
  tag: string;
}

interface ScheduleJson {
  environment: string;
  cron: string;
  next_runs: string[];
  last_run: string | null;
  last_result: string | null;
  last_backup_id: string | null;
  last_error: string | null;
}

interface PruneJson {
  id: string;
  environment: string;
  tag: string;
  action: string;
  reasons: string[];
}

/** A small mount: a few files, so that a backup takes well under a second. */
async function smallTree(dir: string): Promise<string> {
  await mkdir(path.join(dir, 'sub'), { recursive: true });
  await writeFile(path.join(dir, 'a.txt'), 'alpha\n');
  await writeFile(path.join(dir, 'sub', 'b.bin'), Buffer.alloc(64 * 1024, 7));
  return dir;
}

function mountEnv(name: string, mountPath: string, extra: Record<string, unknown>): EnvironmentYaml {
  return { name, mounts: [{ name: 'files', node: 'node-1', path: mountPath }], ...extra };
}

async function backups(c: EnvsnapCluster, env: string): Promise<BackupJson[]> {
  return c.json<BackupJson[]>(['backup:list', '-e', env]);
}

/** Metric value from the controller's /metrics, 0 when the series is absent. */
async function metric(c: EnvsnapCluster, series: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${c.metricsPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.split(' ')[1]) : 0;
}

async function storedBackupIds(c: EnvsnapCluster): Promise<string[]> {
  const dir = path.join(c.repository, 'backups');
  return existsSync(dir) ? (await readdir(dir)).sort() : [];
}

describe('schedules and retention (real processes)', function () {
  this.timeout(240_000);
  let work: string;
  let cluster: EnvsnapCluster | undefined;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'envsnap-sched-'));
  });
  afterEach(async () => {
    await cluster?.stop();
    cluster = undefined;
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('a seconds-level schedule fires, prunes to keep_last after each backup, and schedule:list reports it', async () => {
    const tree = await smallTree(path.join(work, 'fire'));
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [
        mountEnv('app', tree, {
          schedules: [{ cron: '*/2 * * * * *', timezone: 'Europe/Berlin' }],
          retention: { automated: { keep_last: 2 } },
        }),
      ],
    });
    const c = cluster;
    await c.waitFor(
      async () => (await metric(c, 'envsnap_backups_pruned_total{environment="app"}')) >= 2,
      'two automated backups to be pruned',
      60_000,
    );
    const list = await backups(c, 'app');
    const complete = list.filter((b) => b.status === 'complete');
    assert.ok(complete.length <= 3, `keep_last 2 (plus one finishing) but ${complete.length} complete`);
    assert.ok(complete.every((b) => b.tag === 'automated'));
    assert.ok(complete.every((b) => b.restorable));

    // Stop the schedule from racing the dry run: what the catalog knows is exactly what storage holds.
    const dry = await c.json<PruneJson[]>(['backup:prune', '-e', 'app', '--dry-run']);
    for (const d of dry.filter((x) => x.action === 'keep')) {
      assert.ok(d.reasons.length > 0, `survivor ${d.id} names the rule that keeps it`);
    }
    assert.ok(
      dry.some((d) => d.reasons.some((r) => r.startsWith('last #'))),
      JSON.stringify(dry),
    );

    const [sched] = await c.json<ScheduleJson[]>(['schedule:list', '-e', 'app']);
    assert.ok(sched);
    assert.equal(sched.cron, '*/2 * * * * *');
    assert.equal(sched.next_runs.length, 3);
    assert.ok(sched.last_run, 'last run recorded');
    assert.match(sched.last_result ?? '', /^(started|complete)$/);

    const table = await c.cli(['schedule:list']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /\*\/2 \* \* \* \* \* \(Europe\/Berlin\)/);

    // Nothing in storage the catalog does not know about (in-flight backups aside).
    const known = new Set((await backups(c, 'app')).map((b) => b.id));
    const stored = await storedBackupIds(c);
    const unknown = stored.filter((id) => !known.has(id));
    assert.ok(unknown.length <= 1, `objects without catalog entries: ${unknown.join(', ')}`);
  });

  it('on the advanced preset, automated backups accumulate and are pruned by its rules; backup:list shows which are restorable', async () => {
    const tree = await smallTree(path.join(work, 'advanced'));
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [
        mountEnv('adv', tree, {
          schedules: [{ cron: '*/2 * * * * *' }],
          retention: { preset: 'advanced', restorable_days: 7 },
        }),
      ],
    });
    const c = cluster;
    for (let i = 0; i < 5; i++) {
      const r = await c.cli(['backup:create', '-e', 'adv']);
      assert.equal(r.code, 0, r.stderr);
    }
    await c.waitFor(
      async () => (await metric(c, 'envsnap_backups_pruned_total{environment="adv"}')) >= 3,
      'automated backups to accumulate and be pruned',
      60_000,
    );
    const dry = await c.json<PruneJson[]>(['backup:prune', '-e', 'adv', '--dry-run']);
    const kept = dry.filter((d) => d.action === 'keep');
    // advanced: manual keep_last 4; automated daily 6 + weekly 4 + monthly 11, and all of today's
    // automated backups share one day, week and month: the newest one stands for all three.
    assert.equal(kept.filter((d) => d.tag === 'manual').length, 4, JSON.stringify(dry));
    const auto = kept.filter(
      (d) => d.tag === 'automated' && !d.reasons.some((r) => r.startsWith('not finished')),
    );
    assert.equal(auto.length, 1, JSON.stringify(dry));
    assert.ok(
      auto[0]!.reasons.some((r) => r.startsWith('daily ')),
      JSON.stringify(auto),
    );
    assert.ok(
      auto[0]!.reasons.some((r) => r.startsWith('monthly ')),
      JSON.stringify(auto),
    );
    const table = await c.cli(['backup:list', '-e', 'adv']);
    assert.match(table.stdout, /Restorable/);
    const list = await backups(c, 'adv');
    assert.ok(list.filter((b) => b.status === 'complete').every((b) => b.restorable));
  });

  it('skips a run while the previous backup of the environment still runs, and counts it', async () => {
    // A mount big enough that one backup outlasts the one-second spec.
    const tree = path.join(work, 'slow');
    await mkdir(tree, { recursive: true });
    const { spawnSync } = await import('node:child_process');
    const r = spawnSync('head', ['-c', String(400 * 1024 * 1024), '/dev/urandom'], {
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 512 * 1024 * 1024,
    });
    await writeFile(path.join(tree, 'random.bin'), r.stdout);
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [mountEnv('slow', tree, { schedules: [{ cron: '* * * * * *' }] })],
    });
    const c = cluster;
    await c.waitFor(
      async () => (await metric(c, 'envsnap_schedule_runs_total{environment="slow",result="skipped"}')) >= 1,
      'a skipped run',
      60_000,
    );
    const log = await c.logs();
    assert.match(log, /scheduled backup skipped: a backup is still running/);
    const running = (await backups(c, 'slow')).filter(
      (b) => b.status === 'in_progress' || b.status === 'pending',
    );
    assert.ok(running.length <= 1, `overlapping backups: ${running.map((b) => b.id).join(', ')}`);
  });

  it('after kill -9 and restart, a run missed within catch_up runs once at start-up; an older one is recorded as missed', async () => {
    const tree = await smallTree(path.join(work, 'catch'));
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [
        mountEnv('cu', tree, { schedules: [{ cron: '*/10 * * * * *' }], catch_up: 3600 }),
        mountEnv('late', tree, { schedules: [{ cron: '*/10 * * * * *' }], catch_up: 0 }),
      ],
    });
    const c = cluster;
    // Let both schedules run once, so that the catalog holds their last scheduled time.
    await c.waitFor(
      async () => (await backups(c, 'cu')).some((b) => b.status === 'complete'),
      'a first scheduled backup',
      30_000,
    );
    await c.waitFor(
      async () => (await backups(c, 'late')).some((b) => b.status === 'complete'),
      'a first scheduled backup of late',
      30_000,
    );
    c.controller.child.kill('SIGKILL');
    await c.controller.exited;
    await sleep(12_000); // at least one */10 slot passes while the controller is down
    const restartedAt = Date.now();
    await c.startController();
    await c.waitFor(
      async () => (await c.logs()).includes('catching up a run missed while the controller was down'),
      'the catch-up run',
      30_000,
    );
    await c.waitFor(
      async () =>
        (await backups(c, 'cu')).some(
          (b) => b.status === 'complete' && Date.parse(b.created) >= restartedAt - 1000,
        ),
      'the caught-up backup to complete',
      90_000,
    );
    // catch_up 0: the missed run of 'late' is recorded, not run.
    const logs = await c.logs();
    assert.match(logs, /"environment":"late"[^\n]*scheduled run missed \(older than catch_up\)/);
    assert.ok((await metric(c, 'envsnap_schedule_runs_total{environment="late",result="missed"}')) === 1);
    const caughtUp = (await backups(c, 'cu')).filter((b) => Date.parse(b.created) >= restartedAt - 1000);
    assert.ok(caughtUp.length >= 1);
    // Any 'late' backup since the restart comes from a regular slot, never from a catch-up at
    // start-up. (Read from the log, not from the backups' times: under load a regular slot's
    // backup can be created seconds after its slot.)
    assert.doesNotMatch(logs, /"environment":"late"[^\n]*catching up a run missed/);
  });

  it('a prune killed between deleting the artifacts and the catalog entry is finished by the next prune', async () => {
    const tree = await smallTree(path.join(work, 'prune'));
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [mountEnv('pr', tree, { type: 'production' })],
    });
    const c = cluster;
    for (let i = 0; i < 2; i++) {
      const r = await c.cli(['backup:create', '-e', 'pr', '--yes']);
      assert.equal(r.code, 0, r.stderr);
    }
    const [newest, oldest] = await backups(c, 'pr');
    assert.ok(newest && oldest);

    // Restart with the failpoint armed and a keep_last 1 rule: the prune dies mid-way.
    await c.stop(true);
    const cfgFile = c.configFile('controller');
    const { parse } = await import('yaml');
    const { readFile } = await import('node:fs/promises');
    const cfg = parse(await readFile(cfgFile, 'utf8')) as { environments: EnvironmentYaml[] };
    cfg.environments[0]!.retention = { manual: { keep_last: 1 } };
    await writeFile(cfgFile, stringify(cfg));
    await c.startController({ ENVSNAP_FAILPOINTS: 'prune.after-delete-artifacts' });
    const died = await c.cli(['backup:prune', '-e', 'pr']);
    assert.notEqual(died.code, 0, 'the controller died in the middle of the prune');
    const exit = await c.controller.exited;
    assert.equal(exit.signal, 'SIGKILL');
    assert.ok(!(await storedBackupIds(c)).includes(oldest.id), 'artifacts were deleted before the crash');

    await c.startController();
    await c.startAgent('node-1');
    const mid = await backups(c, 'pr');
    const entry = mid.find((b) => b.id === oldest.id);
    assert.equal(entry?.status, 'expiring', 'the crash left the entry marked expiring');
    assert.equal(entry.restorable, false);
    const restore = await c.cli(['backup:restore', oldest.id, '--yes']);
    assert.notEqual(restore.code, 0, 'an expiring backup cannot be restored');

    const dry = await c.json<PruneJson[]>(['backup:prune', '-e', 'pr', '--dry-run']);
    assert.deepEqual(
      dry.find((d) => d.id === oldest.id),
      {
        id: oldest.id,
        environment: 'pr',
        created: oldest.created,
        tag: 'manual',
        action: 'would delete',
        reasons: ['interrupted deletion'],
        locations: [],
      },
    );
    const done = await c.cli(['backup:prune', '-e', 'pr']);
    assert.equal(done.code, 0, done.stderr);
    const after = await backups(c, 'pr');
    assert.deepEqual(
      after.map((b) => b.id),
      [newest.id],
    );
    assert.deepEqual(await storedBackupIds(c), [newest.id]);
  });

  it('limits manual backups of a non-production environment, rotates with --replace-oldest, deletes, and honours the restorable window', async () => {
    const tree = await smallTree(path.join(work, 'manual'));
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [
        mountEnv('dev', tree, { type: 'development' }),
        mountEnv('win', tree, { retention: { restorable_days: 3 / 86400 } }),
      ],
    });
    const c = cluster;
    for (let i = 0; i < 2; i++) {
      const r = await c.cli(['backup:create', '-e', 'dev']);
      assert.equal(r.code, 0, r.stderr);
    }
    const two = await backups(c, 'dev');
    const oldest = two[two.length - 1]!;
    const refused = await c.cli(['backup:create', '-e', 'dev']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /the limit for development environments is 2/);
    assert.ok(refused.stderr.includes(oldest.id), refused.stderr);
    assert.match(refused.stderr, /--replace-oldest/);
    assert.equal((await backups(c, 'dev')).length, 2, 'a refused backup leaves nothing behind');

    const rotated = await c.cli(['backup:create', '-e', 'dev', '--replace-oldest']);
    assert.equal(rotated.code, 0, rotated.stderr);
    const afterRotate = await backups(c, 'dev');
    assert.equal(afterRotate.length, 2);
    assert.ok(!afterRotate.some((b) => b.id === oldest.id), 'the oldest was replaced');
    assert.ok(!(await storedBackupIds(c)).includes(oldest.id));

    const del = await c.cli(['backup:delete', afterRotate[1]!.id]);
    assert.equal(del.code, 1, 'without a terminal and without --yes nothing is deleted');
    assert.match(del.stderr, /refusing to delete without confirmation/);
    const yes = await c.cli(['backup:delete', afterRotate[1]!.id, '--yes']);
    assert.equal(yes.code, 0, yes.stderr);
    assert.equal((await backups(c, 'dev')).length, 1);
    const gone = await c.cli(['backup:get', afterRotate[1]!.id]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /not found/);

    // Restorable window of three seconds.
    const w = await c.cli(['backup:create', '-e', 'win']);
    assert.equal(w.code, 0, w.stderr);
    const [wb] = await backups(c, 'win');
    assert.ok(wb);
    assert.equal(wb.restorable, true);
    await sleep(Math.max(0, Date.parse(wb.created) + 3500 - Date.now()));
    const [old] = await backups(c, 'win');
    assert.equal(old?.restorable, false);
    const get = await c.cli(['backup:get', wb.id]);
    assert.match(get.stdout, /Restorable:\s+false/);
    const r = await c.cli(['backup:restore', wb.id, '--yes']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /older than the restorable window/);
  });
});
