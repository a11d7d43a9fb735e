/**
 * Reading the start of a stream twice without holding the stream in memory.
 *
 * The PostgreSQL restore (postgresql.ts) runs two `pg_restore` processes on one archive stream:
 * the first reads only the archive's header and table of contents, which come first in a
 * custom-format archive, and exits; the second needs the archive from its first byte. Each reads
 * through a decompressor of its own (or `cat` for a raw archive), so the stream given here is the
 * artifact as stored, still compressed, and the first reader is the first decompressor. A
 * {@link StreamHeadReplay} gives the first reader the stream while writing every byte it hands
 * on to a spool file; once the first reader has closed its end (or the stream ended), it holds the
 * stream (backpressure, nothing more is read) until {@link StreamHeadReplay.replay} serves the
 * spooled start followed by the rest of the stream as one Readable.
 *
 * The spool holds what the first reader was given: the bytes that held the table of contents plus
 * at most a few pipe buffers (about 64 KiB each) past them. It lives in a fresh directory under
 * the task's work directory, mode 0600, and {@link StreamHeadReplay.dispose} removes it.
 */
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** The error the input's pipeline ends with when the replay's reader stopped before the end. */
function readerStopped(): NodeJS.ErrnoException {
  return Object.assign(new Error('the reader of the replayed stream stopped before its end'), {
    code: 'EPIPE',
  });
}

/** Resolves once `stream` can take more (`'drain'`) or will take nothing more (closed, errored). */
function drainedOrClosed(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || stream.writableEnded) return resolve();
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      stream.off('error', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}

/** Bytes read from the spool per chunk of the replay. */
const SPOOL_CHUNK = 64 * 1024;

/** See the file comment. */
export class StreamHeadReplay {
  /** The replay: the spool's bytes, then the input's chunks pushed as they come. */
  private readonly out: Readable;
  private readonly sink: Writable;
  private first: Writable | undefined;
  private firstClosed = false;
  /** The replay has begun: chunks from now on go to `out` (after the spool). */
  private switched = false;
  private spoolAt = 0;
  private spoolDone = false;
  private spoolReading = false;
  private inputEnded = false;
  private replayed = false;
  /** The spool write in progress, if any. */
  private spooling: Promise<unknown> = Promise.resolve();
  private releaseGate: () => void = () => {};
  /** Resolves once the spool has been replayed whole (or the replay stopped). */
  private readonly gate = new Promise<void>((resolve) => (this.releaseGate = resolve));
  /** Wakes a chunk that waits for the replay's reader to want more. */
  private wantMore: (() => void) | undefined;
  private piped: Promise<void> | undefined;
  private headEnded: () => void = () => {};
  private readonly headDone = new Promise<void>((resolve) => (this.headEnded = resolve));

  private constructor(
    private readonly input: Readable,
    private readonly dir: string,
    private readonly spool: FileHandle,
  ) {
    this.sink = new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        this.take(chunk).then(() => callback(), callback);
      },
      final: (callback) => {
        this.inputEnded = true;
        if (this.switched) {
          if (this.spoolDone) this.out.push(null);
        } else if (this.first && !this.firstClosed && !this.first.destroyed) this.first.end();
        this.headEnded();
        callback();
      },
      destroy: (err, callback) => {
        if (err) this.out.destroy(err);
        this.releaseGate();
        this.wake();
        callback(err);
      },
    });
    this.out = new Readable({
      read: () => {
        if (this.spoolDone) this.wake();
        else void this.pushSpool();
      },
      destroy: (err, callback) => {
        this.wake();
        this.releaseGate();
        callback(err);
      },
    });
    this.out.on('error', () => {}); // its reader gets it through its own pipeline
  }

  /**
   * Creates the spool (a new directory under `workDir`, the file mode 0600). `input` is read from
   * {@link feedHead} on. Rejects with the file system's error.
   */
  static async open(input: Readable, workDir: string): Promise<StreamHeadReplay> {
    const dir = await mkdtemp(join(workDir, 'stream-head-'));
    try {
      return new StreamHeadReplay(input, dir, await open(join(dir, 'head'), 'wx+', 0o600));
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Gives the stream to `first` (e.g. a tool's stdin), with its backpressure, until `first`
   * closes or the stream ends (`first` is then ended). Resolves then; rejects with the input's
   * error if it failed before. Call it once.
   */
  feedHead(first: Writable): Promise<void> {
    if (this.piped) throw new Error('a stream head is fed once');
    this.first = first;
    const closed = (): void => {
      this.firstClosed = true;
      this.headEnded();
    };
    if (first.destroyed) closed();
    first.once('close', closed);
    first.once('error', closed); // EPIPE when the reader exited: 'close' follows
    const piped = pipeline(this.input, this.sink);
    piped.catch(() => {}); // reported through this promise, the replay and finished()
    this.piped = piped;
    return Promise.race([this.headDone, piped.then(() => this.headDone)]);
  }

  /**
   * The whole stream from its first byte: the spooled start, then the rest as it arrives. Call it
   * once, after {@link feedHead} resolved. The Readable fails with the input's error.
   */
  async replay(): Promise<Readable> {
    if (this.replayed) throw new Error('a stream head can be replayed once');
    this.replayed = true;
    // Every chunk spooled before the switch is in the file when the replay reads it; every chunk
    // taken after it goes to the reader once the spool has been read.
    for (let pending = this.spooling; ; pending = this.spooling) {
      await pending;
      if (pending === this.spooling) break;
    }
    this.switched = true;
    return this.out;
  }

  /** Resolves when the whole input went through; rejects with its error. */
  finished(): Promise<void> {
    return this.piped ?? Promise.reject(new Error('the stream head was never fed'));
  }

  /** Stops reading the input if it still runs, and removes the spool. Never rejects. */
  async dispose(): Promise<void> {
    if (this.piped && !this.sink.writableFinished) this.sink.destroy(readerStopped());
    this.out.destroy();
    await this.spool.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true }).catch(() => {});
  }

  private wake(): void {
    const wake = this.wantMore;
    this.wantMore = undefined;
    wake?.();
  }

  /** Pushes the spool's next bytes to the replay; at its end, lets the input's chunks follow. */
  private async pushSpool(): Promise<void> {
    if (this.spoolReading) return;
    this.spoolReading = true;
    try {
      const buffer = Buffer.allocUnsafe(SPOOL_CHUNK);
      const { bytesRead } = await this.spool.read(buffer, 0, SPOOL_CHUNK, this.spoolAt);
      this.spoolAt += bytesRead;
      this.spoolReading = false;
      if (bytesRead > 0) {
        this.out.push(buffer.subarray(0, bytesRead));
        return;
      }
      this.spoolDone = true;
      if (this.inputEnded) this.out.push(null);
      this.releaseGate();
    } catch (err) {
      this.out.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private async take(chunk: Buffer): Promise<void> {
    if (this.switched) {
      await this.gate; // the spool first
      if (this.out.destroyed) throw readerStopped();
      if (!this.out.push(chunk)) await new Promise<void>((resolve) => (this.wantMore = resolve));
      return;
    }
    const spooled = this.spool.write(chunk);
    this.spooling = spooled;
    await spooled;
    const first = this.first;
    if (first && !this.firstClosed && !first.destroyed) {
      if (!first.write(chunk)) await drainedOrClosed(first);
      return;
    }
    await this.gate; // the first reader is done: hold the stream until the replay read the spool
  }
}
