/**
 * Reading the start of a stream twice without holding the stream in memory.
 *
 * The PostgreSQL restore (postgresql.ts) runs two `pg_restore` processes on one archive stream:
 * the first reads only the archive's header and table of contents, which come first in a
 * custom-format archive, and exits; the second needs the archive from its first byte. A
 * {@link StreamHeadReplay} gives the first reader the stream while writing every byte it hands
 * on to a spool file; once the first reader has closed its end (or the stream ended), it holds the
 * stream (backpressure, nothing more is read) until {@link StreamHeadReplay.replay} serves the
 * spooled start followed by the rest of the stream as one Readable.
 *
 * The spool holds what the first reader was given: its table of contents plus at most a few
 * pipe buffers (about 64 KiB each) past it. It lives in a fresh directory under the task's work
 * directory, mode 0600, and {@link StreamHeadReplay.dispose} removes it.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
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

/** See the file comment. */
export class StreamHeadReplay {
  private readonly rest = new PassThrough();
  private readonly sink: Writable;
  private first: Writable | undefined;
  private firstClosed = false;
  private switched = false;
  private inputEnded = false;
  private replayed = false;
  /** The spool write in progress, if any. */
  private spooling: Promise<unknown> = Promise.resolve();
  private releaseGate: () => void = () => {};
  private readonly gate = new Promise<void>((resolve) => (this.releaseGate = resolve));
  private piped: Promise<void> | undefined;
  private headEnded: () => void = () => {};
  private readonly headDone = new Promise<void>((resolve) => (this.headEnded = resolve));

  private constructor(
    private readonly input: Readable,
    private readonly dir: string,
    private readonly spoolPath: string,
    private readonly spool: FileHandle,
  ) {
    this.sink = new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        this.take(chunk).then(() => callback(), callback);
      },
      final: (callback) => {
        this.inputEnded = true;
        if (this.switched) this.rest.end();
        else if (this.first && !this.firstClosed && !this.first.destroyed) this.first.end();
        this.headEnded();
        callback();
      },
      destroy: (err, callback) => {
        if (err) this.rest.destroy(err);
        this.releaseGate();
        callback(err);
      },
    });
    this.rest.on('error', () => {}); // the replay's reader gets it through its iterator
  }

  /**
   * Creates the spool (a new directory under `workDir`, the file mode 0600). `input` is read from
   * {@link feedHead} on. Rejects with the file system's error.
   */
  static async open(input: Readable, workDir: string): Promise<StreamHeadReplay> {
    const dir = await mkdtemp(join(workDir, 'stream-head-'));
    try {
      const path = join(dir, 'head');
      return new StreamHeadReplay(input, dir, path, await open(path, 'wx', 0o600));
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
    await this.spooling;
    this.switched = true;
    if (this.inputEnded) this.rest.end();
    this.releaseGate();
    const { spoolPath, rest } = this;
    return Readable.from(
      (async function* () {
        yield* createReadStream(spoolPath);
        yield* rest;
      })(),
      { objectMode: false },
    );
  }

  /** Resolves when the whole input went through; rejects with its error. */
  finished(): Promise<void> {
    return this.piped ?? Promise.reject(new Error('the stream head was never fed'));
  }

  /** Stops reading the input if it still runs, and removes the spool. Never rejects. */
  async dispose(): Promise<void> {
    if (this.piped && !this.sink.writableFinished) this.sink.destroy(readerStopped());
    this.rest.destroy();
    await this.spool.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true }).catch(() => {});
  }

  private async take(chunk: Buffer): Promise<void> {
    if (this.switched) {
      if (this.rest.destroyed) throw readerStopped();
      if (!this.rest.write(chunk)) await drainedOrClosed(this.rest);
      if (this.rest.destroyed) throw readerStopped();
      return;
    }
    const spooled = this.spool.write(chunk);
    this.spooling = spooled;
    await spooled;
    // Spooled before the replay began reading the file: the replay serves it from there.
    if (this.switched) return;
    const first = this.first;
    if (first && !this.firstClosed && !first.destroyed) {
      if (!first.write(chunk)) await drainedOrClosed(first);
      return;
    }
    await this.gate; // the first reader is done: hold the stream until the replay
  }
}
