import { PassThrough, Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type * as grpc from '@grpc/grpc-js';
import type { WireArtifact } from '../shared/wire.js';
import { startCompressor, startDecompressor, threadShare, type CompressionOptions } from './compression.js';
import { SCHEME, checkKeyFor, startDecryptor, startEncryptor, type EncryptionKey } from './encryption.js';
import type { StorageBackend } from '../shared/storage/backend.js';
import type { ArtifactSinks } from './artifact-sinks.js';
import { downloadArtifact, downloadFromStorage, uploadArtifact, type UploadOutcome } from './transfer.js';

/** Settles every promise, then rejects with the first failure (so none is left unhandled). */
export async function allOrFirstError(
  promises: Array<Promise<unknown>>,
  onFirstError: () => void,
): Promise<void> {
  let first: unknown;
  let failed = false;
  await Promise.all(
    promises.map((p) =>
      p.catch((err: unknown) => {
        if (!failed) {
          failed = true;
          first = err;
          onFirstError();
        }
      }),
    ),
  );
  if (failed) throw first;
}

/** Where an artifact's raw (uncompressed) bytes come from. */
export type RawSource =
  /**
   * A tool started by `start` with `into`, the compressor's stdin, as its stdout (`Engine.dump`):
   * the raw bytes go from process to process through a kernel pipe and never enter the agent.
   * `start` owns `into` (it closes the agent's end); `wait` settles when the tool has exited.
   */
  | { start: (into: Writable) => Promise<{ wait(): Promise<unknown>; kill(): void }> }
  /**
   * Bytes made in the agent (the mount archive, agent/mount-archive.ts `writeMountArchive`): `write`
   * writes them into `into`, the compressor's stdin, and ends it; `done` settles when it has (or
   * failed), `stop` makes it stop early, and `written()` counts the bytes written so far.
   */
  | { write: (into: Writable) => { done: Promise<unknown>; stop: () => void; written: () => number } };

/**
 * Compresses raw bytes and uploads them as one artifact: dump tool -> compressor process (zstd on
 * every core, or pigz) -> SHA-256 -> controller, or the locations the agent writes straight
 * (`sinks`). When the only location is a local directory written straight, the compressor (or the
 * encryptor after it) writes the artifact's file itself and the agent reads it back for the
 * SHA-256 (ArtifactSinks.writeFromDescriptor): the stored bytes never pass through a pipe into the
 * agent. Nothing is held whole in memory; backpressure runs from the storage back to the dump tool.
 *
 * The artifact's `rawBytes` is exact for zstd (its own count) and for a source the agent writes
 * (its count); 0 (not known) for gzip from a tool, which writes past the agent.
 *
 * Each compression running on the agent at once gets an equal share of the cores (threadShare)
 * unless `agent.zstd_threads` sets a count.
 */
export async function compressAndUpload(opts: {
  client: grpc.Client;
  backupId: string;
  taskId: string;
  /** The task's dump-lock fencing token (0: none); the controller refuses a stale one. */
  fencingToken?: number;
  artifact: Omit<WireArtifact, 'sizeBytes' | 'sha256' | 'rawBytes'>;
  source: RawSource;
  compression: CompressionOptions;
  /** When set, the compressed bytes are encrypted with age before they leave the node. */
  encryption?: EncryptionKey;
  signal: AbortSignal;
  onBytes: (stored: number) => void;
  /**
   * The task's locations when some are written straight (s3): the stored
   * bytes are teed to each in one pass. Absent: uploaded to the controller,
   * which stores them in every location.
   */
  sinks?: ArtifactSinks;
}): Promise<WireArtifact> {
  compressing++;
  try {
    return await compress(opts);
  } finally {
    compressing--;
  }
}

/** Compressions running now in this agent process; each gets a share of the cores. */
let compressing = 0;

async function compress(opts: Parameters<typeof compressAndUpload>[0]): Promise<WireArtifact> {
  const threads = opts.compression.zstdThreads === 0 ? threadShare(compressing) : undefined;
  const artifact = opts.encryption
    ? { ...opts.artifact, encryption: SCHEME, keyFingerprint: opts.encryption.fingerprint }
    : opts.artifact;
  let counted = (): number => 0;
  let rawBytes: () => number | undefined = () => undefined;
  const raw = (): number => rawBytes() ?? counted();
  const progress = { rawBytes: raw, onBytes: opts.onBytes, signal: opts.signal };
  /**
   * Runs source -> compressor (-> encryptor) with the last tool's stdout `output` (a file's
   * descriptor, or a pipe handed to `consume`), until every part is done or one failed.
   */
  const run = async (output: number | 'pipe', consume?: (stored: Readable) => Promise<unknown>) => {
    const src = opts.source;
    const comp = await startCompressor(
      opts.artifact.compression,
      opts.compression,
      opts.signal,
      threads,
      opts.encryption ? 'pipe' : output,
    );
    rawBytes = () => comp.rawBytes();
    let producer: Array<Promise<unknown>>;
    let stopSource: () => void;
    if ('start' in src) {
      let tool: Awaited<ReturnType<typeof src.start>>;
      try {
        tool = await src.start(comp.child.stdin!);
      } catch (err) {
        comp.kill();
        throw err;
      }
      producer = [tool.wait()];
      stopSource = () => tool.kill();
    } else {
      const writing = src.write(comp.child.stdin!);
      counted = writing.written;
      producer = [writing.done];
      stopSource = writing.stop;
    }
    const enc = opts.encryption ? startEncryptor(opts.encryption, opts.signal, output) : undefined;
    const last = enc ?? comp;
    await allOrFirstError(
      [
        ...producer,
        comp.wait(),
        ...(enc ? [pipeline(comp.child.stdout!, enc.child.stdin!), enc.wait()] : []),
        ...(consume ? [consume(last.child.stdout!)] : []),
      ],
      () => {
        stopSource();
        comp.kill();
        enc?.kill();
      },
    );
  };
  let stored: UploadOutcome | undefined;
  const sinks = opts.sinks;
  if (sinks?.takesDescriptor()) {
    // One local location written straight: the last tool writes the file itself (see ArtifactSinks).
    stored = await sinks.writeFromDescriptor(artifact, (fd) => run(fd), progress);
  } else {
    await run('pipe', async (output) => {
      stored = await (sinks
        ? sinks.write(artifact, output, progress)
        : uploadArtifact(
            opts.client,
            {
              backupId: opts.backupId,
              taskId: opts.taskId,
              artifact,
              fencingToken: opts.fencingToken ?? 0,
            },
            output,
            progress,
          ));
    });
  }
  return { ...artifact, sizeBytes: stored!.sizeBytes, sha256: stored!.sha256, rawBytes: raw() };
}

/**
 * Downloads an artifact, decompresses it and hands the raw stream to `apply`
 * (a restore tool or the archive extractor), or, with `applyCompressed`, hands
 * the stored (decrypted, still compressed) stream to that instead, for an
 * engine that decompresses it straight into its own tools
 * (Engine.restoreCompressed). Resolves when the apply is done and the
 * artifact's size and SHA-256 matched the manifest.
 *
 * The stream given ends only once every byte of the artifact has arrived and
 * matched the manifest's size and SHA-256; when they differ it fails with the
 * ArtifactCorruptError instead of ending. An engine that applies nothing to
 * live data before its input ends (a staging database or directory swapped in
 * afterwards) therefore never swaps in a corrupt artifact: the controller
 * relies on this to skip its own read of such an artifact before the restore.
 */
export async function downloadAndApply(opts: {
  client: grpc.Client;
  backupId: string;
  taskId: string;
  artifact: WireArtifact;
  /** Called with the raw stream; needed unless `applyCompressed` is given. */
  apply?: (raw: Readable) => Promise<unknown>;
  /** When set, called with the stored stream instead of `apply` with the raw one. */
  applyCompressed?: (stored: Readable) => Promise<unknown>;
  /** The agent's key; required (with a matching fingerprint) when the artifact is encrypted. */
  encryption?: EncryptionKey;
  signal: AbortSignal;
  onBytes: (n: number) => void;
  /** Read straight from this location (an S3 bucket) and key instead of through the controller. */
  direct?: { storage: StorageBackend; key: string };
}): Promise<void> {
  if (!opts.apply && !opts.applyCompressed)
    throw new Error('downloadAndApply needs apply or applyCompressed');
  checkKeyFor(opts.artifact, opts.encryption);
  const dec = opts.applyCompressed
    ? undefined
    : await startDecompressor(opts.artifact.compression, opts.signal);
  const age = opts.artifact.encryption ? startDecryptor(opts.encryption!, opts.signal) : undefined;
  const stored = dec || age ? undefined : new PassThrough({ highWaterMark: 1024 * 1024 });
  const sink = (age?.child.stdin ?? dec?.child.stdin ?? stored)!;
  const progress = { onBytes: opts.onBytes, signal: opts.signal };
  const downloaded = opts.direct
    ? downloadFromStorage(opts.direct.storage, opts.direct.key, opts.artifact, sink, progress)
    : downloadArtifact(
        opts.client,
        { backupId: opts.backupId, taskId: opts.taskId, artifact: opts.artifact },
        sink,
        progress,
      );
  const kill = (): void => {
    dec?.kill();
    age?.kill();
  };
  if (!dec) {
    // The stored bytes: what the decryptor writes, or the download itself.
    const out = keepOutput(age ? age.child.stdout! : stored!, downloaded);
    // Without a decryptor to kill, the stored stream itself has to end on a failure: a download
    // that failed before its first byte (a missing copy) never ends it, and one whose reader
    // failed waits for room in it.
    const stop = (): void => {
      kill();
      stored?.destroy(new Error('the restore of this artifact failed'));
    };
    await allOrFirstError([opts.applyCompressed!(out), ...(age ? [age.wait()] : []), downloaded], stop);
    return;
  }
  // An engine may first run other work (e.g. PostgreSQL drops the database)
  // before it reads; a small artifact is fully decompressed by then.
  const raw = keepOutput(dec.child.stdout!, downloaded);
  await allOrFirstError(
    [
      opts.apply!(raw),
      dec.wait(),
      ...(age ? [pipeline(age.child.stdout!, dec.child.stdin!), age.wait()] : []),
      downloaded,
    ],
    kill,
  );
}

/**
 * Attaches a reader to a child process's output at once and returns it.
 *
 * When a child exits, Node resumes any of its stdio streams that nobody reads
 * yet (`flushStdio` in lib/internal/child_process.js), which throws their
 * buffered data away: a tool with a small output that exits before its reader
 * is attached would look like one that printed nothing. The returned stream
 * keeps backpressure (the tool blocks once it is full), so memory stays bounded.
 *
 * @param endsAfter when given, the returned stream ends only after it resolves,
 *   and fails with its error instead of ending when it rejects.
 */
export function keepOutput(stream: Readable, endsAfter?: Promise<unknown>): Readable {
  const kept = stream.pipe(
    new Transform({
      highWaterMark: 1024 * 1024,
      transform(chunk: Buffer, _encoding, callback) {
        callback(null, chunk);
      },
      flush(callback) {
        if (!endsAfter) return callback();
        endsAfter.then(
          () => callback(),
          (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
        );
      },
    }),
  );
  stream.once('error', (err) => kept.destroy(err));
  // The failure of `endsAfter` is reported by whoever awaits it (downloadAndApply); the stream's
  // own 'error' may come when no engine reads it (it failed first, or has not started reading),
  // and an 'error' without a listener would crash the agent.
  if (endsAfter) kept.on('error', () => undefined);
  return kept;
}
