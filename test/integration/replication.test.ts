/**
 * Replicated copies for real: a local primary and an S3 replica (s3rver on
 * loopback), the controller and agents as processes. Each artifact is read
 * once on the agent and written to both locations in the same pass: the local
 * copy through the controller, the S3 copy straight from the agent to the
 * bucket. A restore falls back to the replica when the primary copy is gone or
 * corrupt, reading it straight from S3; a replica that fails during the pass
 * (down before it, or its connection cut in the middle) leaves the primary
 * complete and is copied again from it once it is back. An S3 primary with a
 * local replica works the same way round; an agent without credentials for
 * an S3 primary fails the backup with a clear error. Per-location retention: a
 * primary kept short and a replica kept longer; prune deletes old copies from
 * the primary only, and those backups are listed with their remaining copy and
 * restored from the replica.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DeleteObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { EnvsnapCluster } from '../helpers/envsnap.js';
import { treeFingerprint } from '../helpers/fingerprints.js';
import { S3_ACCESS_KEY, S3_SECRET_KEY, TestS3 } from '../helpers/s3.js';

interface BackupGet {
  id: string;
  status: string;
  restorable: boolean;
  storage: string;
  replicated: string;
  replicas: Array<{ location: string; status: string; error: string | null }>;
  artifacts: Array<{ name: string; size_bytes: number }>;
}

/**
 * A TCP proxy in front of s3rver that can cut every connection once a number
 * of request bytes went through, and refuse new ones until healed: an S3
 * endpoint failing in the middle of an upload.
 */
class CuttingProxy {
  private readonly sockets = new Set<net.Socket>();
  private cutAfter = Infinity;
  private forwarded = 0;
  cut = false;
  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(target: () => number): Promise<CuttingProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const proxy = new CuttingProxy(server, (server.address() as net.AddressInfo).port);
    server.on('connection', (client: net.Socket) => proxy.accept(client, target()));
    return proxy;
  }

  private accept(client: net.Socket, port: number): void {
    if (this.cut) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, '127.0.0.1');
    this.sockets.add(client).add(upstream);
    for (const s of [client, upstream]) {
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => {
      this.forwarded += chunk.length;
      if (this.forwarded > this.cutAfter) {
        this.cut = true;
        for (const s of this.sockets) s.destroy();
        return;
      }
      upstream.write(chunk);
    });
    upstream.pipe(client);
  }

  /** Cuts everything once `bytes` more request bytes have gone through. */
  armAfter(bytes: number): void {
    this.forwarded = 0;
    this.cutAfter = bytes;
  }

  heal(): void {
    this.cut = false;
    this.cutAfter = Infinity;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** A storage entry for an s3rver bucket, with static credentials read from `secretFile`. */
function s3Location(s3: TestS3, secretFile: string, name: string, prefix: string, endpoint = s3.endpoint) {
  return {
    name,
    type: 's3',
    bucket: s3.bucket,
    prefix,
    endpoint,
    force_path_style: true,
    access_key_id: S3_ACCESS_KEY,
    secret_access_key_file: secretFile,
  };
}

/** `backup:drill --format json`, the fields these tests read. */
interface DrillJson {
  result: string;
  activity_id: string;
  artifacts: Array<{ name: string; result: string; detail: string }>;
}

describe('replicated storage: local primary + S3 replica (s3rver)', function () {
  this.timeout(180_000);
  let work: string;
  let tree: string;
  let tree2: string;
  let bigTree: string;
  let repo: string;
  let s3: TestS3;
  let proxy: CuttingProxy;
  let cluster: EnvsnapCluster;

  /** The controller's counter of artifact bytes stored per location (by itself or by agents, straight). */
  async function controllerPutBytes(location: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${cluster.metricsPort}/metrics`)).text();
    const m = new RegExp(`envsnap_storage_put_bytes_total\\{location="${location}"\\} (\\d+)`).exec(text);
    return m ? Number(m[1]) : 0;
  }

  /** The controller's counter of artifact bytes it received over UploadArtifact. */
  async function controllerReceivedBytes(): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${cluster.metricsPort}/metrics`)).text();
    return Number(/^envsnap_upload_received_bytes_total (\d+)/m.exec(text)?.[1] ?? 0);
  }

  async function s3Keys(): Promise<string[]> {
    const out = await s3.admin((client) =>
      client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'envsnap/' })),
    );
    return (out.Contents ?? []).map((o) => o.Key!).sort();
  }

  async function backup(id: string): Promise<BackupGet> {
    return cluster.json<BackupGet>(['backup:get', id]);
  }

  before(async () => {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    work = await mkdtemp(path.join(tmpdir(), 'envsnap-repl-'));
    tree = path.join(work, 'files');
    repo = path.join(work, 'repository');
    await mkdir(path.join(tree, 'sub'), { recursive: true });
    await writeFile(path.join(tree, 'a.txt'), 'alpha\n'.repeat(1000));
    await writeFile(path.join(tree, 'sub', 'b.bin'), Buffer.alloc(300_000, 5));
    tree2 = path.join(work, 'files2');
    await mkdir(tree2, { recursive: true });
    await writeFile(path.join(tree2, 'c.txt'), 'gamma\n'.repeat(5000));
    // Incompressible, larger than one 5 MiB part: the S3 upload is still going when it is cut.
    bigTree = path.join(work, 'big');
    await mkdir(bigTree, { recursive: true });
    await writeFile(path.join(bigTree, 'noise.bin'), randomBytes(12 * 1024 * 1024));
    s3 = await TestS3.start('envsnap-replica');
    proxy = await CuttingProxy.start(() => s3.port);
    const secretFile = path.join(work, 's3.secret');
    await writeFile(secretFile, S3_SECRET_KEY, { mode: 0o600 });
    const storage = [
      { name: 'local', type: 'local', path: repo },
      s3Location(s3, secretFile, 'offsite', 'envsnap'),
      s3Location(s3, secretFile, 'flaky', 'flaky', `http://127.0.0.1:${proxy.port}`),
    ];
    // No AWS credentials anywhere but the agents' own configs (and no instance metadata to ask).
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1', 'node-2'],
      environments: [
        {
          name: 'app',
          mounts: [{ name: 'files', node: 'node-1', path: tree }],
          storage: ['local', 'offsite'],
        },
        {
          name: 's3first',
          mounts: [{ name: 'files', node: 'node-1', path: tree2 }],
          storage: ['offsite', 'local'],
        },
        {
          name: 'big',
          mounts: [{ name: 'files', node: 'node-1', path: bigTree }],
          storage: ['local', 'flaky'],
        },
        // node-2's agent has no credentials for the S3 primary.
        {
          name: 'nocreds',
          mounts: [{ name: 'files', node: 'node-2', path: tree2 }],
          storage: ['offsite', 'local'],
        },
      ],
      storage,
      // The agent declares the same locations: it uses their credentials, the controller's task says where.
      agentStorage: { 'node-1': storage },
      controller: { replica_retry_interval: 1 },
    });
  });

  after(async () => {
    await cluster?.stop();
    await proxy?.close();
    await s3?.destroy();
    await rm(work, { recursive: true, force: true });
  });

  let first = '';

  it('writes each artifact to both locations in one pass: the agent sends it once, the S3 copy straight to the bucket', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'app']);
    assert.equal(r.code, 0, r.stderr);
    first = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    const b = await backup(first);
    assert.equal(b.storage, 'local');
    assert.equal(b.replicated, '2/2');
    assert.deepEqual(
      b.replicas.map((x) => [x.location, x.status]),
      [['offsite', 'complete']],
    );
    const keys = await s3Keys();
    for (const a of b.artifacts)
      assert.ok(keys.includes(`envsnap/backups/${first}/${a.name}`), keys.join(','));
    assert.ok(keys.includes(`envsnap/backups/${first}/manifest.json`), keys.join(','));
    // The agent read and sent the artifact once: its byte counter holds one copy.
    const metrics = await (
      await fetch(`http://127.0.0.1:${cluster.agentMetricsPorts.get('node-1')}/metrics`)
    ).text();
    const sent = Number(/envsnap_agent_written_bytes_total\{kind="mount"\} (\d+)/.exec(metrics)?.[1]);
    assert.equal(sent, b.artifacts[0]!.size_bytes);
    const table = await cluster.cli(['backup:get', first]);
    assert.match(table.stdout, /Replicated:\s+2\/2 \(primary local; offsite: complete\)/);
    // The agent shares the controller's directory (same host): it wrote both copies straight, and
    // no artifact byte passed through the controller; stored bytes are counted per location.
    assert.equal(await controllerPutBytes('local'), b.artifacts[0]!.size_bytes);
    assert.equal(await controllerPutBytes('offsite'), b.artifacts[0]!.size_bytes);
    assert.equal(await controllerReceivedBytes(), 0);
    // The S3 copy is complete and verified.
    const v = await cluster.json<{ result: string; locations: Array<{ location: string; result: string }> }>([
      'backup:verify',
      first,
      '--location',
      'offsite',
    ]);
    assert.equal(v.result, 'ok', JSON.stringify(v));
  });

  it('restores from the replica when the primary copy is gone, and says so', async () => {
    const b = await backup(first);
    const good = await treeFingerprint(tree);
    await rm(path.join(repo, 'backups', first, b.artifacts[0]!.name));
    await writeFile(path.join(tree, 'a.txt'), 'damaged');
    const r = await cluster.cli(['backup:restore', first, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /copy in "local" unusable: .*missing.*; restoring from replica "offsite"/);
    assert.match(r.stderr, /reading straight from storage "offsite"/);
    assert.deepEqual(await treeFingerprint(tree), good);
  });

  it('a single-task restore leaves the check to the agent: a corrupt primary copy is refused before the swap and the restore runs again from the replica', async () => {
    const made = await cluster.cli(['backup:create', '-e', 'app']);
    assert.equal(made.code, 0, made.stderr);
    const id = /Backup ID: (\w+)/.exec(made.stdout)![1]!;
    const b = await backup(id);
    const file = path.join(repo, 'backups', id, b.artifacts[0]!.name);
    const original = await readFile(file);
    const corrupt = Buffer.from(original);
    corrupt[corrupt.length >> 1] = corrupt[corrupt.length >> 1]! ^ 0xff;
    await writeFile(file, corrupt);
    const good = await treeFingerprint(tree);
    await writeFile(path.join(tree, 'a.txt'), 'damaged');
    const r = await cluster.cli(['backup:restore', id, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /verifying 0 of 1 artifacts before anything is applied; the agent checks/);
    assert.match(r.stderr, /copy in "local" unusable: .*is corrupt.*; restoring from replica "offsite"/);
    assert.match(r.stderr, /restoring again from "offsite"/);
    assert.deepEqual(await treeFingerprint(tree), good);

    // No good copy anywhere: the restore fails and the tree is as it was (the agent never swapped).
    await s3.admin((client) =>
      client.send(
        new DeleteObjectCommand({ Bucket: s3.bucket, Key: `envsnap/backups/${id}/${b.artifacts[0]!.name}` }),
      ),
    );
    await writeFile(path.join(tree, 'a.txt'), 'damaged again');
    const damaged = await treeFingerprint(tree);
    const failed = await cluster.cli(['backup:restore', id, '--yes']);
    assert.equal(failed.code, 1, failed.stderr);
    assert.match(failed.stderr, /no good copy of files\/\S+ in any location: .*is corrupt.*missing/);
    assert.deepEqual(await treeFingerprint(tree), damaged);
    const deleted = await cluster.cli(['backup:delete', id, '--yes']);
    assert.equal(deleted.code, 0, deleted.stderr);
  });

  it('a drill leaves the check to the agent: an artifact whose primary copy is corrupt is drilled again from the replica, and errs with no good copy', async () => {
    const made = await cluster.cli(['backup:create', '-e', 'app']);
    assert.equal(made.code, 0, made.stderr);
    const id = /Backup ID: (\w+)/.exec(made.stdout)![1]!;
    const name = (await backup(id)).artifacts[0]!.name;
    const file = path.join(repo, 'backups', id, name);
    const corrupt = Buffer.from(await readFile(file));
    corrupt[corrupt.length >> 1] = corrupt[corrupt.length >> 1]! ^ 0xff;
    await writeFile(file, corrupt);
    const drill = await cluster.json<DrillJson>(['backup:drill', id]);
    assert.equal(drill.result, 'pass', JSON.stringify(drill));
    const log = await cluster.cli(['activity:log', drill.activity_id]);
    const text = log.stdout + log.stderr;
    // Nothing was read before the drill: the agent's own check found the bad copy.
    assert.match(text, /the agents check 1 of them as they drill them, the controller read 0 first/);
    assert.match(text, /copy in "local" unusable: .*is corrupt.*; restoring from replica "offsite"/);
    assert.match(text, /drilling again from "offsite" after: /);

    await s3.admin((client) =>
      client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: `envsnap/backups/${id}/${name}` })),
    );
    const failed = await cluster.cli(['backup:drill', id, '--format', 'json']);
    assert.equal(failed.code, 1, failed.stderr);
    const out = JSON.parse(failed.stdout) as DrillJson;
    assert.equal(out.result, 'fail');
    assert.equal(out.artifacts[0]!.result, 'error');
    assert.match(
      out.artifacts[0]!.detail,
      /no good copy of files\/\S+ in any location: .*is corrupt.*missing/,
    );
    const deleted = await cluster.cli(['backup:delete', id, '--yes']);
    assert.equal(deleted.code, 0, deleted.stderr);
  });

  it('an S3 primary with a local replica: the agent writes both straight', async () => {
    const before = await controllerPutBytes('local');
    const beforeOffsite = await controllerPutBytes('offsite');
    const r = await cluster.cli(['backup:create', '-e', 's3first']);
    assert.equal(r.code, 0, r.stderr);
    const id = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    const b = await backup(id);
    assert.equal(b.storage, 'offsite');
    assert.equal(b.restorable, true);
    assert.equal(b.replicated, '2/2');
    assert.deepEqual(
      b.replicas.map((x) => [x.location, x.status]),
      [['local', 'complete']],
    );
    assert.equal((await controllerPutBytes('local')) - before, b.artifacts[0]!.size_bytes);
    assert.equal((await controllerPutBytes('offsite')) - beforeOffsite, b.artifacts[0]!.size_bytes);
    assert.equal(await controllerReceivedBytes(), 0);
    const keys = await s3Keys();
    assert.ok(keys.includes(`envsnap/backups/${id}/${b.artifacts[0]!.name}`), keys.join(','));
    const good = await treeFingerprint(tree2);
    await writeFile(path.join(tree2, 'c.txt'), 'damaged');
    const restore = await cluster.cli(['backup:restore', id, '--yes']);
    assert.equal(restore.code, 0, restore.stderr);
    assert.match(restore.stderr, /reading straight from storage "offsite"/);
    assert.deepEqual(await treeFingerprint(tree2), good);
  });

  it('an agent without credentials for the S3 primary fails the backup at task start, naming the location', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'nocreds']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /storage "offsite": node node-2 cannot open s3:\/\/envsnap-replica\/envsnap/);
    assert.match(r.stderr, /hint: give node node-2 credentials for it/);
    assert.doesNotMatch(r.stderr + (await cluster.logs()), new RegExp(S3_SECRET_KEY + '[^"]'));
  });

  it('the S3 endpoint failing mid-pass leaves the local copy complete; the S3 copy is retried from it', async () => {
    proxy.armAfter(2 * 1024 * 1024);
    const r = await cluster.cli(['backup:create', '-e', 'big']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(proxy.cut, 'the S3 connection was cut during the backup');
    const id = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    const b = await backup(id);
    assert.equal(b.status, 'complete');
    assert.equal(b.restorable, true);
    assert.equal(b.replicated, '1/2');
    assert.equal(b.replicas[0]!.location, 'flaky');
    assert.equal(b.replicas[0]!.status, 'failed');
    assert.ok(b.replicas[0]!.error, 'the replica error is recorded');
    assert.ok(b.artifacts[0]!.size_bytes > 10 * 1024 * 1024);
    proxy.heal();
    await cluster.waitFor(
      async () => (await backup(id)).replicated === '2/2',
      'the replica to be copied again from the primary',
      60_000,
    );
    const v = await cluster.json<{ result: string }>(['backup:verify', id, '--location', 'flaky']);
    assert.equal(v.result, 'ok');
  });

  it('a replica that fails during the pass leaves the backup complete from the primary, and is copied again once it is back', async () => {
    await s3.stop();
    const r = await cluster.cli(['backup:create', '-e', 'app']);
    assert.equal(r.code, 0, r.stderr);
    const id = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    let b = await backup(id);
    assert.equal(b.status, 'complete');
    assert.equal(b.restorable, true);
    assert.equal(b.replicated, '1/2');
    assert.equal(b.replicas[0]!.status, 'failed');
    assert.ok(b.replicas[0]!.error, 'the replica error is recorded');
    await s3.start();
    await cluster.waitFor(
      async () => (await backup(id)).replicated === '2/2',
      'the replica to be copied again from the primary',
      60_000,
    );
    b = await backup(id);
    const keys = await s3Keys();
    for (const a of b.artifacts) assert.ok(keys.includes(`envsnap/backups/${id}/${a.name}`));
  });

  it('backup:delete removes the backup from every location', async () => {
    const r = await cluster.cli(['backup:delete', first, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!(await s3Keys()).some((k) => k.includes(first)));
  });
});

describe('per-location retention: a local primary kept short, an S3 replica kept longer', function () {
  this.timeout(180_000);
  let work: string;
  let tree: string;
  let repo: string;
  let s3: TestS3;
  let cluster: EnvsnapCluster;

  interface ListJson {
    id: string;
    status: string;
    restorable: boolean;
    copies: string[];
  }
  interface GetJson extends BackupGet {
    copies: string[];
    pruned: Array<{ location: string; time: string; reason: string }>;
  }
  interface PruneJson {
    id: string;
    action: string;
    reasons: string[];
    locations: Array<{ location: string; action: string; reasons: string[] }>;
  }

  async function s3BackupIds(): Promise<string[]> {
    const out = await s3.admin((client) =>
      client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'envsnap/' })),
    );
    return [...new Set((out.Contents ?? []).map((o) => o.Key!.split('/')[2]!))].sort();
  }

  async function localBackupIds(): Promise<string[]> {
    const dir = path.join(repo, 'backups');
    return existsSync(dir) ? (await readdir(dir)).sort() : [];
  }

  before(async () => {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    work = await mkdtemp(path.join(tmpdir(), 'envsnap-locret-'));
    tree = path.join(work, 'files');
    repo = path.join(work, 'repository');
    await mkdir(path.join(tree, 'sub'), { recursive: true });
    await writeFile(path.join(tree, 'a.txt'), 'alpha\n'.repeat(1000));
    await writeFile(path.join(tree, 'sub', 'b.bin'), Buffer.alloc(100_000, 5));
    s3 = await TestS3.start('envsnap-retention');
    const secretFile = path.join(work, 's3.secret');
    await writeFile(secretFile, S3_SECRET_KEY, { mode: 0o600 });
    const storage = [
      { name: 'local', type: 'local', path: repo },
      { ...s3Location(s3, secretFile, 'offsite', 'envsnap'), retention: { manual: { keep_last: 3 } } },
    ];
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [
        {
          name: 'app',
          type: 'production',
          mounts: [{ name: 'files', node: 'node-1', path: tree }],
          // The environment's rules govern the primary; the replica has its own.
          retention: { manual: { keep_last: 1 } },
        },
      ],
      storage,
      // The agent writes the S3 copy straight, with the same location's credentials.
      agentStorage: { 'node-1': storage },
      controller: { replica_retry_interval: 1 },
    });
  });

  after(async () => {
    await cluster?.stop();
    await s3?.destroy();
    await rm(work, { recursive: true, force: true });
  });

  const ids: string[] = [];

  it('prunes old copies from the primary only: they stay listed, with their replica as the copy', async () => {
    for (let i = 0; i < 4; i++) {
      await writeFile(path.join(tree, 'a.txt'), `version ${i}\n`);
      const r = await cluster.cli(['backup:create', '-e', 'app', '--yes']);
      assert.equal(r.code, 0, r.stderr);
      ids.unshift(/Backup ID: (\w+)/.exec(r.stdout)![1]!);
    }
    // ids: newest first. Each backup is followed by a prune: local keeps 1, offsite keeps 3.
    const [b4, b3, b2, b1] = ids as [string, string, string, string];
    // The prune after the last backup may still run when backup:create returns.
    const want = [b2, b3, b4].sort().join(',');
    await cluster.waitFor(
      async () => (await s3BackupIds()).join(',') === want && (await localBackupIds()).join(',') === b4,
      'the prune after the last backup',
      30_000,
    );
    assert.deepEqual(await localBackupIds(), [b4]);
    assert.deepEqual(await s3BackupIds(), [b2, b3, b4].sort());

    const list = await cluster.json<ListJson[]>(['backup:list', '-e', 'app']);
    assert.deepEqual(
      list.map((b) => [b.id, b.copies]),
      [
        [b4, ['local', 'offsite']],
        [b3, ['offsite']],
        [b2, ['offsite']],
      ],
      'the oldest is gone from both; the two before the newest only from the primary',
    );
    assert.ok(list.every((b) => b.status === 'complete' && b.restorable));
    assert.ok(!list.some((b) => b.id === b1));

    const get = await cluster.json<GetJson>(['backup:get', b2]);
    assert.deepEqual(get.copies, ['offsite']);
    assert.deepEqual(
      get.pruned.map((p) => p.location),
      ['local'],
    );
    assert.match(get.pruned[0]!.reason, /not kept by any manual rule \(last 1\)/);
    const table = await cluster.cli(['backup:get', b2]);
    assert.match(table.stdout, /Copies:\s+offsite/);
    assert.match(table.stdout, /Pruned:\s+local at .* \(not kept by any manual rule \(last 1\)\)/);

    // The dry run shows each location's own decision.
    const dry = await cluster.json<PruneJson[]>(['backup:prune', '-e', 'app', '--dry-run']);
    const newest = dry.find((d) => d.id === b4)!;
    assert.deepEqual(
      newest.locations.map((l) => [l.location, l.action, l.reasons]),
      [
        ['local', 'keep', ['last #1']],
        ['offsite', 'keep', ['last #1']],
      ],
    );
    assert.deepEqual(
      dry.find((d) => d.id === b2)!.locations.map((l) => [l.location, l.action, l.reasons]),
      [['offsite', 'keep', ['last #3']]],
    );
    const log = await cluster.logs();
    assert.match(log, /pruning the copy of one location/);

    // Pages: --limit shows the newest, says how many more, and --before gives the next page.
    const page = await cluster.cli(['backup:list', '-e', 'app', '--limit', '1', '--format', 'json']);
    assert.equal(page.code, 0, page.stderr);
    assert.deepEqual(
      (JSON.parse(page.stdout) as ListJson[]).map((b) => b.id),
      [b4],
    );
    assert.match(page.stderr, new RegExp(`2 more, use --limit 3 or --all \\(next page: --before ${b4}\\)`));
    const next = await cluster.json<ListJson[]>(['backup:list', '-e', 'app', '--limit', '1', '--before', b4]);
    assert.deepEqual(
      next.map((b) => b.id),
      [b3],
    );
    const all = await cluster.json<ListJson[]>(['backup:list', '-e', 'app', '--all']);
    assert.equal(all.length, 3);
  });

  it('a pruned primary copy is neither missing to repository:check nor copied back, and the backup restores from the replica', async () => {
    const b2 = ids[2]!;
    const check = await cluster.json<{ issues: Array<{ kind: string; backup_id?: string; key?: string }> }>([
      'repository:check',
      '--format',
      'json',
    ]);
    assert.deepEqual(check.issues, [], JSON.stringify(check.issues));
    // Replica retry passes run every second: nothing brings the pruned copy back.
    await new Promise((r) => setTimeout(r, 2500));
    assert.ok(!(await localBackupIds()).includes(b2));

    await writeFile(path.join(tree, 'a.txt'), 'damaged');
    const r = await cluster.cli(['backup:restore', b2, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /the primary copy was pruned by retention; reading the copy in "offsite"/);
    assert.doesNotMatch(r.stderr, /unusable/);
    assert.equal((await import('node:fs')).readFileSync(path.join(tree, 'a.txt'), 'utf8'), 'version 1\n');
  });
});
