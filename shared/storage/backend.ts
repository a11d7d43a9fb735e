import type { Readable } from 'node:stream';

/** What `put` stored: its size and SHA-256, computed from the bytes as written. */
export interface PutResult {
  /** Bytes written. */
  sizeBytes: number;
  /** Hex SHA-256 of the bytes written. */
  sha256: string;
}

/**
 * A repository location: where backups' artifacts and manifests live.
 *
 * The contract (every backend passes the conformance suite in
 * `test/integration/storage-conformance.test.ts`):
 *
 * - Keys are `/`-separated relative paths of safe segments (no `.`/`..`, no
 *   empty segment, no leading `/`); `checkKey` enforces it and every method
 *   throws InvalidArgumentError for a bad key.
 * - `put` is atomic: a reader sees the whole new object or the old state,
 *   never a part. A failed or aborted `put` leaves nothing behind under the
 *   key (nor a temporary file a `list` would show). `put` replaces an existing
 *   object. It consumes `data` with backpressure and holds no more than a
 *   bounded buffer in memory.
 * - `get` of a missing key throws NotFoundError (before any byte is read).
 * - `stat` of a missing key returns undefined.
 * - `list(prefix)` returns every key that starts with `prefix`, sorted.
 * - `delete` and `deletePrefix` are idempotent: deleting what is not there is not an error.
 * - After `put` resolves the object is durable (fsync'd, or acknowledged by the remote store).
 */
export interface StorageBackend {
  /** The location's name from the config. */
  readonly name: string;
  /**
   * Stores `data` under `key`. With `skipDigest` (the caller hashes the bytes
   * itself, once, as they pass) a backend may leave the result's `sha256`
   * empty instead of hashing them again.
   */
  put(key: string, data: Readable, opts?: { signal?: AbortSignal; skipDigest?: boolean }): Promise<PutResult>;
  /**
   * Optional (local directories): stores, atomically like `put`, what `fill`
   * writes into a file descriptor it hands to a process as its stdout; resolves
   * with the size and SHA-256 of the stored bytes. See LocalBackend.
   */
  putFromDescriptor?(
    key: string,
    fill: (fd: number) => Promise<void>,
    opts?: { signal?: AbortSignal; onBytes?: (n: number) => void },
  ): Promise<PutResult>;
  get(key: string): Promise<Readable>;
  stat(key: string): Promise<{ sizeBytes: number } | undefined>;
  list(prefix: string): Promise<string[]>;
  delete(key: string): Promise<void>;
  deletePrefix(prefix: string): Promise<void>;
  close(): Promise<void>;
}
