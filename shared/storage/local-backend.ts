import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { NotFoundError, UploadDiscardedError } from '../errors.js';
import { readGrowingFile } from '../growing-file.js';
import type { PutResult, StorageBackend } from './backend.js';
import { checkKey } from './keys.js';

const TMP_DIR = '.tmp';

/**
 * The embedded default location: a directory on the controller's disk.
 *
 * Objects are files under `root`; `put` writes `root/.tmp/<random>` (flushing
 * it to disk as it grows, see `Flusher`), fsyncs it, renames it into place
 * and fsyncs the parent directory, so a crash leaves either the old state or
 * the whole object. Leftover temporary files from a
 * crash are removed by `open()`.
 */
export class LocalBackend implements StorageBackend {
  readonly name: string;
  readonly root: string;

  private constructor(name: string, root: string) {
    this.name = name;
    this.root = root;
  }

  /** Opens (creating if needed) a local repository at `root`, an absolute path. */
  static async open(name: string, root: string): Promise<LocalBackend> {
    await mkdir(join(root, TMP_DIR), { recursive: true, mode: 0o700 });
    await rm(join(root, TMP_DIR), { recursive: true, force: true });
    await mkdir(join(root, TMP_DIR), { recursive: true, mode: 0o700 });
    return new LocalBackend(name, root);
  }

  /**
   * Uses a repository another process owns (an agent writing the
   * controller's directory straight): unlike `open`, it neither creates
   * `root` nor empties `root/.tmp`, where the owner's uploads may be in
   * progress. `put` creates `.tmp` again if it is missing.
   */
  static attach(name: string, root: string): LocalBackend {
    return new LocalBackend(name, root);
  }

  /** The directory of temporary files (`put` writes there, then renames into place). */
  get tmpDir(): string {
    return join(this.root, TMP_DIR);
  }

  private path(key: string): string {
    return join(this.root, ...checkKey(key).split('/'));
  }

  /**
   * Stores `data` under `key` atomically (see the class comment).
   *
   * @param opts.skipDigest the caller computes the SHA-256 itself as the bytes
   *   pass (the agent's one-pass tee): the result's `sha256` is then `''`.
   */
  async put(
    key: string,
    data: Readable,
    opts?: { signal?: AbortSignal; skipDigest?: boolean },
  ): Promise<PutResult> {
    const hash = opts?.skipDigest ? undefined : createHash('sha256');
    return this.store(key, async (fh, flusher) => {
      let size = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hash?.update(chunk);
          size += chunk.length;
          flusher.wrote(size);
          cb(null, chunk);
        },
      });
      // By descriptor: a FileHandle's own stream with autoClose off keeps it from closing.
      const out = createWriteStream('', { fd: fh.fd, autoClose: false });
      await pipeline(data, meter, out, { signal: opts?.signal });
      return { sizeBytes: size, sha256: hash ? hash.digest('hex') : '' };
    });
  }

  /**
   * Stores under `key`, atomically like `put`, what `fill` writes into a file descriptor: `fill`
   * hands it to a process as its stdout (the compressor of an agent that writes this location
   * straight), so the bytes go from that process to the file without passing through this one.
   * `fill` resolves once the writer is done (the process exited); the descriptor stays open until
   * then and is closed here. Meanwhile the file is read back as it grows, in 1 MiB reads from the
   * page cache, for its size and SHA-256 and to flush it to disk as it grows (as `put` does).
   *
   * Measured on the 806 MB benchmark mount (286 MB stored, 2 cores): 0.5 s of this process's CPU
   * against 1.8-2.0 s for the same bytes read from the compressor's stdout and written with `put`
   * (about 10,000 socket reads of 30 KB, a stream chunk and a thread-pool write each).
   *
   * @param opts.onBytes called with the bytes stored so far, as they are read back (progress).
   * @throws what `fill` rejects with, after the temporary file is removed; UploadDiscardedError as `put`.
   */
  async putFromDescriptor(
    key: string,
    fill: (fd: number) => Promise<void>,
    opts?: { signal?: AbortSignal; onBytes?: (n: number) => void },
  ): Promise<PutResult> {
    return this.store(key, async (fh, flusher) => {
      const filling = fill(fh.fd);
      // Its failure is thrown below; never an unhandled rejection while a read is awaited.
      filling.catch(() => undefined);
      try {
        const hash = createHash('sha256');
        let size = 0;
        for await (const chunk of readGrowingFile(fh, filling, {
          chunkBytes: READ_BACK_BYTES,
          signal: opts?.signal,
          // Each chunk is hashed and counted before the next read.
          reuseBuffer: true,
        })) {
          hash.update(chunk);
          size += chunk.length;
          flusher.wrote(size);
          opts?.onBytes?.(size);
        }
        return { sizeBytes: size, sha256: hash.digest('hex') };
      } finally {
        // Settled either way before the descriptor closes; its failure is what the caller sees.
        await filling;
      }
    });
  }

  /**
   * The atomic write both `put` and `putFromDescriptor` use: `write` fills `root/.tmp/<random>`
   * through `fh`, which is then flushed, renamed into place and its directory flushed; a failure
   * removes the temporary file.
   */
  private async store(
    key: string,
    write: (fh: FileHandle, flusher: Flusher) => Promise<PutResult>,
  ): Promise<PutResult> {
    const target = this.path(key);
    const tmp = join(this.root, TMP_DIR, tmpName(key));
    const flusher = new Flusher();
    let result: PutResult;
    try {
      await mkdir(join(this.root, TMP_DIR), { recursive: true, mode: 0o700 });
      // Read and write: putFromDescriptor reads the file back as it grows.
      const fh = await open(tmp, 'w+', 0o600);
      try {
        flusher.file = fh;
        result = await write(fh, flusher);
        await flusher.settled();
        await fh.sync();
      } finally {
        await flusher.settled().catch(() => undefined);
        await fh.close();
      }
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
      await rename(tmp, target).catch(async (err: NodeJS.ErrnoException) => {
        // Our own temporary file is gone: deletePrefix removed it (see UploadDiscardedError).
        if (
          err.code === 'ENOENT' &&
          !(await stat(tmp).then(
            () => true,
            () => false,
          ))
        )
          throw new UploadDiscardedError(
            `${key} was discarded while it was written to storage "${this.name}" (its temporary file was removed)`,
            { cause: err },
          );
        throw err;
      });
      await syncDir(dirname(target));
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    return result;
  }

  async get(key: string): Promise<Readable> {
    const p = this.path(key);
    const fh = await open(p, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new NotFoundError(`object ${key} not found in storage "${this.name}"`);
      throw err;
    });
    return createReadStream('', { fd: fh, highWaterMark: 1024 * 1024 });
  }

  async stat(key: string): Promise<{ sizeBytes: number } | undefined> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? { sizeBytes: s.size } : undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for (const e of entries) {
        const full = join(dir, e.name);
        if (e.isDirectory()) {
          if (dir === this.root && e.name === TMP_DIR) continue;
          await walk(full);
        } else if (e.isFile()) {
          const key = relative(this.root, full).split(sep).join('/');
          if (key.startsWith(prefix)) out.push(key);
        }
      }
    };
    await walk(this.root);
    return out.sort();
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }

  /**
   * Deletes every object under `prefix`, and the uploads in progress to keys
   * under it (their temporary files: a writer that was killed, or is still
   * writing, e.g. an agent whose task was given up; its rename then fails).
   */
  async deletePrefix(prefix: string): Promise<void> {
    checkKey(prefix, true);
    const pending = encodeURIComponent(prefix);
    const tmp = await readdir(join(this.root, TMP_DIR)).catch(() => [] as string[]);
    for (const name of tmp) {
      if (name.startsWith(pending)) await rm(join(this.root, TMP_DIR, name), { force: true });
    }
    if (prefix.endsWith('/')) {
      await rm(join(this.root, ...prefix.slice(0, -1).split('/')), { recursive: true, force: true });
      return;
    }
    for (const key of await this.list(prefix)) await this.delete(key);
  }

  async close(): Promise<void> {
    // Nothing is held open between calls.
  }
}

/** Bytes per read when `putFromDescriptor` reads a file back as it grows. */
const READ_BACK_BYTES = 1024 * 1024;

/** Bytes written to an object's file between two background flushes (see {@link Flusher}). */
const FLUSH_EVERY_BYTES = 32 * 1024 * 1024;

/**
 * Flushes a file being written to disk as it grows: `fdatasync` in the background each time
 * {@link FLUSH_EVERY_BYTES} more were written (one at a time; writes go on meanwhile), so that the
 * final `fsync` of `put` has at most about that much left to write, instead of the whole object
 * (the kernel otherwise keeps it all dirty in the page cache until then). The first error is kept
 * and thrown by {@link Flusher.settled}: after a failed flush the final fsync may report success.
 */
class Flusher {
  file: FileHandle | undefined;
  private flushedAt = 0;
  private running: Promise<void> | undefined;
  private error: { cause: unknown } | undefined;

  /** Called with the bytes written so far; starts a flush when due and none runs. */
  wrote(bytes: number): void {
    if (!this.file || this.running || bytes - this.flushedAt < FLUSH_EVERY_BYTES) return;
    this.flushedAt = bytes;
    this.running = this.file.datasync().then(
      () => {
        this.running = undefined;
      },
      (err: unknown) => {
        this.error ??= { cause: err };
        this.running = undefined;
      },
    );
  }

  /** Waits for the flush in progress; throws the first flush's error, if one failed. */
  async settled(): Promise<void> {
    await this.running;
    if (this.error) throw this.error.cause;
  }
}

/**
 * A temporary file's name for an upload to `key`: the key, URI-encoded (so
 * that `deletePrefix` finds the uploads in progress under a prefix), and a
 * random suffix; just the random part for a key too long for a file name.
 */
function tmpName(key: string): string {
  const random = randomBytes(8).toString('hex');
  const encoded = encodeURIComponent(key);
  return encoded.length <= 200 ? `${encoded}.${random}` : random;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
