/**
 * Reading a file while another process writes it, front to back: the way envsnap gets bytes a tool
 * writes into a file (a compressor writing a local repository's object, `redis-cli --rdb FILE`)
 * without waiting for the tool to finish and without the bytes passing through a pipe first.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';

/** Options of {@link readGrowingFile}. */
export interface GrowingFileOptions {
  /**
   * Bytes at the end of the file held back until the writer is done, for a writer that cuts a
   * trailer off its file when it finishes (redis-cli truncates the 40-byte end mark of a diskless
   * transfer). Default 0.
   */
  holdBackBytes?: number;
  /** Bytes per read. Default 1 MiB. */
  chunkBytes?: number;
  /**
   * A read shorter than this waits `pollMs` before the next one, so that a reader ahead of a slow
   * writer does not chase it a few kilobytes at a time. Default 0 (wait only at the file's end).
   */
  minChunkBytes?: number;
  /** How long to wait before looking again when there is nothing new to read, in milliseconds. Default 10. */
  pollMs?: number;
  /** Aborting stops the reading with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Read every chunk into one buffer of `chunkBytes`, allocated once: each yielded Buffer is a view
   * of it, valid only until the next one is asked for. For a caller that is done with a chunk
   * when it asks for the next (a hash): no fresh memory per read. Default false.
   */
  reuseBuffer?: boolean;
}

/**
 * Yields the bytes of `file` as its writer appends them, until `writerDone` has settled and the
 * file's end was read. The writer must only append (it may cut off the last `holdBackBytes` when
 * it finishes): no byte yielded is ever rewritten. Each yielded Buffer is the caller's own, unless
 * `reuseBuffer` is set.
 *
 * @param file an open FileHandle (read by position, left open), or a path, opened once it exists
 *   (the writer may create it after this starts) and closed at the end.
 * @param writerDone settles when the writer is done (its process exited); once it has, the file's
 *   size is final.
 * @throws what `writerDone` rejects with (the writer's failure), the signal's reason when aborted,
 *   and the file system's errors (ENOENT when the writer finished without creating the file).
 */
export async function* readGrowingFile(
  file: FileHandle | string,
  writerDone: Promise<unknown>,
  opts: GrowingFileOptions = {},
): AsyncGenerator<Buffer> {
  const chunkBytes = opts.chunkBytes ?? 1024 * 1024;
  const holdBack = opts.holdBackBytes ?? 0;
  const pollMs = opts.pollMs ?? 10;
  let ended = false;
  const settled = writerDone.then(
    () => {
      ended = true;
    },
    (err: unknown) => {
      ended = true;
      throw err;
    },
  );
  settled.catch(() => undefined); // thrown below, at the next look
  const pause = (): Promise<unknown> => Promise.race([delay(pollMs), settled.catch(() => undefined)]);
  let fh = typeof file === 'string' ? undefined : file;
  let pos = 0;
  let buffer: Buffer | undefined;
  try {
    for (;;) {
      opts.signal?.throwIfAborted();
      // Taken before the size is read: once the writer was done, the size read after is final.
      const last = ended;
      if (last) await settled; // throws the writer's failure
      if (!fh) {
        fh = await open(file as string, 'r').catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT' || last) throw err;
          return undefined;
        });
        if (!fh) {
          await pause();
          continue;
        }
      }
      const size = (await fh.stat()).size;
      const readable = (last ? size : size - holdBack) - pos;
      if (readable > 0) {
        const length = Math.min(readable, chunkBytes);
        const chunk = opts.reuseBuffer
          ? (buffer ??= Buffer.allocUnsafe(chunkBytes)).subarray(0, length)
          : Buffer.allocUnsafe(length);
        const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
        pos += bytesRead;
        yield chunk.subarray(0, bytesRead);
        if (!last && bytesRead < (opts.minChunkBytes ?? 0)) await pause();
      } else if (last) return;
      else await pause();
    }
  } finally {
    if (typeof file === 'string') await fh?.close();
  }
}
