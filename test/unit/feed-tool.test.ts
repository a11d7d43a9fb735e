/**
 * feedTool with real child processes: a tool that exits before reading all of its input (as
 * pg_restore does with a custom-format archive) succeeds, the input's own errors still surface,
 * and a tool that fails stops its input instead of draining it.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';

import { ToolFailedError } from '../../shared/errors.js';
import { feedTool, spawnTool } from '../../agent/tool-process.js';

/** A tool that reads one byte of its stdin, then exits with `status`. */
function readsOneByte(status = 0) {
  return spawnTool('sh', ['-c', `head -c 1 >/dev/null; exit ${status}`], {
    stdio: ['pipe', 'ignore'],
    debianPackage: 'dash',
  });
}

describe('feedTool', () => {
  it('succeeds when the tool exits 0 before reading all of its input, and drains the rest', async () => {
    const proc = readsOneByte();
    let sentAfterExit = 0;
    const input = Readable.from(
      (async function* () {
        yield Buffer.from('x');
        await proc.wait(); // the tool is gone: its stdin is closed
        for (let i = 0; i < 64; i++) {
          sentAfterExit += 64 * 1024;
          yield Buffer.alloc(64 * 1024, 1);
        }
      })(),
      { objectMode: false },
    );
    await feedTool(input, proc);
    assert.equal(sentAfterExit, 64 * 64 * 1024, 'the unread input was drained');
  });

  it("reports the input's error even when the tool already exited 0", async () => {
    const proc = readsOneByte();
    const input = Readable.from(
      (async function* () {
        yield Buffer.from('x');
        await proc.wait();
        yield Buffer.from('more');
        throw new Error('checksum mismatch at the end of the artifact');
      })(),
      { objectMode: false },
    );
    await assert.rejects(feedTool(input, proc), /checksum mismatch/);
  });

  it('reports the tool that failed, and stops an endless input instead of draining it', async () => {
    const proc = readsOneByte(3);
    const input = new Readable({
      read() {
        setImmediate(() => this.push(Buffer.alloc(16 * 1024, 1)));
      },
    });
    await assert.rejects(
      feedTool(input, proc),
      (err: unknown) => err instanceof ToolFailedError && /exited with status 3/.test(err.message),
    );
    assert.ok(input.destroyed);
  });

  it('kills the tool when the input fails, and reports the input error', async () => {
    const proc = spawnTool('cat', [], { stdio: ['pipe', 'ignore'], debianPackage: 'coreutils' });
    const input = Readable.from(
      (async function* () {
        yield Buffer.from('partial');
        await new Promise((r) => setTimeout(r, 50));
        throw new Error('zstd: corrupted block');
      })(),
      { objectMode: false },
    );
    await assert.rejects(feedTool(input, proc), /corrupted block/);
    assert.notEqual(proc.child.signalCode ?? proc.child.exitCode, 0);
  });
});
