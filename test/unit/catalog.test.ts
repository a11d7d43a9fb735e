import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CATALOG_FORMAT, Catalog, type BackupRecord } from '../../controller/catalog.js';
import { NotFoundError } from '../../shared/errors.js';
import { newId } from '../../shared/ids.js';
import { completeBackupRecord } from '../helpers/catalog-records.js';

describe('catalog', () => {
  let dir: string;
  let catalog: Catalog;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'envsnap-catalog-'));
    catalog = await Catalog.open(dir);
  });
  afterEach(async () => {
    await catalog.close();
    await catalog.close(); // safe twice
    await rm(dir, { recursive: true, force: true });
  });

  it('lists backups newest first, per environment', async () => {
    const t = Date.UTC(2026, 0, 1);
    await catalog.putBackup(completeBackupRecord('main', t + 1000));
    await catalog.putBackup(completeBackupRecord('staging', t + 2000));
    await catalog.putBackup(completeBackupRecord('main', t + 3000));
    const main = await catalog.listBackups('main');
    assert.deepEqual(
      main.map((b) => b.created),
      [new Date(t + 3000).toISOString(), new Date(t + 1000).toISOString()],
    );
    assert.equal((await catalog.listBackups()).length, 3);
  });

  it('raises NotFoundError for unknown ids', async () => {
    await assert.rejects(catalog.getBackup('0'.repeat(20)), NotFoundError);
    await assert.rejects(catalog.getActivity('0'.repeat(20)), NotFoundError);
  });

  it('keeps activity logs in order and survives a reopen', async () => {
    const id = newId();
    await catalog.putActivity({
      id,
      type: 'backup.create',
      environment: 'main',
      state: 'complete',
      created: '',
      backupId: '',
      description: '',
    });
    for (let i = 0; i < 20; i++)
      await catalog.appendLog(id, { time: '', level: 'info', message: `line ${i}` });
    await catalog.close();
    catalog = await Catalog.open(dir);
    const lines = await catalog.readLog(id);
    assert.deepEqual(
      lines.map((l) => l.message),
      Array.from({ length: 20 }, (_, i) => `line ${i}`),
    );
    assert.equal((await catalog.getActivity(id)).state, 'complete');
  });

  it('keeps a verification per backup and deletes it with the backup', async () => {
    const b = completeBackupRecord('main', Date.UTC(2026, 0, 2));
    await catalog.putBackup(b);
    const time = new Date().toISOString();
    await catalog.putVerification({
      backupId: b.id,
      environment: 'main',
      time,
      source: 'verify',
      locations: [{ location: 'local', result: 'failed', time, detail: 'x: missing', objects: [] }],
    });
    assert.equal((await catalog.getVerification(b.id))?.locations[0]?.result, 'failed');
    assert.equal((await catalog.listVerifications()).length, 1);
    await catalog.deleteBackup(b.id);
    await assert.rejects(catalog.getBackup(b.id), NotFoundError);
    assert.equal(await catalog.getVerification(b.id), undefined);
    assert.deepEqual(await catalog.listVerifications(), []);
  });

  it('pages one environment through its index, newest first, with the count of the rest', async () => {
    const t = Date.UTC(2026, 0, 1);
    const main: BackupRecord[] = [];
    for (let i = 0; i < 7; i++) {
      const b = completeBackupRecord('main', t + i * 1000);
      main.push(b);
      await catalog.putBackup(b);
      await catalog.putBackup(completeBackupRecord('main-2', t + i * 1000 + 1)); // a name that extends "main"
    }
    const newest = main.map((b) => b.id).reverse();
    const first = await catalog.listBackupsPage({ environment: 'main', limit: 3 });
    assert.deepEqual(
      first.backups.map((b) => b.id),
      newest.slice(0, 3),
    );
    assert.equal(first.more, 4);
    const second = await catalog.listBackupsPage({ environment: 'main', limit: 3, before: newest[2]! });
    assert.deepEqual(
      second.backups.map((b) => b.id),
      newest.slice(3, 6),
    );
    assert.equal(second.more, 1);
    const all = await catalog.listBackupsPage({ environment: 'main', limit: Infinity });
    assert.equal(all.backups.length, 7);
    assert.equal(all.more, 0);
    const everyEnv = await catalog.listBackupsPage({ limit: 5 });
    assert.equal(everyEnv.backups.length, 5);
    assert.equal(everyEnv.more, 9);

    // Deleting removes the index key in the same batch.
    await catalog.deleteBackup(newest[0]!);
    const after = await catalog.listBackupsPage({ environment: 'main', limit: 1 });
    assert.deepEqual(
      after.backups.map((b) => b.id),
      [newest[1]],
    );
    assert.equal(after.more, 5);
    assert.equal((await catalog.listBackups('main')).length, 6);
    assert.equal((await catalog.listBackups('nope')).length, 0);
  });

  it('keeps an index of the backups with a replica copy to make, in the same batch as the record', async () => {
    const t = Date.UTC(2026, 0, 1);
    const done = {
      ...completeBackupRecord('main', t),
      replicas: { offsite: { status: 'complete' as const, attempts: 0 } },
    };
    const failed = {
      ...completeBackupRecord('main', t + 1000),
      replicas: { offsite: { status: 'failed' as const, attempts: 1 } },
    };
    const other = {
      ...completeBackupRecord('staging', t + 2000),
      replicas: { offsite: { status: 'failed' as const, attempts: 0 } },
    };
    const running = {
      ...completeBackupRecord('main', t + 3000),
      status: 'in_progress' as const,
      replicas: { offsite: { status: 'failed' as const, attempts: 0 } },
    };
    for (const b of [done, failed, other, running, completeBackupRecord('main', t + 4000)])
      await catalog.putBackup(b);
    assert.deepEqual(
      (await catalog.listUnderReplicated()).map((b) => b.id),
      [failed.id, other.id],
    );
    assert.deepEqual(
      [...(await catalog.countUnderReplicated())],
      [
        ['main', 1],
        ['staging', 1],
      ],
    );
    // Copied: out of the index. Pruned by retention on purpose: out too. Deleted: out.
    await catalog.putBackup({ ...failed, replicas: { offsite: { status: 'complete', attempts: 2 } } });
    await catalog.putBackup({
      ...other,
      pruned: { offsite: { time: new Date(t).toISOString(), reason: 'keep_last 1' } },
    });
    assert.deepEqual(await catalog.listUnderReplicated(), []);
    await catalog.putBackup(failed);
    await catalog.deleteBackup(failed.id);
    assert.deepEqual(await catalog.listUnderReplicated(), []);
    assert.equal((await catalog.countUnderReplicated()).size, 0);
  });

  it('builds the index once for a catalog written before it (format 1)', async () => {
    assert.equal(await catalog.format(), CATALOG_FORMAT);
    const t = Date.UTC(2026, 0, 1);
    await catalog.close();
    // A format-1 catalog: records without index keys and without the format marker.
    const { Level } = await import('level');
    const db = new Level<string, unknown>(join(dir, 'catalog'), { valueEncoding: 'json' });
    const records = db.sublevel<string, BackupRecord>('backups', { valueEncoding: 'json' });
    const ids: string[] = [];
    for (let i = 0; i < 2500; i++) {
      const b: BackupRecord = {
        ...completeBackupRecord(i % 2 ? 'main' : 'staging', t + i * 1000),
        ...(i % 500 === 0 ? { replicas: { offsite: { status: 'failed' as const, attempts: 1 } } } : {}),
      };
      ids.push(b.id);
      await records.put(b.id, b);
    }
    await db.sublevel('backups-by-environment').clear();
    await db.sublevel('backups-under-replicated').clear();
    await db.sublevel('meta', { valueEncoding: 'json' }).del('catalog-format');
    await db.close();

    catalog = await Catalog.open(dir);
    assert.equal(await catalog.format(), CATALOG_FORMAT);
    const page = await catalog.listBackupsPage({ environment: 'main', limit: 2 });
    assert.deepEqual(
      page.backups.map((b) => b.id),
      [ids[2499], ids[2497]],
    );
    assert.equal(page.more, 1248);
    assert.deepEqual(
      (await catalog.listUnderReplicated()).map((b) => b.id),
      [ids[0], ids[500], ids[1000], ids[1500], ids[2000]],
    );
  });
});
