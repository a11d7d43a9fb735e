import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Catalog, type BackupRecord } from '../../controller/catalog.js';
import { NotFoundError } from '../../shared/errors.js';
import { newId } from '../../shared/ids.js';

function backup(env: string, at: number): BackupRecord {
  return {
    id: newId(at),
    environment: env,
    created: new Date(at).toISOString(),
    status: 'complete',
    live: false,
    tag: 'manual',
    consistency: '',
    activityId: newId(at),
    storage: 'local',
    artifacts: [],
    sizeBytes: 0,
  };
}

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
    await catalog.putBackup(backup('main', t + 1000));
    await catalog.putBackup(backup('staging', t + 2000));
    await catalog.putBackup(backup('main', t + 3000));
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
    const b = backup('main', Date.UTC(2026, 0, 2));
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
});
