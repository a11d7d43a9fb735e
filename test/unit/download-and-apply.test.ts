/**
 * downloadAndApply with a real zstd and a local storage location: the decompressed stream an
 * engine reads ends only once the artifact matched its manifest SHA-256, and fails instead of
 * ending when it does not (what lets the controller leave the check of a single-task restore's
 * first artifact to the agent).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';

import { downloadAndApply } from '../../agent/artifact-pipelines.js';
import { loadEncryptionKey, SCHEME } from '../../agent/encryption.js';
import { ArtifactCorruptError, NotFoundError } from '../../shared/errors.js';
import { LocalBackend } from '../../shared/storage/local-backend.js';
import type { WireArtifact } from '../../shared/wire.js';

describe('downloadAndApply', () => {
  let dir: string;
  let storage: LocalBackend;
  let zst: Buffer;
  const raw = Buffer.from('INSERT INTO t VALUES (1);\n'.repeat(200_000));

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'envsnap-apply-'));
    zst = execFileSync('zstd', ['-q', '-c'], { input: raw, maxBuffer: 64 * 1024 * 1024 });
    await writeFile(path.join(dir, 'a.sql.zst'), zst);
    storage = LocalBackend.attach('local', dir);
  });

  after(() => rm(dir, { recursive: true, force: true }));

  function artifact(sha256: string): WireArtifact {
    return {
      name: 'db/a.sql.zst',
      service: 'db',
      kind: 'mariadb',
      node: 'n',
      database: 'a',
      format: 'sql',
      compression: 'zstd',
      sizeBytes: zst.length,
      sha256,
      rawBytes: raw.length,
    };
  }

  /** Reads the whole stream; resolves with how it ended and the bytes seen. */
  async function consume(input: Readable): Promise<{ ended: boolean; bytes: number; error?: unknown }> {
    let bytes = 0;
    try {
      for await (const chunk of input) bytes += (chunk as Buffer).length;
      return { ended: true, bytes };
    } catch (error) {
      return { ended: false, bytes, error };
    }
  }

  async function run(sha256: string, opts: { key?: string; readAfterMs?: number; stored?: boolean } = {}) {
    let seen: Awaited<ReturnType<typeof consume>> | undefined;
    const done = downloadAndApply({
      client: undefined as unknown as grpc.Client,
      backupId: 'b',
      taskId: 't',
      artifact: artifact(sha256),
      apply: async (input) => {
        // An engine may prepare (a staging database or directory) before it reads.
        if (opts.readAfterMs) await new Promise((r) => setTimeout(r, opts.readAfterMs));
        seen = await consume(input);
      },
      applyCompressed: opts.stored
        ? async (input) => {
            seen = await consume(input);
          }
        : undefined,
      signal: new AbortController().signal,
      onBytes: () => undefined,
      direct: { storage, key: opts.key ?? 'a.sql.zst' },
    });
    const result = await done.then(
      () => undefined,
      (err: unknown) => err,
    );
    return { result, seen: seen! };
  }

  it('ends the raw stream after the whole artifact matched its SHA-256', async () => {
    const { result, seen } = await run(createHash('sha256').update(zst).digest('hex'));
    assert.equal(result, undefined);
    assert.deepEqual(seen, { ended: true, bytes: raw.length });
  });

  it('fails the raw stream instead of ending it when the SHA-256 differs, though the bytes decompress', async () => {
    const { result, seen } = await run('0'.repeat(64));
    assert.ok(result instanceof ArtifactCorruptError, String(result));
    assert.equal(seen.ended, false);
    assert.ok(seen.bytes <= raw.length, `${seen.bytes} bytes`);
    assert.ok(seen.error instanceof ArtifactCorruptError, String(seen.error));
  });

  it('with applyCompressed, gives the stored bytes instead, ended only after they matched, failed otherwise', async () => {
    const good = await run(createHash('sha256').update(zst).digest('hex'), { stored: true });
    assert.equal(good.result, undefined);
    assert.deepEqual(good.seen, { ended: true, bytes: zst.length });
    const bad = await run('0'.repeat(64), { stored: true });
    assert.ok(bad.result instanceof ArtifactCorruptError, String(bad.result));
    assert.equal(bad.seen.ended, false);
    assert.ok(bad.seen.error instanceof ArtifactCorruptError, String(bad.seen.error));
  });

  it('with applyCompressed and an encrypted artifact, gives the decrypted stored bytes, ended only after they matched', async () => {
    const identity = path.join(dir, 'key.txt');
    execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' });
    await chmod(identity, 0o600);
    const key = await loadEncryptionKey(identity);
    const aged = execFileSync('age', ['-r', key.recipient], { input: zst, maxBuffer: 64 * 1024 * 1024 });
    await writeFile(path.join(dir, 'a.sql.zst.age'), aged);
    let seen: Awaited<ReturnType<typeof consume>> | undefined;
    await downloadAndApply({
      client: undefined as unknown as grpc.Client,
      backupId: 'b',
      taskId: 't',
      artifact: {
        ...artifact(createHash('sha256').update(aged).digest('hex')),
        sizeBytes: aged.length,
        encryption: SCHEME,
        keyFingerprint: key.fingerprint,
      },
      apply: () => Promise.reject(new Error('the raw stream was asked for')),
      applyCompressed: async (input) => {
        seen = await consume(input);
      },
      encryption: key,
      signal: new AbortController().signal,
      onBytes: () => undefined,
      direct: { storage, key: 'a.sql.zst.age' },
    });
    assert.deepEqual(seen, { ended: true, bytes: zst.length });
  });

  it('fails, without crashing the agent, when the copy is missing and the engine starts reading late', async () => {
    const { result, seen } = await run(createHash('sha256').update(zst).digest('hex'), {
      key: 'missing.sql.zst',
      readAfterMs: 200,
    });
    assert.ok(result instanceof NotFoundError, String(result));
    assert.equal(seen.ended, false);
    assert.equal(seen.bytes, 0);
  });
});
