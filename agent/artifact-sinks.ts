import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';
import type { StorageConfig } from '../shared/config.js';
import { StaleFencingTokenError, UploadDiscardedError, errorMessage } from '../shared/errors.js';
import type { StorageBackend } from '../shared/storage/backend.js';
import { attemptArtifactKey } from '../shared/storage/keys.js';
import { openDirectTarget } from '../shared/storage/locations.js';
import type { WireArtifact, WireDirectCopy, WireStorageTarget } from '../shared/wire.js';
import { uploadArtifact, type UploadOutcome } from './transfer.js';

/** Buffered bytes per branch of the tee: with backpressure, memory stays about this × branches. */
const BRANCH_BUFFER_BYTES = 1024 * 1024;

/** One consumer of a tee: a primary's failure fails the tee, a replica's is only reported. */
export interface TeeBranch<T> {
  primary: boolean;
  run: (input: Readable) => Promise<T>;
}

/** What became of one branch of a tee. */
export type BranchOutcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * Reads `source` once and writes every chunk to each branch, with
 * backpressure: the next chunk is read only when every live branch has
 * taken the last one, so the slowest branch sets the pace and at most
 * about 1 MiB per branch is buffered. The size and SHA-256 are computed
 * here, once, as the bytes pass.
 *
 * A failing replica branch is dropped (its input destroyed) and the others go
 * on; a failing primary branch, the source failing, or `signal` aborting stop
 * every branch and reject with that error.
 *
 * @param onBytes called with the running byte count (progress).
 * @returns the digest and each branch's outcome, in the branches' order.
 */
export async function teeToBranches<T>(
  source: Readable,
  branches: Array<TeeBranch<T>>,
  opts: { signal?: AbortSignal; onBytes?: (n: number) => void; onDigest?: (d: UploadOutcome) => void },
): Promise<{ digest: UploadOutcome; outcomes: Array<BranchOutcome<T>> }> {
  const hash = createHash('sha256');
  let size = 0;
  const live = branches.map((b) => {
    const input = new PassThrough({ highWaterMark: BRANCH_BUFFER_BYTES });
    const state: { input: PassThrough; failed?: { error: unknown }; done?: Promise<BranchOutcome<T>> } = {
      input,
    };
    state.done = b.run(input).then(
      (value): BranchOutcome<T> => ({ ok: true, value }),
      (error: unknown): BranchOutcome<T> => {
        state.failed = { error };
        input.destroy();
        return { ok: false, error };
      },
    );
    return { ...b, state };
  });
  const primaryFailure = () => live.find((b) => b.primary && b.state.failed)?.state.failed;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      opts.signal?.throwIfAborted();
      hash.update(chunk);
      size += chunk.length;
      const waits: Array<Promise<void>> = [];
      for (const b of live) {
        if (b.state.failed || b.state.input.destroyed) continue;
        if (!b.state.input.write(chunk)) waits.push(drainedOrClosed(b.state.input));
      }
      if (waits.length > 0) await Promise.all(waits);
      const failed = primaryFailure();
      if (failed) throw failed.error;
      opts.onBytes?.(size);
    }
    opts.signal?.throwIfAborted();
  } catch (err) {
    for (const b of live) b.state.input.destroy(err instanceof Error ? err : new Error(String(err)));
    await Promise.allSettled(live.map((b) => b.state.done!));
    throw err;
  }
  const digest = { sizeBytes: size, sha256: hash.digest('hex') };
  opts.onDigest?.(digest);
  for (const b of live) if (!b.state.input.destroyed) b.state.input.end();
  const outcomes = await Promise.all(live.map((b) => b.state.done!));
  const failed = primaryFailure();
  if (failed) throw failed.error;
  return { digest, outcomes };
}

function drainedOrClosed(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/** A location this task writes straight (s3, or a local one it shares), or why it cannot. */
type DirectLocation =
  { target: WireStorageTarget; storage: StorageBackend } | { target: WireStorageTarget; error: string };

/**
 * Where a backup task's artifacts go: every storage location of the
 * environment, written in one pass. Each `s3` location gets its own branch, a
 * multipart upload straight to the bucket (5 MiB parts, 2 in flight); each
 * `local` location this node proves it shares with the controller
 * (`proveSharedLocation`: same directory, same user, writable) gets its own
 * branch too, an atomic file write (LocalBackend: temporary file, fsync,
 * rename, directory fsync). The other local locations share one branch, the
 * UploadArtifact stream to the controller, which tees them there. The agent
 * never receives credentials: it opens s3 locations with its own (see
 * `openDirectTarget`).
 *
 * Direct copies are stored under the attempt's key (`attemptArtifactKey`:
 * the task's fencing token in the key), so that a stale dump-lock holder
 * cannot overwrite the copy the controller records. After every branch ended,
 * `write` reports the direct copies with CommitArtifact; the controller
 * checks the fencing token and each object's size before recording them.
 */
export class ArtifactSinks {
  private constructor(
    private readonly client: grpc.Client,
    private readonly task: { backupId: string; taskId: string; fencingToken: number },
    private readonly viaController: WireStorageTarget[],
    private readonly direct: DirectLocation[],
  ) {}

  /** Whether the task's targets include a location it may write straight (else the plain UploadArtifact path applies). */
  static needed(targets: readonly WireStorageTarget[] | undefined): boolean {
    return (targets ?? []).some((t) => t.kind === 's3' || (t.kind === 'local' && t.local));
  }

  /**
   * Opens the task's direct locations, at task start.
   *
   * @throws StorageUnavailableError when the primary is an s3 location this
   *   node cannot open (no credentials, access denied, unreachable). A replica
   *   that cannot be opened is logged (`warn`) and reported failed for every
   *   artifact; the controller copies it later from the primary. A local
   *   location `openLocal` does not open goes through the controller.
   */
  static async open(opts: {
    client: grpc.Client;
    backupId: string;
    taskId: string;
    fencingToken: number;
    targets: readonly WireStorageTarget[];
    /** The agent's own `storage:` entries (credentials by location name). */
    own: readonly StorageConfig[];
    nodeId: string;
    warn: (message: string) => void;
    /** Opens a local location this node shares with the controller; undefined: through the controller. */
    openLocal: (target: WireStorageTarget) => Promise<StorageBackend | undefined>;
  }): Promise<ArtifactSinks> {
    const direct: DirectLocation[] = [];
    const viaController: WireStorageTarget[] = [];
    try {
      for (const target of opts.targets.filter((t) => t.kind !== 's3')) {
        const storage = await opts.openLocal(target);
        if (storage) direct.push({ target, storage });
        else viaController.push(target);
      }
      for (const target of opts.targets.filter((t) => t.kind === 's3')) {
        try {
          direct.push({ target, storage: await openDirectTarget(target, opts.own, opts.nodeId) });
        } catch (err) {
          if (target.primary) throw err;
          opts.warn(`${errorMessage(err)}; the replica will be copied from the primary by the controller`);
          direct.push({ target, error: errorMessage(err) });
        }
      }
    } catch (err) {
      await Promise.allSettled(direct.map((d) => ('storage' in d ? d.storage.close() : Promise.resolve())));
      throw err;
    }
    return new ArtifactSinks(
      opts.client,
      { backupId: opts.backupId, taskId: opts.taskId, fencingToken: opts.fencingToken },
      viaController,
      direct,
    );
  }

  /**
   * Writes one artifact's stored bytes (compressed, maybe encrypted) to every
   * location in one pass, then commits the direct copies with the controller.
   *
   * @returns the size and SHA-256 computed once, here.
   * @throws the primary location's error (replicas' errors are only reported).
   */
  async write(
    artifact: Omit<WireArtifact, 'sizeBytes' | 'sha256' | 'rawBytes'>,
    stored: Readable,
    opts: { rawBytes: () => number; onBytes?: (n: number) => void; signal: AbortSignal },
  ): Promise<UploadOutcome> {
    const key = attemptArtifactKey(this.task.backupId, artifact.name, this.task.fencingToken);
    let digest: UploadOutcome | undefined;
    type Done = { kind: 'controller' } | { kind: 'direct'; location: string; result: UploadOutcome };
    const branches: Array<TeeBranch<Done> & { locations: string[] }> = [];
    if (this.viaController.length > 0) {
      branches.push({
        primary: this.viaController.some((t) => t.primary),
        locations: this.viaController.map((t) => t.name),
        run: async (input) => {
          const locations = this.viaController.map((t) => t.name);
          await uploadArtifact(this.client, { ...this.task, artifact, locations }, input, {
            rawBytes: opts.rawBytes,
            signal: opts.signal,
            digest: () => digest!,
          });
          return { kind: 'controller' };
        },
      });
    }
    for (const d of this.direct) {
      if (!('storage' in d)) continue;
      branches.push({
        primary: d.target.primary,
        locations: [d.target.name],
        run: async (input) => {
          // A local location skips its own hash: the tee computes the SHA-256 once.
          const put = await d.storage
            .put(key, input, { signal: opts.signal, skipDigest: true })
            .catch((err: unknown) => this.staleIfDiscarded(err));
          return {
            kind: 'direct',
            location: d.target.name,
            result: { sizeBytes: put.sizeBytes, sha256: put.sha256 || digest!.sha256 },
          };
        },
      });
    }
    const tee = await teeToBranches(stored, branches, {
      signal: opts.signal,
      onBytes: opts.onBytes,
      onDigest: (d) => {
        digest = d;
      },
    });
    const copies: WireDirectCopy[] = [];
    tee.outcomes.forEach((o, i) => {
      const b = branches[i]!;
      if (o.ok && o.value.kind === 'direct') {
        copies.push({ location: o.value.location, ok: true, error: '', key, ...o.value.result });
      } else if (!o.ok) {
        for (const location of b.locations) {
          copies.push({ location, ok: false, error: errorMessage(o.error), key, sizeBytes: 0, sha256: '' });
        }
      }
    });
    for (const d of this.direct) {
      if (!('storage' in d)) {
        copies.push({ location: d.target.name, ok: false, error: d.error, key, sizeBytes: 0, sha256: '' });
      }
    }
    await this.commit(
      { ...artifact, sizeBytes: tee.digest.sizeBytes, sha256: tee.digest.sha256, rawBytes: opts.rawBytes() },
      copies,
      opts.signal,
    );
    return tee.digest;
  }

  /**
   * The task's one location, when the stored bytes can go from the last tool's stdout straight into
   * its file (`writeFromDescriptor`): a primary local location written straight, and no other
   * location (a replica, or one through the controller, needs the bytes in this process: `write`).
   */
  takesDescriptor(): boolean {
    return this.soleFile() !== undefined;
  }

  private soleFile(): { target: WireStorageTarget; storage: StorageBackend } | undefined {
    if (this.viaController.length > 0 || this.direct.length !== 1) return undefined;
    const d = this.direct[0]!;
    return 'storage' in d && d.target.primary && d.storage.putFromDescriptor ? d : undefined;
  }

  /**
   * Stores one artifact in the task's one location (see `takesDescriptor`) from what `fill` writes
   * into the file's descriptor (LocalBackend.putFromDescriptor: the file is read back as it grows
   * for its size and SHA-256), then commits it with the controller as `write` does.
   *
   * @throws Error when `takesDescriptor()` is false; StaleFencingTokenError when the controller
   *   discarded the attempt's file; what `fill` rejects with.
   */
  async writeFromDescriptor(
    artifact: Omit<WireArtifact, 'sizeBytes' | 'sha256' | 'rawBytes'>,
    fill: (fd: number) => Promise<void>,
    opts: { rawBytes: () => number; onBytes?: (n: number) => void; signal: AbortSignal },
  ): Promise<UploadOutcome> {
    const d = this.soleFile();
    if (!d) throw new Error('writeFromDescriptor needs one primary local location written straight');
    const key = attemptArtifactKey(this.task.backupId, artifact.name, this.task.fencingToken);
    const put = await d.storage.putFromDescriptor!(key, fill, {
      signal: opts.signal,
      onBytes: opts.onBytes,
    }).catch((err: unknown) => this.staleIfDiscarded(err));
    const digest = { sizeBytes: put.sizeBytes, sha256: put.sha256 };
    await this.commit(
      { ...artifact, ...digest, rawBytes: opts.rawBytes() },
      [{ location: d.target.name, ok: true, error: '', key, ...digest }],
      opts.signal,
    );
    return digest;
  }

  /** Under a dump lock, the controller discards an attempt's files when the lock moved on: say so. */
  private staleIfDiscarded(err: unknown): never {
    if (err instanceof UploadDiscardedError && this.task.fencingToken)
      throw new StaleFencingTokenError(
        `${errorMessage(err)}: the controller discarded this attempt (fencing token ${this.task.fencingToken}): its dump lock moved on, or its backup ended`,
        { cause: err },
      );
    throw err;
  }

  /** CommitArtifact: the controller checks the fencing token and each direct object, then records them. */
  private commit(artifact: WireArtifact, copies: WireDirectCopy[], signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const fn = (
        this.client as unknown as Record<
          string,
          (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null) => void) => grpc.Call
        >
      ).CommitArtifact!.bind(this.client);
      const call = fn(
        {
          backupId: this.task.backupId,
          taskId: this.task.taskId,
          artifact,
          fencingToken: this.task.fencingToken,
          copies,
        },
        {},
        (err) => (err ? reject(err) : resolve()),
      );
      signal.addEventListener('abort', () => call.cancel(), { once: true });
    });
  }

  /** Releases the S3 clients (local locations hold nothing open). */
  async close(): Promise<void> {
    await Promise.allSettled(
      this.direct.map((d) => ('storage' in d ? d.storage.close() : Promise.resolve())),
    );
  }
}
