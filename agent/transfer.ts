import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';
import { ArtifactCorruptError } from '../shared/errors.js';
import { CHUNK_BYTES } from '../shared/proto.js';
import type { StorageBackend } from '../shared/storage/backend.js';
import type { WireArtifact, WireUploadHeader, WireUploadMessage } from '../shared/wire.js';

/** Bytes gathered before one gRPC message is sent: fewer, larger messages cost less per byte. */
const COALESCE_BYTES = 512 * 1024;

export interface UploadOutcome {
  sizeBytes: number;
  sha256: string;
}

type UnaryCb<T> = (err: grpc.ServiceError | null, res?: T) => void;
type UploadCall = grpc.ClientWritableStream<WireUploadMessage>;

/**
 * Streams one artifact to the controller with `UploadArtifact`: header, data in
 * chunks of at most 1 MiB with backpressure, then a trailer with the size and
 * SHA-256 computed here as the bytes passed. Resolves once the controller has
 * stored the bytes and its own size and hash agree.
 *
 * @param onBytes called with the running byte count (progress).
 * @throws the gRPC error of the controller, or the source stream's error.
 */
export async function uploadArtifact(
  client: grpc.Client,
  header: WireUploadHeader,
  source: Readable,
  opts: {
    rawBytes: () => number;
    onBytes?: (n: number) => void;
    signal?: AbortSignal;
    /**
     * The size and SHA-256 already computed upstream (the one-pass tee of
     * artifact-sinks.ts), read once `source` has ended; absent: computed here.
     */
    digest?: () => UploadOutcome;
  },
): Promise<UploadOutcome> {
  const hash = createHash('sha256');
  let size = 0;
  let call: UploadCall | undefined;
  const result = new Promise<UploadOutcome>((resolve, reject) => {
    const fn = (
      client as unknown as Record<string, (cb: UnaryCb<UploadOutcome>) => UploadCall>
    ).UploadArtifact!.bind(client);
    call = fn((err, res) =>
      err ? reject(err) : resolve({ sizeBytes: Number(res!.sizeBytes), sha256: res!.sha256 }),
    );
  });
  // The call may fail (cancelled, refused) while this function awaits the source,
  // before anything awaits `result`: mark it handled now so that such a
  // rejection is not an unhandled one (which would end the agent process).
  result.catch(() => undefined);
  const c = call!;
  const onAbort = () => c.cancel();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const write = async (msg: WireUploadMessage) => {
      if (!c.write(msg)) await Promise.race([once(c, 'drain'), result]);
    };
    await write({ msg: 'header', header });
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      for (let off = 0; off < buf.length; off += CHUNK_BYTES) {
        await write({ msg: 'data', data: buf.subarray(off, off + CHUNK_BYTES) });
      }
    };
    for await (const chunk of source as AsyncIterable<Buffer>) {
      if (!opts.digest) hash.update(chunk);
      size += chunk.length;
      pending.push(chunk);
      pendingBytes += chunk.length;
      if (pendingBytes >= COALESCE_BYTES) {
        await flush();
        opts.onBytes?.(size);
      }
    }
    await flush();
    opts.onBytes?.(size);
    const sha256 = opts.digest ? opts.digest().sha256 : hash.digest('hex');
    await write({ msg: 'trailer', trailer: { sizeBytes: size, sha256, rawBytes: opts.rawBytes() } });
    c.end();
    const stored = await result;
    if (stored.sha256 !== sha256 || stored.sizeBytes !== size) {
      throw new ArtifactCorruptError(
        `controller stored ${stored.sizeBytes} bytes of ${header.artifact.name}, agent sent ${size}`,
      );
    }
    return stored;
  } catch (err) {
    c.cancel();
    result.catch(() => undefined);
    throw err;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * Streams a stored artifact from the controller into `sink`, checking its size
 * and SHA-256 against the manifest as the bytes pass. The caller ends `sink`
 * only through this function (it is ended after the last byte).
 *
 * @throws ArtifactCorruptError when the bytes differ from the manifest.
 */
export async function downloadArtifact(
  client: grpc.Client,
  req: { backupId: string; taskId: string; artifact: WireArtifact },
  sink: Writable,
  opts: { onBytes?: (n: number) => void; signal?: AbortSignal },
): Promise<void> {
  const fn = (
    client as unknown as Record<string, (req: unknown) => grpc.ClientReadableStream<{ data: Buffer }>>
  ).DownloadArtifact!.bind(client);
  const call = fn({ backupId: req.backupId, taskId: req.taskId, artifact: req.artifact.name });
  async function* chunks(): AsyncGenerator<Buffer> {
    for await (const msg of call as AsyncIterable<{ data: Buffer }>) yield msg.data;
  }
  await copyChecked(chunks(), () => call.cancel(), req.artifact, sink, opts);
}

/**
 * Streams a stored artifact straight from a storage location (an S3 bucket)
 * into `sink`, with the same checks as `downloadArtifact`.
 *
 * @throws NotFoundError when the object is missing; ArtifactCorruptError when the bytes differ from the manifest.
 */
export async function downloadFromStorage(
  storage: StorageBackend,
  key: string,
  artifact: WireArtifact,
  sink: Writable,
  opts: { onBytes?: (n: number) => void; signal?: AbortSignal },
): Promise<void> {
  const body = await storage.get(key);
  await copyChecked(body as AsyncIterable<Buffer>, () => body.destroy(), artifact, sink, opts);
}

/** Copies chunks into `sink` with backpressure, checking size and SHA-256 against the manifest; ends `sink`. */
async function copyChecked(
  source: AsyncIterable<Buffer>,
  cancel: () => void,
  artifact: WireArtifact,
  sink: Writable,
  opts: { onBytes?: (n: number) => void; signal?: AbortSignal },
): Promise<void> {
  const req = { artifact };
  const call = { cancel };
  const onAbort = () => call.cancel();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const hash = createHash('sha256');
  let size = 0;
  let lastReport = 0;
  try {
    for await (const data of source) {
      hash.update(data);
      size += data.length;
      if (!sink.write(data)) await once(sink, 'drain');
      if (size - lastReport >= 4 * 1024 * 1024) {
        lastReport = size;
        opts.onBytes?.(size);
      }
    }
    opts.onBytes?.(size);
    const sha = hash.digest('hex');
    if (size !== Number(req.artifact.sizeBytes) || sha !== req.artifact.sha256) {
      throw new ArtifactCorruptError(
        `artifact ${req.artifact.name} arrived as ${size} bytes sha256 ${sha}, manifest says ${req.artifact.sizeBytes} bytes sha256 ${req.artifact.sha256}`,
      );
    }
    sink.end();
  } catch (err) {
    call.cancel();
    sink.destroy(err as Error);
    throw err;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
