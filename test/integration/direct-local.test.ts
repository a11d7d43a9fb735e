/**
 * Local locations an agent shares with the controller (the same host, as in
 * the bench and on a one-server site): the agent proves it (the marker's id,
 * its owner, a file it can create) and then writes and reads the repository
 * straight, so no artifact byte crosses gRPC. When the proof fails (another
 * marker) or `agent.direct_local_storage` is off, the bytes go through the
 * controller as before, and the agent says why once in its log.
 */
import assert from 'node:assert/strict';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { loadSakilaMariadb, makeMountTree } from '../helpers/datasets.js';
import { EnvsnapCluster } from '../helpers/envsnap.js';
import { mariadbFingerprint, treeFingerprint } from '../helpers/fingerprints.js';
import { mariadbConnection, startMariadb, type MariadbServer } from '../helpers/servers.js';

interface Manifest {
  artifacts: Array<{ name: string; size_bytes: number; sha256: string; key?: string }>;
}

describe('local locations an agent shares with the controller', function () {
  this.timeout(300_000);
  let maria: MariadbServer;
  let mount: string;
  let cluster: EnvsnapCluster;

  /** The sum of a controller metric's samples (every label set). */
  async function metric(name: string, labels = ''): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${cluster.metricsPort}/metrics`)).text();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith(`${name}${labels} `) || (!labels && line.startsWith(`${name}{`))) {
        sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
    }
    return sum;
  }

  const counters = async () => ({
    received: await metric('envsnap_upload_received_bytes_total'),
    put: await metric('envsnap_storage_put_bytes_total', '{location="local"}'),
    downloaded: await metric('envsnap_restore_read_bytes_total'),
  });

  async function backup(): Promise<{ id: string; manifest: Manifest; stored: number }> {
    const r = await cluster.cli(['backup:create', '-e', 'main', '--yes']);
    assert.equal(r.code, 0, r.stderr);
    const id = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    const manifest = JSON.parse(
      await readFile(path.join(cluster.repository, 'backups', id, 'manifest.json'), 'utf8'),
    ) as Manifest;
    return { id, manifest, stored: manifest.artifacts.reduce((n, a) => n + a.size_bytes, 0) };
  }

  async function damageAndRestore(id: string): Promise<void> {
    const good = { maria: await mariadbFingerprint(maria, 'sakila'), tree: await treeFingerprint(mount) };
    await maria.query('SET FOREIGN_KEY_CHECKS=0; DROP TABLE payment; UPDATE film SET title = "X";', 'sakila');
    await rm(path.join(mount, 'docs'), { recursive: true, force: true });
    const r = await cluster.cli(['backup:restore', id, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await mariadbFingerprint(maria, 'sakila'), good.maria);
    assert.deepEqual(await treeFingerprint(mount), good.tree);
  }

  const agentLog = () => readFile(path.join(cluster.dir, 'agent-node-1.log'), 'utf8');

  before(async () => {
    maria = await startMariadb({ name: 'direct-local' });
    mount = path.join(maria.dir, 'media');
    await Promise.all([loadSakilaMariadb(maria), makeMountTree(mount)]);
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [
        {
          name: 'main',
          type: 'production',
          active: true,
          services: [
            {
              name: 'db',
              kind: 'mariadb',
              nodes: ['node-1'],
              connection: mariadbConnection(maria),
            },
          ],
          mounts: [{ name: 'media', node: 'node-1', path: mount }],
        },
      ],
    });
  });

  after(async () => {
    if (cluster) await cluster.stop();
    await maria?.stop();
  });

  it('a backup and its restore move no artifact byte over gRPC; the copies are the attempt files, complete', async () => {
    const before = await counters();
    const { id, manifest, stored } = await backup();
    const after = await counters();
    assert.equal(after.received, before.received, 'bytes received over UploadArtifact');
    assert.equal(after.received, 0);
    // Stored bytes are still counted per location, whoever wrote them.
    assert.equal(after.put - before.put, stored);
    for (const a of manifest.artifacts) {
      const key = a.key || `backups/${id}/${a.name}`;
      assert.equal((await stat(path.join(cluster.repository, key))).size, a.size_bytes, key);
    }
    // The database's dump ran under a dump lock: its copy is its attempt's (fencing token in the key).
    assert.match(
      manifest.artifacts.find((a) => a.name.startsWith('db/'))!.key ?? '',
      /^backups\/\w+\/db\/t\d+\//,
    );
    await damageAndRestore(id);
    assert.equal((await counters()).downloaded, before.downloaded, 'bytes sent over DownloadArtifact');
    const check = await cluster.cli(['repository:check']);
    assert.equal(check.code, 0, check.stdout + check.stderr);
  });

  it('a marker that does not match: the bytes go through the controller, the agent says why once', async () => {
    const marker = path.join(cluster.repository, '.envsnap-location');
    const id0 = await readFile(marker, 'utf8');
    await writeFile(marker, `${'0'.repeat(32)}\n`);
    try {
      const before = await counters();
      const { id, stored } = await backup();
      const mid = await counters();
      assert.equal(mid.received - before.received, stored);
      assert.equal(mid.put - before.put, stored);
      await damageAndRestore(id);
      assert.equal((await counters()).downloaded - before.downloaded, stored);
      const notes = (await agentLog())
        .split('\n')
        .filter((l) => l.includes('is not shared with node node-1'));
      assert.equal(notes.length, 1, notes.join('\n'));
      assert.match(notes[0]!, /holds another id.*its bytes go through the controller/);
    } finally {
      await writeFile(marker, id0);
    }
  });

  it('agent.direct_local_storage: false: the bytes go through the controller', async () => {
    const agent = cluster.agents.get('node-1')!;
    agent.child.kill('SIGTERM');
    await agent.exited;
    const file = cluster.configFile('node-1');
    const cfg = parse(await readFile(file, 'utf8')) as { agent: Record<string, unknown> };
    cfg.agent.direct_local_storage = false;
    await writeFile(file, stringify(cfg));
    await cluster.startAgent('node-1');
    const before = await counters();
    const { id, stored } = await backup();
    assert.equal((await counters()).received - before.received, stored);
    await damageAndRestore(id);
    // JSON log lines: the quotes are escaped.
    assert.match(await agentLog(), /storage \\"local\\": agent\.direct_local_storage is off/);
  });
});
