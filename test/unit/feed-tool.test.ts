/**
 * feedTool and feedToolThrough with real child processes: a tool that exits before reading all of
 * its input (as pg_restore does with a custom-format archive) succeeds, the input's own errors
 * still surface, and a tool that fails stops its input instead of draining it. Through a filter
 * (a decompressor writing straight into the tool), the filter's broken pipe after the tool's
 * success is no failure, and its own error is the one reported.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';

import { execFileSync } from 'node:child_process';

import { ToolFailedError } from '../../shared/errors.js';
import { feedTool, feedToolThrough, spawnTool } from '../../agent/tool-process.js';

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

describe('feedToolThrough', () => {
  /** `filter` (e.g. zstd -d) started with `tool`'s stdin as its stdout; the agent's end closed. */
  function chain(filterArgs: string[], toolScript: string) {
    const tool = spawnTool('sh', ['-c', toolScript], { stdio: ['pipe', 'ignore'], debianPackage: 'dash' });
    const filter = spawnTool(filterArgs[0]!, filterArgs.slice(1), {
      stdio: ['pipe', tool.child.stdin!],
      debianPackage: 'zstd',
    });
    tool.child.stdin!.destroy();
    return { tool, filter };
  }

  /** 8 MiB of zstd output from a zstd stream, in 64 KiB chunks; `done()` says whether it was all read. */
  function compressedInput(failAtEnd = false) {
    const zst = execFileSync('zstd', ['-q', '-c', '-1'], { input: Buffer.alloc(8 * 1024 * 1024, 'a') });
    let read = 0;
    const input = Readable.from(
      (function* () {
        for (let at = 0; at < zst.length; at += 1024) {
          read = at + 1024;
          yield zst.subarray(at, at + 1024);
        }
        if (failAtEnd) throw new Error('checksum mismatch at the end of the artifact');
      })(),
      { objectMode: false },
    );
    return { input, done: () => read >= zst.length };
  }

  it('succeeds when the tool stops reading early and the filter dies of the broken pipe; the rest is drained', async () => {
    const { tool, filter } = chain(['zstd', '-q', '-d', '-c'], 'head -c 1 >/dev/null');
    const { input, done } = compressedInput();
    await feedToolThrough(input, filter, tool);
    assert.ok(done(), 'the input went through to its end');
  });

  it("reports the input's error at its end, after the tool succeeded", async () => {
    const { tool, filter } = chain(['zstd', '-q', '-d', '-c'], 'cat >/dev/null');
    await assert.rejects(feedToolThrough(compressedInput(true).input, filter, tool), /checksum mismatch/);
  });

  it("reports the filter's own error (a corrupt stream), not the tool's", async () => {
    const { tool, filter } = chain(['zstd', '-q', '-d', '-c'], 'cat >/dev/null; exit 4');
    const input = Readable.from([Buffer.alloc(64 * 1024, 7)], { objectMode: false });
    await assert.rejects(
      feedToolThrough(input, filter, tool),
      (err: unknown) => err instanceof ToolFailedError && /^zstd exited/.test(err.message),
    );
  });

  it('reports the tool that failed, and stops an endless input', async () => {
    const { tool, filter } = chain(['cat'], 'head -c 1 >/dev/null; exit 3');
    const input = new Readable({
      read() {
        setImmediate(() => this.push(Buffer.alloc(16 * 1024, 1)));
      },
    });
    await assert.rejects(
      feedToolThrough(input, filter, tool),
      (err: unknown) => err instanceof ToolFailedError && /exited with status 3/.test(err.message),
    );
    assert.ok(input.destroyed);
  });
});
