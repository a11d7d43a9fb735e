/**
 * Encryption at rest for real: an agent with an age key (made by the real
 * `age-keygen`) encrypts every artifact before it leaves the node; the
 * repository holds age files only; a restore with the key brings the data
 * back; a restore by an agent with another key is refused before anything is
 * touched; a key file others can read stops the agent at start-up.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { EnvsnapCluster, runBin } from '../helpers/envsnap.js';
import { treeFingerprint } from '../helpers/fingerprints.js';
import { requireBinary } from '../helpers/servers.js';

interface BackupGet {
  id: string;
  artifacts: Array<{ name: string; encryption: string | null; key_fingerprint: string | null }>;
}

async function keygen(file: string): Promise<string> {
  await requireBinary('age-keygen', 'age');
  execFileSync('age-keygen', ['-o', file], { stdio: 'ignore' });
  await chmod(file, 0o600);
  return execFileSync('age-keygen', ['-y', file]).toString().trim();
}

describe('encryption at rest (age, real processes)', function () {
  this.timeout(180_000);
  let work: string;
  let tree: string;
  let keyA: string;
  let keyB: string;
  let cluster: EnvsnapCluster;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'envsnap-enc-'));
    keyA = path.join(work, 'a.key');
    keyB = path.join(work, 'b.key');
    await keygen(keyA);
    await keygen(keyB);
    tree = path.join(work, 'files');
    await mkdir(path.join(tree, 'sub'), { recursive: true });
    await writeFile(path.join(tree, 'secret.txt'), 'the plaintext that must not be stored\n'.repeat(100));
    await writeFile(path.join(tree, 'sub', 'b.bin'), Buffer.alloc(100_000, 9));
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [{ name: 'enc', mounts: [{ name: 'files', node: 'node-1', path: tree }] }],
      agent: { encryption_key_file: keyA },
    });
  });

  after(async () => {
    await cluster?.stop();
    await rm(work, { recursive: true, force: true });
  });

  let backupId = '';

  it('stores age files only, and the manifest records the scheme and the key fingerprint', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'enc']);
    assert.equal(r.code, 0, r.stderr);
    backupId = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    const b = await cluster.json<BackupGet>(['backup:get', backupId]);
    const [a] = b.artifacts;
    assert.ok(a);
    assert.equal(a.encryption, 'age-x25519');
    const recipient = execFileSync('age-keygen', ['-y', keyA]).toString().trim();
    const { createHash } = await import('node:crypto');
    assert.equal(a.key_fingerprint, createHash('sha256').update(recipient).digest('hex').slice(0, 16));
    const stored = path.join(cluster.repository, 'backups', backupId, a.name);
    const fh = await open(stored, 'r');
    const head = Buffer.alloc(21);
    await fh.read(head, 0, 21, 0);
    await fh.close();
    assert.equal(head.toString(), 'age-encryption.org/v1');
    const bytes = await readFile(stored);
    assert.ok(!bytes.includes(Buffer.from('the plaintext')), 'no plaintext in the repository');
    // With the key, the stored bytes are a zstd stream of the tar.
    const tar = execFileSync('sh', ['-c', `age -d -i ${keyA} ${stored} | zstd -dc | tar -tf -`]).toString();
    assert.match(tar, /secret\.txt/);
  });

  it('restores with the key', async () => {
    const good = await treeFingerprint(tree);
    await writeFile(path.join(tree, 'secret.txt'), 'damaged');
    await rm(path.join(tree, 'sub'), { recursive: true });
    const r = await cluster.cli(['backup:restore', backupId, '--yes']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await treeFingerprint(tree), good);
  });

  it('an agent with another key refuses the restore before touching anything', async () => {
    await cluster.stop(true);
    const cfgFile = cluster.configFile('node-1');
    const cfg = parse(await readFile(cfgFile, 'utf8')) as { agent: Record<string, unknown> };
    cfg.agent.encryption_key_file = keyB;
    await writeFile(cfgFile, stringify(cfg));
    await cluster.startController();
    await cluster.startAgent('node-1');
    await writeFile(path.join(tree, 'new-file.txt'), 'made after the backup');
    const before = await treeFingerprint(tree);
    const r = await cluster.cli(['backup:restore', backupId, '--yes']);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /was encrypted with key fingerprint [0-9a-f]{16}, but this agent's key is [0-9a-f]{16}/,
    );
    assert.deepEqual(await treeFingerprint(tree), before, 'the mount is untouched');
  });

  it('a key file others can read stops the agent at start-up, naming the file', async () => {
    const loose = path.join(work, 'loose.key');
    await keygen(loose);
    await chmod(loose, 0o644);
    const cfgFile = path.join(work, 'loose-agent.yaml');
    await writeFile(
      cfgFile,
      stringify({
        agent: {
          node_id: 'node-x',
          controller: cluster.address,
          work_dir: path.join(work, 'work-x'),
          encryption_key_file: loose,
        },
      }),
    );
    const r = await runBin('envsnap-agent', ['--config', cfgFile], { timeoutMs: 30_000 });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /encryption key file .*loose\.key is readable by group or others \(hint: chmod 600/,
    );
  });
});
