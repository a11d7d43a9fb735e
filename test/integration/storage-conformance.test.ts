import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { InvalidArgumentError, NotFoundError } from '../../shared/errors.js';
import type { StorageBackend } from '../../shared/storage/backend.js';
import { LocalBackend } from '../../shared/storage/local-backend.js';

async function readAll(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

/** Streams `total` pseudo-random bytes in 64 KiB chunks without holding them all. */
function generated(total: number, seed = 1): Readable {
  let left = total;
  let x = seed;
  return new Readable({
    read() {
      if (left === 0) return void this.push(null);
      const n = Math.min(65536, left);
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) {
        x = (x * 1103515245 + 12345) & 0x7fffffff;
        b[i] = x & 0xff;
      }
      left -= n;
      this.push(b);
    },
  });
}

/**
 * The storage conformance suite: every StorageBackend must pass it.
 * `make` opens a fresh, empty location; `cleanup` removes it.
 */
export function storageConformance(
  label: string,
  make: () => Promise<{ backend: StorageBackend; cleanup(): Promise<void>; leftovers?(): Promise<string[]> }>,
): void {
  describe(`storage conformance: ${label}`, () => {
    let backend: StorageBackend;
    let env: Awaited<ReturnType<typeof make>>;
    beforeEach(async () => {
      env = await make();
      backend = env.backend;
    });
    afterEach(async () => {
      await backend.close();
      await env.cleanup();
    });

    it('put returns size and sha256, get streams the same bytes', async () => {
      const data = randomBytes(300_000);
      const r = await backend.put('backups/a/db/x.sql.zst', Readable.from([data]));
      assert.equal(r.sizeBytes, data.length);
      assert.equal(r.sha256, createHash('sha256').update(data).digest('hex'));
      assert.deepEqual(await readAll(await backend.get('backups/a/db/x.sql.zst')), data);
      assert.deepEqual(await backend.stat('backups/a/db/x.sql.zst'), { sizeBytes: data.length });
    });

    it('put of a large stream is hashed as it passes', async () => {
      const r = await backend.put('backups/big/m/files.tar.zst', generated(40 * 1024 * 1024));
      const expected = createHash('sha256');
      for await (const c of generated(40 * 1024 * 1024) as AsyncIterable<Buffer>) expected.update(c);
      assert.equal(r.sha256, expected.digest('hex'));
      assert.equal(r.sizeBytes, 40 * 1024 * 1024);
    });

    it('put replaces an existing object', async () => {
      await backend.put('k/v', Readable.from([Buffer.from('old')]));
      await backend.put('k/v', Readable.from([Buffer.from('new!')]));
      assert.equal((await readAll(await backend.get('k/v'))).toString(), 'new!');
    });

    it('a failed put leaves nothing behind', async () => {
      const failing = new Readable({
        read() {
          this.push(Buffer.alloc(1024));
          this.destroy(new Error('source broke'));
        },
      });
      await assert.rejects(backend.put('backups/f/db/x', failing), /source broke/);
      assert.equal(await backend.stat('backups/f/db/x'), undefined);
      assert.deepEqual(await backend.list(''), []);
      if (env.leftovers) assert.deepEqual(await env.leftovers(), []);
    });

    it('an aborted put leaves nothing behind', async () => {
      const ac = new AbortController();
      const slow = new Readable({ read() {} });
      slow.push(Buffer.alloc(1024));
      const p = backend.put('backups/g/db/x', slow, { signal: ac.signal });
      setTimeout(() => ac.abort(new Error('cancelled')), 50);
      await assert.rejects(p);
      assert.equal(await backend.stat('backups/g/db/x'), undefined);
      if (env.leftovers) assert.deepEqual(await env.leftovers(), []);
    });

    it('get of a missing key throws NotFoundError; stat returns undefined', async () => {
      await assert.rejects(backend.get('nope/x'), NotFoundError);
      assert.equal(await backend.stat('nope/x'), undefined);
    });

    it('list by prefix is sorted; delete and deletePrefix are idempotent', async () => {
      for (const k of ['backups/b/2', 'backups/b/1', 'backups/c/1', 'other/1'])
        await backend.put(k, Readable.from([Buffer.from(k)]));
      assert.deepEqual(await backend.list('backups/b/'), ['backups/b/1', 'backups/b/2']);
      assert.deepEqual(await backend.list('backups/'), ['backups/b/1', 'backups/b/2', 'backups/c/1']);
      await backend.delete('backups/b/1');
      await backend.delete('backups/b/1');
      await backend.deletePrefix('backups/b/');
      await backend.deletePrefix('backups/b/');
      assert.deepEqual(await backend.list(''), ['backups/c/1', 'other/1']);
    });

    it('refuses unsafe keys', async () => {
      for (const k of ['../x', '/abs', 'a/../../b', '']) {
        await assert.rejects(backend.put(k, Readable.from([Buffer.from('x')])), InvalidArgumentError);
        await assert.rejects(backend.get(k), InvalidArgumentError);
      }
    });
  });
}

storageConformance('local', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'envsnap-local-'));
  const root = join(dir, 'repo');
  return {
    backend: await LocalBackend.open('local', root),
    cleanup: () => rm(dir, { recursive: true, force: true }),
    leftovers: () => readdir(join(root, '.tmp')),
  };
});

describe('local location: putFromDescriptor (a tool writes the file itself)', () => {
  let dir: string;
  let backend: LocalBackend;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'envsnap-local-fd-'));
    backend = await LocalBackend.open('local', join(dir, 'repo'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('stores what a process writes to its stdout, with the size and SHA-256 read back as it grew', async () => {
    // 12 MiB from a real process, slowly enough that the file is read back while it grows.
    const script = 'for i in $(seq 1 12); do head -c 1048576 /dev/zero | tr "\\0" "x"; sleep 0.02; done';
    const seen: number[] = [];
    const r = await backend.putFromDescriptor(
      'backups/a/m/files.tar.zst',
      async (fd) => {
        const child = spawn('bash', ['-c', script], { stdio: ['ignore', fd, 'inherit'] });
        const [code] = (await once(child, 'exit')) as [number];
        assert.equal(code, 0);
      },
      { onBytes: (n) => seen.push(n) },
    );
    const expected = Buffer.alloc(12 * 1024 * 1024, 'x');
    assert.deepEqual(r, {
      sizeBytes: expected.length,
      sha256: createHash('sha256').update(expected).digest('hex'),
    });
    assert.deepEqual(await readAll(await backend.get('backups/a/m/files.tar.zst')), expected);
    assert.ok(seen.length > 1 && seen.at(-1) === expected.length, `progress: ${seen.join(',')}`);
    assert.deepEqual(await readdir(join(dir, 'repo', '.tmp')), []);
  });

  it("a writer's failure leaves nothing behind and is what put rejects with", async () => {
    const p = backend.putFromDescriptor('backups/f/m/x', async (fd) => {
      const child = spawn('bash', ['-c', 'echo partial; exit 3'], { stdio: ['ignore', fd, 'inherit'] });
      await once(child, 'exit');
      throw new Error('the compressor failed');
    });
    await assert.rejects(p, /the compressor failed/);
    assert.equal(await backend.stat('backups/f/m/x'), undefined);
    assert.deepEqual(await readdir(join(dir, 'repo', '.tmp')), []);
  });
});
