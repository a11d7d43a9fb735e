/**
 * readGrowingFile with a real writer process (`sh`, as redis-cli or zstd write their files): bytes
 * come as the file grows, a held-back tail waits for the writer's exit (and is not passed on when the
 * writer cuts it off), a file created late is waited for, the writer's failure is thrown, and the
 * reused buffer of `reuseBuffer` gives the same bytes.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { spawnTool } from '../../agent/tool-process.js';
import { ToolFailedError } from '../../shared/errors.js';
import { readGrowingFile } from '../../shared/growing-file.js';

/** Runs `script` in sh (file paths as $1, $2); resolves when it exited 0, rejects with its failure. */
function writer(script: string, ...args: string[]): Promise<void> {
  const tool = spawnTool('sh', ['-c', script, 'sh', ...args], {
    stdio: ['ignore', 'ignore'],
    debianPackage: 'dash',
  });
  return tool.wait().then(() => undefined);
}

async function readAll(gen: AsyncGenerator<Buffer>): Promise<{ data: Buffer; chunks: number }> {
  const parts: Buffer[] = [];
  for await (const chunk of gen) parts.push(chunk);
  return { data: Buffer.concat(parts), chunks: parts.length };
}

describe('readGrowingFile', function () {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'envsnap-growing-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads a file created late and appended in steps, to its final end', async () => {
    const part = join(dir, 'part');
    await writeFile(part, randomBytes(300 * 1024));
    const file = join(dir, 'out');
    const done = writer('sleep 0.1; for i in 1 2 3 4; do cat "$2" >> "$1"; sleep 0.05; done', file, part);
    const { data, chunks } = await readAll(readGrowingFile(file, done, { chunkBytes: 256 * 1024 }));
    assert.equal(data.length, 4 * 300 * 1024);
    assert.ok(chunks > 1, `read in ${chunks} chunk(s)`);
  });

  it('with reuseBuffer, yields the same bytes as views of one buffer', async () => {
    const part = join(dir, 'part');
    const body = randomBytes(300 * 1024);
    await writeFile(part, body);
    const file = join(dir, 'out');
    const done = writer('for i in 1 2 3; do cat "$2" >> "$1"; sleep 0.05; done', file, part);
    const hash = createHash('sha256');
    const buffers = new Set<ArrayBufferLike>();
    let chunks = 0;
    for await (const chunk of readGrowingFile(file, done, { chunkBytes: 256 * 1024, reuseBuffer: true })) {
      hash.update(chunk);
      buffers.add(chunk.buffer);
      chunks++;
    }
    const expected = createHash('sha256')
      .update(Buffer.concat([body, body, body]))
      .digest('hex');
    assert.equal(hash.digest('hex'), expected);
    assert.ok(chunks > 3, `read in ${chunks} chunk(s)`);
    assert.equal(buffers.size, 1, 'every chunk is a view of the same buffer');
  });

  it('holds back the tail until the writer exited, and never passes on what the writer cut off', async () => {
    const file = join(dir, 'out');
    // Body, then a 40-byte trailer, a pause (the reader catches up), then the trailer is cut off.
    const done = writer(
      'head -c 100000 /dev/zero > "$1"; printf "%040d" 7 >> "$1"; sleep 0.3; truncate -s 100000 "$1"',
      file,
    );
    const { data } = await readAll(readGrowingFile(file, done, { holdBackBytes: 40 }));
    assert.equal(data.length, 100_000);
    assert.ok(data.every((b) => b === 0));
  });

  it("throws the writer's failure, and ENOENT when the writer never created the file", async () => {
    await assert.rejects(
      readAll(readGrowingFile(join(dir, 'out'), writer('echo partial > "$1"; exit 3', join(dir, 'out')))),
      (err: unknown) => err instanceof ToolFailedError,
    );
    await assert.rejects(readAll(readGrowingFile(join(dir, 'never'), writer('true'))), { code: 'ENOENT' });
  });

  it('stops with the signal when aborted', async () => {
    const file = join(dir, 'out');
    const slow = writer('echo a > "$1"; sleep 0.5', file);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('stopped')), 100);
    await assert.rejects(readAll(readGrowingFile(file, slow, { signal: ac.signal })), /stopped/);
    await slow;
  });
});
