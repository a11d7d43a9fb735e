import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { startCompressor, threadShare } from '../../agent/compression.js';
import { spawnTool } from '../../agent/tool-process.js';

const OPTS = { zstdLevel: 3, zstdThreads: 0 };

/** Runs a compressor over `bytes` random bytes that `head -c` writes straight into its stdin. */
async function compressFromTool(name: string, bytes: number): Promise<{ raw?: number; out: Buffer }> {
  const comp = await startCompressor(name, OPTS);
  const chunks: Buffer[] = [];
  comp.child.stdout!.on('data', (c: Buffer) => chunks.push(c));
  // The producer writes straight into the compressor's stdin, as a dump tool does.
  const tool = spawnTool('head', ['-c', String(bytes), '/dev/urandom'], {
    stdio: ['ignore', comp.child.stdin!],
    debianPackage: 'coreutils',
  });
  comp.child.stdin!.destroy();
  await Promise.all([tool.wait(), comp.wait()]);
  return { raw: comp.rawBytes(), out: Buffer.concat(chunks) };
}

describe('compression', () => {
  it('counts the raw bytes a tool wrote straight into zstd, small and large', async () => {
    for (const n of [0, 526, 3 * 1024 * 1024 + 7]) {
      const { raw, out } = await compressFromTool('zstd', n);
      assert.equal(raw, n);
      const back = spawnSync('zstd', ['-dc'], { input: out, maxBuffer: 64 * 1024 * 1024 });
      assert.equal(back.status, 0);
      assert.equal(back.stdout.length, n);
    }
  });

  it('reports no raw size for gzip (pigz does not print one for a stream)', async () => {
    const { raw, out } = await compressFromTool('gzip', 1000);
    assert.equal(raw, undefined);
    assert.equal(spawnSync('gzip', ['-dc'], { input: out }).stdout.length, 1000);
  });

  it('shares the cores among concurrent compressions', () => {
    assert.equal(threadShare(1, 2), 0); // alone: zstd's -T0, every core
    assert.equal(threadShare(2, 2), 1);
    assert.equal(threadShare(4, 2), 1);
    assert.equal(threadShare(2, 8), 4);
    assert.equal(threadShare(3, 8), 2);
  });
});
