/**
 * Verification for real: a controller and an agent as processes, a mount-only
 * environment (no database servers), backups in the local repository. An
 * artifact is corrupted (one byte) and deleted on disk behind envsnap's back;
 * `backup:verify` finds it, the backup stops being restorable (also across a
 * controller restart) and a restore is refused, and a later verify that passes
 * lifts it. `repository:check` finds orphans and broken backups and `--repair`
 * deletes the orphans and marks the broken backups. The metrics are read from
 * /metrics, and the scheduled verification (`verify_schedule`) runs by itself.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { EnvsnapCluster, type CliResult } from '../helpers/envsnap.js';
import { requireBinary } from '../helpers/servers.js';

const ENV = 'app';

interface BackupJson {
  id: string;
  status: string;
  restorable: boolean;
}

interface VerificationJson {
  backup_id: string;
  environment: string;
  result: string;
  restorable: boolean;
  locations: Array<{
    location: string;
    result: string;
    detail: string;
    conclusive_result: string | null;
    objects: Array<{ name: string; status: string; detail: string | null }>;
  }>;
}

interface BackupGetJson {
  id: string;
  restorable: boolean;
  artifacts: Array<{ name: string; size_bytes: number }>;
  verification: null | {
    result: string;
    locations: Array<{ location: string; result: string; detail: string }>;
  };
}

interface CheckJson {
  repair: boolean;
  locations: Array<{ location: string; objects: number; backups: number }>;
  issues: Array<{ location: string; kind: string; backup_id: string; key: string; action: string | null }>;
}

function shown(r: CliResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

/** A small mount: a few files, so that a backup takes well under a second. */
async function smallTree(dir: string): Promise<string> {
  await mkdir(path.join(dir, 'sub'), { recursive: true });
  await writeFile(path.join(dir, 'a.txt'), 'verify me\n');
  await writeFile(path.join(dir, 'sub', 'b.bin'), Buffer.alloc(128 * 1024, 9));
  return dir;
}

async function backup(c: EnvsnapCluster): Promise<string> {
  const r = await c.cli(['backup:create', '-e', ENV, '--yes']);
  assert.equal(r.code, 0, shown(r));
  const m = /^Backup ID: ([0-9a-f]{20})$/m.exec(r.stdout);
  assert.ok(m, shown(r));
  return m[1]!;
}

/** Runs the CLI with --format json and parses stdout whatever the exit code; returns both. */
async function jsonRun<T>(c: EnvsnapCluster, args: string[]): Promise<{ r: CliResult; out: T }> {
  const r = await c.cli([...args, '--format', 'json']);
  let out: T;
  try {
    out = JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`envsnap ${args.join(' ')}: no JSON on stdout\n${shown(r)}`);
  }
  return { r, out };
}

async function restorable(c: EnvsnapCluster, id: string): Promise<boolean> {
  const list = await c.json<BackupJson[]>(['backup:list', '-e', ENV]);
  const b = list.find((x) => x.id === id);
  assert.ok(b, `backup ${id} not in backup:list`);
  return b.restorable;
}

/** The controller's /metrics lines that start with `name`. */
async function metricLines(c: EnvsnapCluster, name: string): Promise<string[]> {
  const text = await (await fetch(`http://127.0.0.1:${c.metricsPort}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith(name));
}

async function metric(c: EnvsnapCluster, series: string): Promise<number> {
  const line = (await metricLines(c, series + ' '))[0];
  return line ? Number(line.split(' ')[1]) : 0;
}

describe('backup:verify and repository:check (real processes)', function () {
  this.timeout(300_000);
  let work: string;
  let cluster: EnvsnapCluster | undefined;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'envsnap-verify-'));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  describe('one controller, corrupted and deleted artifacts, orphans', () => {
    let c: EnvsnapCluster;
    let good = '';
    let bad = '';
    let artifactFile = '';
    let original: Buffer;

    before(async () => {
      const tree = await smallTree(path.join(work, 'tree'));
      cluster = await EnvsnapCluster.start({
        nodes: ['node-1'],
        environments: [{ name: ENV, mounts: [{ name: 'files', node: 'node-1', path: tree }] }],
        // The periodic prune also removes orphan backup directories: keep it out of this test.
        controller: { prune_schedule: '0 0 1 1 *' },
      });
      c = cluster;
      good = await backup(c);
      bad = await backup(c);
      const b = await c.json<BackupGetJson>(['backup:get', bad]);
      assert.equal(b.artifacts.length, 1);
      artifactFile = path.join(c.repository, 'backups', bad, ...b.artifacts[0]!.name.split('/'));
      original = await readFile(artifactFile);
    });
    after(async () => {
      await cluster?.stop();
      cluster = undefined;
    });

    it('verify passes on a good backup, and backup:get shows it', async () => {
      const { r, out } = await jsonRun<VerificationJson>(c, ['backup:verify', good]);
      assert.equal(r.code, 0, shown(r));
      assert.equal(out.backup_id, good);
      assert.equal(out.result, 'ok');
      assert.equal(out.restorable, true);
      assert.equal(out.locations.length, 1);
      const loc = out.locations[0]!;
      assert.equal(loc.location, 'local');
      assert.equal(loc.result, 'ok');
      assert.deepEqual(
        loc.objects.map((o) => o.status),
        loc.objects.map(() => 'ok'),
      );
      assert.ok(loc.objects.some((o) => o.name === 'manifest.json'));
      const got = await c.json<BackupGetJson>(['backup:get', good]);
      assert.equal(got.verification?.result, 'ok');
      assert.equal(got.verification?.locations[0]?.location, 'local');
      const table = await c.cli(['backup:get', good]);
      assert.match(table.stdout, /^Verified: +ok in local at /m, shown(table));
      const never = await c.cli(['backup:get', bad]);
      assert.match(never.stdout, /^Verified: +never$/m, shown(never));
    });

    it('one corrupted byte: checksum mismatch, not restorable, restore refused', async () => {
      const corrupt = Buffer.from(original);
      const at = Math.floor(corrupt.length / 2);
      corrupt[at] = corrupt[at]! ^ 0xff;
      await writeFile(artifactFile, corrupt);
      assert.equal(await restorable(c, bad), true, 'restorable until a verification says otherwise');

      const { r, out } = await jsonRun<VerificationJson>(c, ['backup:verify', bad]);
      assert.equal(r.code, 1, shown(r));
      assert.equal(out.result, 'failed');
      assert.equal(out.restorable, false);
      const objects = out.locations[0]!.objects;
      const art = objects.find((o) => o.name !== 'manifest.json')!;
      assert.equal(art.status, 'checksum_mismatch', JSON.stringify(objects));
      assert.equal(objects.find((o) => o.name === 'manifest.json')?.status, 'ok');

      const table = await c.cli(['backup:verify', bad]);
      assert.equal(table.code, 1);
      assert.match(table.stdout, /checksum_mismatch/);

      assert.equal(await restorable(c, bad), false);
      assert.equal(await restorable(c, good), true);
      const restore = await c.cli(['backup:restore', bad, '--yes']);
      assert.equal(restore.code, 1, shown(restore));
      assert.match(restore.stderr, new RegExp(`backup ${bad} is not restorable: its verification failed`));
      assert.match(restore.stderr, /checksum mismatch/);
      assert.match(restore.stderr, /backup:verify/);
    });

    it('the failed verification survives a controller restart', async () => {
      c.controller.child.kill('SIGTERM');
      assert.equal((await c.controller.exited).code, 0);
      await c.startController();
      await c.waitFor(async () => {
        const r = await c.cli(['agent:list', '--format', 'json']);
        return (JSON.parse(r.stdout) as Array<{ connected: boolean }>).every((a) => a.connected);
      }, 'the agent to reconnect');
      assert.equal(await restorable(c, bad), false);
      const got = await c.json<BackupGetJson>(['backup:get', bad]);
      assert.equal(got.verification?.result, 'failed');
      // Counted from the catalog at start-up, not only when a verification runs.
      assert.equal(await metric(c, `envsnap_backups_failing_verification{environment="${ENV}"}`), 1);
    });

    it('a later verify that passes makes it restorable again', async () => {
      await writeFile(artifactFile, original);
      const { r, out } = await jsonRun<VerificationJson>(c, ['backup:verify', bad]);
      assert.equal(r.code, 0, shown(r));
      assert.equal(out.result, 'ok');
      assert.equal(out.restorable, true);
      assert.equal(await restorable(c, bad), true);
    });

    it('a deleted artifact is reported missing; --all -e reports each backup', async () => {
      await unlink(artifactFile);
      const { r, out } = await jsonRun<VerificationJson[]>(c, ['backup:verify', '--all', '-e', ENV]);
      assert.equal(r.code, 1, shown(r));
      const byId = new Map(out.map((v) => [v.backup_id, v]));
      assert.equal(byId.get(good)?.result, 'ok');
      assert.equal(byId.get(bad)?.result, 'failed');
      const art = byId.get(bad)!.locations[0]!.objects.find((o) => o.name !== 'manifest.json')!;
      assert.equal(art.status, 'missing');
      assert.equal(await restorable(c, bad), false);
      assert.match(r.stderr, /2 backups verified: 1 ok, 1 not ok/);
    });

    it('refuses a bad invocation with a clear message', async () => {
      const neither = await c.cli(['backup:verify']);
      assert.equal(neither.code, 1);
      assert.match(neither.stderr, /name one backup ID or --all/);
      const loc = await c.cli(['backup:verify', good, '--location', 'offsite']);
      assert.equal(loc.code, 1);
      assert.match(loc.stderr, /storage location "offsite" is not configured/);
      const env = await c.cli(['backup:verify', '--all', '-e', 'nope']);
      assert.equal(env.code, 1);
      assert.match(env.stderr, /environment "nope" not found/);
    });

    it('repository:check finds orphans and broken backups; --repair deletes the orphans and marks the broken', async () => {
      // A third backup, broken behind envsnap's back and never verified: still "restorable".
      const third = await backup(c);
      const t = await c.json<BackupGetJson>(['backup:get', third]);
      await writeFile(path.join(c.repository, 'backups', third, ...t.artifacts[0]!.name.split('/')), 'short');
      assert.equal(await restorable(c, third), true);
      // Orphans: a directory of a backup id the catalog does not know, and a stray object in a known backup.
      const orphanDir = path.join(c.repository, 'backups', 'ffffffffffffffffffff');
      await mkdir(path.join(orphanDir, 'files'), { recursive: true });
      await writeFile(path.join(orphanDir, 'files', 'left-over.tar.zst'), 'crash leftovers');
      await writeFile(path.join(orphanDir, 'manifest.json'), '{}');
      const stray = path.join(c.repository, 'backups', good, 'stray.bin');
      await writeFile(stray, 'not an artifact');

      const check = await jsonRun<CheckJson>(c, ['repository:check']);
      assert.equal(check.r.code, 1, shown(check.r));
      const issues = check.out.issues;
      const summary = issues.map((i) => `${i.kind} ${i.key}`).sort();
      assert.deepEqual(
        summary,
        [
          `missing backups/${bad}/${t.artifacts[0]!.name}`,
          'orphan backups/ffffffffffffffffffff/files/left-over.tar.zst',
          'orphan backups/ffffffffffffffffffff/manifest.json',
          `orphan backups/${good}/stray.bin`,
          `size_mismatch backups/${third}/${t.artifacts[0]!.name}`,
        ].sort(),
      );
      assert.ok(issues.every((i) => i.action === null && i.location === 'local'));
      assert.equal(check.out.locations[0]?.location, 'local');
      assert.ok(existsSync(orphanDir) && existsSync(stray), 'nothing is deleted without --repair');
      assert.equal(await restorable(c, third), true, 'nothing is marked without --repair');
      const table = await c.cli(['repository:check']);
      assert.match(table.stderr, /3 orphan objects, 2 broken backups; run with --repair/);

      const repair = await jsonRun<CheckJson>(c, ['repository:check', '--repair']);
      assert.equal(repair.r.code, 0, shown(repair.r));
      assert.equal(repair.out.repair, true);
      for (const i of repair.out.issues) {
        assert.equal(i.action, i.kind === 'orphan' ? 'deleted' : 'marked not restorable', JSON.stringify(i));
      }
      assert.equal(existsSync(orphanDir), false, 'the orphan directory is gone');
      assert.equal(existsSync(stray), false, 'the stray object is gone');
      assert.equal(await restorable(c, third), false, 'the broken backup is marked');
      assert.equal(await restorable(c, good), true);
      const got = await c.json<BackupGetJson>(['backup:get', third]);
      assert.equal(got.verification?.result, 'failed');
      assert.match(got.verification?.locations[0]?.detail ?? '', /size mismatch/);

      // What is left is only the broken backups' missing data: no orphan any more.
      const again = await jsonRun<CheckJson>(c, ['repository:check']);
      assert.deepEqual(again.out.issues.map((i) => i.kind).sort(), ['missing', 'size_mismatch']);
      // The good backup's objects were not touched by the repair.
      const verify = await c.cli(['backup:verify', good]);
      assert.equal(verify.code, 0, shown(verify));
    });

    it('the verification metrics are on /metrics, with bounded labels', async () => {
      const ok = `envsnap_verifications_total{environment="${ENV}",location="local",result="ok"}`;
      const failed = `envsnap_verifications_total{environment="${ENV}",location="local",result="failed"}`;
      // Since the restart: the passing verify, --all (1 ok, 1 failed), the repair (2 failed), the good one again.
      assert.equal(await metric(c, ok), 3);
      assert.equal(await metric(c, failed), 3);
      const last = await metricLines(c, 'envsnap_last_verification_timestamp_seconds{');
      assert.ok(last.length >= 2, last.join('\n'));
      for (const l of last) {
        const t = Number(l.split(' ')[1]);
        assert.ok(Math.abs(t - Date.now() / 1000) < 600, l);
      }
      assert.equal(await metric(c, `envsnap_backups_failing_verification{environment="${ENV}"}`), 2);
      const all = (await metricLines(c, 'envsnap_')).join('\n');
      assert.ok(!new RegExp(good).test(all), 'no backup id in any label');
      // promtool's lint, with every verification series present.
      const promtool = await requireBinary('promtool', 'prometheus');
      const text = await (await fetch(`http://127.0.0.1:${c.metricsPort}/metrics`)).text();
      const lint = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
      const findings = `${lint.stdout}\n${lint.stderr}`.split('\n').filter((l) => /verif/.test(l));
      assert.deepEqual(findings, [], findings.join('\n'));

      // Deleting a failing backup takes it out of the gauge.
      const del = await c.cli(['backup:delete', bad, '--yes']);
      assert.equal(del.code, 0, shown(del));
      assert.equal(await metric(c, `envsnap_backups_failing_verification{environment="${ENV}"}`), 1);
    });
  });

  describe('verify_schedule', () => {
    after(async () => {
      await cluster?.stop();
      cluster = undefined;
    });

    it('verifies every complete backup on its schedule, without a CLI call', async () => {
      const tree = await smallTree(path.join(work, 'tree-sched'));
      cluster = await EnvsnapCluster.start({
        nodes: ['node-1'],
        environments: [{ name: ENV, mounts: [{ name: 'files', node: 'node-1', path: tree }] }],
        controller: { verify_schedule: '*/2 * * * * *' },
      });
      const c = cluster;
      const id = await backup(c);
      const ok = `envsnap_verifications_total{environment="${ENV}",location="local",result="ok"}`;
      await c.waitFor(async () => (await metric(c, ok)) >= 1, 'a scheduled verification', 60_000);
      const got = await c.json<BackupGetJson>(['backup:get', id]);
      assert.equal(got.verification?.result, 'ok');
      assert.match(await c.logs(), /scheduled verification finished/);
    });
  });
});
