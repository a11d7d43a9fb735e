import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type * as grpc from '@grpc/grpc-js';
import type { WireArtifact } from '../shared/wire.js';
import { startCompressor, startDecompressor, type CompressionOptions } from './compression.js';
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

/**
 * Compresses a raw stream and uploads it as one artifact: source -> compressor
 * process (zstd on every core, or pigz) -> SHA-256 -> controller. Nothing is
 * held whole in memory; backpressure runs from the controller's disk back to
 * the dump tool.
 *
 * @param sourceDone settles when the producer of `source` (a dump tool) has exited.
 * @param stopSource kills the producer when anything fails.
 */
export async function compressAndUpload(opts: {
  client: grpc.Client;
  backupId: string;
  taskId: string;
  /** The task's dump-lock fencing token (0: none); the controller refuses a stale one. */
  fencingToken?: number;
  artifact: Omit<WireArtifact, 'sizeBytes' | 'sha256' | 'rawBytes'>;
  source: Readable;
  sourceDone: Promise<unknown>;
  stopSource: () => void;
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
  // Read the source before anything is awaited: a dump tool with a small output
  // may exit while the compressor starts, and Node drops the unread stdout of an
  // exited child (see keepOutput).
  const source = keepOutput(opts.source);
  const comp = await startCompressor(opts.artifact.compression, opts.compression, opts.signal);
  let raw = 0;
  const counter = new Transform({
    highWaterMark: 1024 * 1024,
    transform(chunk: Buffer, _enc, cb) {
      raw += chunk.length;
      cb(null, chunk);
    },
  });
  const enc = opts.encryption ? startEncryptor(opts.encryption, opts.signal) : undefined;
  const artifact = opts.encryption
    ? { ...opts.artifact, encryption: SCHEME, keyFingerprint: opts.encryption.fingerprint }
    : opts.artifact;
  let stored: UploadOutcome | undefined;
  await allOrFirstError(
    [
      opts.sourceDone,
      pipeline(source, counter, comp.child.stdin!),
      comp.wait(),
      ...(enc ? [pipeline(comp.child.stdout!, enc.child.stdin!), enc.wait()] : []),
      (opts.sinks
        ? opts.sinks.write(artifact, (enc ?? comp).child.stdout!, {
            rawBytes: () => raw,
            onBytes: opts.onBytes,
            signal: opts.signal,
          })
        : uploadArtifact(
            opts.client,
            {
              backupId: opts.backupId,
              taskId: opts.taskId,
              artifact,
              fencingToken: opts.fencingToken ?? 0,
            },
            (enc ?? comp).child.stdout!,
            { rawBytes: () => raw, onBytes: opts.onBytes, signal: opts.signal },
          )
      ).then((r) => {
        stored = r;
      }),
    ],
    () => {
      opts.stopSource();
      comp.kill();
      enc?.kill();
    },
  );
  return { ...artifact, sizeBytes: stored!.sizeBytes, sha256: stored!.sha256, rawBytes: raw };
}

/**
 * Downloads an artifact, decompresses it and hands the raw stream to `apply`
 * (a restore tool or the archive extractor). Resolves when `apply` is done and
 * the artifact's size and SHA-256 matched the manifest.
 */
export async function downloadAndApply(opts: {
  client: grpc.Client;
  backupId: string;
  taskId: string;
  artifact: WireArtifact;
  apply: (raw: Readable) => Promise<unknown>;
  /** The agent's key; required (with a matching fingerprint) when the artifact is encrypted. */
  encryption?: EncryptionKey;
  signal: AbortSignal;
  onBytes: (n: number) => void;
  /** Read straight from this location (an S3 bucket) and key instead of through the controller. */
  direct?: { storage: StorageBackend; key: string };
}): Promise<void> {
  checkKeyFor(opts.artifact, opts.encryption);
  const dec = await startDecompressor(opts.artifact.compression, opts.signal);
  const age = opts.artifact.encryption ? startDecryptor(opts.encryption!, opts.signal) : undefined;
  // An engine may first run other work (e.g. PostgreSQL drops the database)
  // before it reads; a small artifact is fully decompressed by then.
  const raw = keepOutput(dec.child.stdout!);
  await allOrFirstError(
    [
      opts.apply(raw),
      dec.wait(),
      ...(age ? [pipeline(age.child.stdout!, dec.child.stdin!), age.wait()] : []),
      opts.direct
        ? downloadFromStorage(
            opts.direct.storage,
            opts.direct.key,
            opts.artifact,
            (age ?? dec).child.stdin!,
            {
              onBytes: opts.onBytes,
              signal: opts.signal,
            },
          )
        : downloadArtifact(
            opts.client,
            { backupId: opts.backupId, taskId: opts.taskId, artifact: opts.artifact },
            (age ?? dec).child.stdin!,
            { onBytes: opts.onBytes, signal: opts.signal },
          ),
    ],
    () => {
      dec.kill();
      age?.kill();
    },
  );
}

/**
 * Attaches a reader to a child process's output at once and returns it.
 *
 * When a child exits, Node resumes any of its stdio streams that nobody reads
 * yet (`flushStdio` in lib/internal/child_process.js), which throws their
 * buffered data away: a tool with a small output that exits before its reader
 * is attached would look like one that printed nothing. The PassThrough keeps
 * backpressure (the tool blocks once it is full), so memory stays bounded.
 */
export function keepOutput(stream: Readable): Readable {
  const kept = stream.pipe(new PassThrough({ highWaterMark: 1024 * 1024 }));
  stream.once('error', (err) => kept.destroy(err));
  return kept;
}
