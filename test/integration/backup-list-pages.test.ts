import assert from 'node:assert/strict';
import path from 'node:path';
import { Catalog } from '../../controller/catalog.js';
import { completeBackupRecord } from '../helpers/catalog-records.js';
import { EnvsnapCluster } from '../helpers/envsnap.js';

/**
 * `backup:list` over more backups than one ListBackups reply holds (the controller's pages of 1,000):
 * the CLI follows `next_before` so that `--all` and a large `--limit` list every backup once, newest
 * first, while no single reply is catalog-sized.
 */
describe('backup:list pages through the controller', function () {
  this.timeout(120_000);
  const COUNT = 2345;
  let cluster: EnvsnapCluster;
  let ids: string[];

  before(async () => {
    cluster = await EnvsnapCluster.start({
      nodes: [],
      environments: [{ name: 'app', mounts: [{ name: 'files', node: 'node-1', path: '/srv/app' }] }],
    });
    cluster.controller.child.kill('SIGTERM');
    await cluster.controller.exited;
    const catalog = await Catalog.open(path.join(cluster.dir, 'state'));
    const t = Date.UTC(2026, 0, 1);
    ids = [];
    try {
      for (let i = 0; i < COUNT; i++) {
        const at = t + i * 60_000;
        const b = completeBackupRecord(i % 10 === 0 ? 'other' : 'app', at);
        if (b.environment === 'app') ids.push(b.id);
        await catalog.putBackup(b);
      }
    } finally {
      await catalog.close();
    }
    ids.reverse(); // newest first
    await cluster.startController();
  });
  after(async () => {
    await cluster?.stop();
  });

  it('--all lists every backup once, newest first, across pages', async () => {
    const all = await cluster.json<Array<{ id: string }>>(['backup:list', '-e', 'app', '--all']);
    assert.equal(all.length, ids.length);
    assert.deepEqual(
      all.map((b) => b.id),
      ids,
    );
  });

  it('a --limit above one page is met, and the rest is counted', async () => {
    const r = await cluster.cli(['backup:list', '-e', 'app', '--limit', '1500', '--format', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const page = JSON.parse(r.stdout) as Array<{ id: string }>;
    assert.deepEqual(
      page.map((b) => b.id),
      ids.slice(0, 1500),
    );
    const rest = ids.length - 1500;
    assert.match(
      r.stderr,
      new RegExp(`${rest} more, use --limit ${ids.length} or --all \\(next page: --before ${ids[1499]}\\)`),
    );
  });
});
