import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type * as grpc from '@grpc/grpc-js';
import type { WireArtifact } from '../shared/wire.js';
import { startCompressor, startDecompressor, type CompressionOptions } from './compression.js';
import { downloadArtifact, uploadArtifact, type UploadOutcome } from './transfer.js';

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
  artifact: Omit<WireArtifact, 'sizeBytes' | 'sha256' | 'rawBytes'>;
  source: Readable;
  sourceDone: Promise<unknown>;
  stopSource: () => void;
  compression: CompressionOptions;
  signal: AbortSignal;
  onBytes: (stored: number) => void;
}): Promise<WireArtifact> {
  const comp = await startCompressor(opts.artifact.compression, opts.compression, opts.signal);
  let raw = 0;
  const counter = new Transform({
    highWaterMark: 1024 * 1024,
    transform(chunk: Buffer, _enc, cb) {
      raw += chunk.length;
      cb(null, chunk);
    },
  });
  let stored: UploadOutcome | undefined;
  await allOrFirstError(
    [
      opts.sourceDone,
      pipeline(opts.source, counter, comp.child.stdin!),
      comp.wait(),
      uploadArtifact(
        opts.client,
        { backupId: opts.backupId, taskId: opts.taskId, artifact: opts.artifact },
        comp.child.stdout!,
        { rawBytes: () => raw, onBytes: opts.onBytes, signal: opts.signal },
      ).then((r) => {
        stored = r;
      }),
    ],
    () => {
      opts.stopSource();
      comp.kill();
    },
  );
  return { ...opts.artifact, sizeBytes: stored!.sizeBytes, sha256: stored!.sha256, rawBytes: raw };
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
  signal: AbortSignal;
  onBytes: (n: number) => void;
}): Promise<void> {
  const dec = await startDecompressor(opts.artifact.compression, opts.signal);
  await allOrFirstError(
    [
      opts.apply(dec.child.stdout!),
      dec.wait(),
      downloadArtifact(
        opts.client,
        { backupId: opts.backupId, taskId: opts.taskId, artifact: opts.artifact },
        dec.child.stdin!,
        { onBytes: opts.onBytes, signal: opts.signal },
      ),
    ],
    () => dec.kill(),
  );
}
