/**
 * StreamHeadReplay with real child processes as the first reader (as pg_restore reads only an
 * archive's table of contents): the replay gives back every byte from the first on, the stream is
 * held (not read to its end) until the replay, the spool is private and removed, and the input's
 * errors reach the replay's reader.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { StreamHeadReplay } from '../../agent/engines/stream-head-replay.js';
import { spawnTool } from '../../agent/tool-process.js';

/** A tool that reads `bytes` of its stdin (`0`: all of it), then exits 0. */
function reader(bytes: number) {
  return spawnTool('sh', ['-c', bytes > 0 ? `head -c ${bytes} >/dev/null` : 'cat >/dev/null'], {
    stdio: ['pipe', 'ignore'],
    debianPackage: 'dash',
  });
}

/** `data` in 64 KiB chunks; `pulled()` says how many bytes the consumer has taken so far. */
function chunked(data: Buffer, failAt?: number): { input: Readable; pulled: () => number } {
  let pulled = 0;
  const input = Readable.from(
    (function* () {
      for (let at = 0; at < data.length; at += 64 * 1024) {
        if (failAt !== undefined && at >= failAt) throw new Error('artifact checksum mismatch');
        const chunk = data.subarray(at, at + 64 * 1024);
        pulled += chunk.length;
        yield chunk;
      }
    })(),
    { objectMode: false, highWaterMark: 64 * 1024 },
  );
  return { input, pulled: () => pulled };
}

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

describe('StreamHeadReplay', () => {
  let work: string;
  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), 'envsnap-replay-'));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('replays the whole stream after a first reader that stopped early, holding the rest until then', async () => {
    const data = randomBytes(8 * 1024 * 1024);
    const { input, pulled } = chunked(data);
    const replay = await StreamHeadReplay.open(input, work);
    const first = reader(5000);
    await replay.feedHead(first.child.stdin!);
    await first.wait();
    const [dir] = await readdir(work);
    assert.ok(dir, 'a spool directory in the work directory');
    assert.equal((await stat(join(work, dir, 'head'))).mode & 0o777, 0o600);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(pulled() < 2 * 1024 * 1024, `the stream was held, but ${pulled()} bytes were read`);

    const again = await collect(await replay.replay());
    assert.ok(again.equals(data), 'the replay is byte for byte the stream');
    await replay.finished();
    await replay.dispose();
    assert.deepEqual(await readdir(work), []);
  });

  it('ends the first reader when the stream is shorter than what it reads, and replays it all', async () => {
    const data = randomBytes(100_000);
    const replay = await StreamHeadReplay.open(chunked(data).input, work);
    const first = reader(0);
    await replay.feedHead(first.child.stdin!);
    await first.wait();
    assert.ok((await collect(await replay.replay())).equals(data));
    await replay.dispose();
    assert.deepEqual(await readdir(work), []);
  });

  it("fails the replay with the input's error, and removes the spool", async () => {
    const data = randomBytes(4 * 1024 * 1024);
    const replay = await StreamHeadReplay.open(chunked(data, 3 * 1024 * 1024).input, work);
    const first = reader(1000);
    await replay.feedHead(first.child.stdin!);
    await first.wait();
    await assert.rejects(collect(await replay.replay()), /checksum mismatch/);
    await assert.rejects(replay.finished(), /checksum mismatch/);
    await replay.dispose();
    assert.deepEqual(await readdir(work), []);
  });

  it('stops the input when disposed before the replay (a failed first step)', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    const { input, pulled } = chunked(data);
    const replay = await StreamHeadReplay.open(input, work);
    const first = reader(1000);
    await replay.feedHead(first.child.stdin!);
    await first.wait();
    await replay.dispose();
    await assert.rejects(replay.finished());
    assert.ok(input.destroyed, 'the input was stopped');
    assert.ok(pulled() < data.length);
    assert.deepEqual(await readdir(work), []);
  });
});
