import type { ArtifactStats } from './drill-stats.js';
import { InvalidArgumentError } from './errors.js';

/**
 * The backup manifest: the last object written into a backup's directory
 * (`backups/<id>/manifest.json`) and kept in the catalog too.
 *
 * On-disk format, version 1 (JSON, UTF-8):
 *
 * ```json
 * { "format": "envsnap-manifest", "format_version": 1,
 *   "backup_id": "…20 hex…", "environment": "main", "created": "ISO 8601", "finished": "ISO 8601",
 *   "live": false, "tag": "manual", "consistency": "…",
 *   "artifacts": [ { "name": "db/sakila.sql.zst", "service": "db", "kind": "mariadb", "node": "node-1",
 *                    "database": "sakila", "format": "sql", "compression": "zstd",
 *                    "size_bytes": 123, "sha256": "…64 hex…", "raw_bytes": 456 } ] }
 * ```
 *
 * Readers check `format_version` first and refuse versions they do not know. Optional fields
 * added within version 1 (`encryption`, `key_fingerprint`, `stats`, `redis`) are absent from older
 * manifests, which stay valid; readers ignore fields they do not know.
 */
export const MANIFEST_FORMAT = 'envsnap-manifest';
export const MANIFEST_VERSION = 1;

export interface ArtifactEntry {
  /** Path inside the backup, `<service>/<file>`. */
  name: string;
  service: string;
  kind: string;
  node: string;
  database: string;
  format: string;
  compression: string;
  /** Stored (compressed) size, bytes. */
  size_bytes: number;
  /** Hex SHA-256 of the stored bytes. */
  sha256: string;
  /**
   * Size of the tool's output before compression, bytes: zstd's own count of what it read (the dump
   * tools write straight into the compressor, past the agent), or the agent's count for a mount.
   * 0 when not known: a gzip artifact of a dump tool (pigz reports no size for a stream, and the
   * gzip trailer holds it only modulo 4 GiB).
   */
  raw_bytes: number;
  /**
   * Encryption at rest: absent when none; `age-x25519` when the agent
   * encrypted the compressed bytes with age (https://age-encryption.org/v1)
   * to the X25519 recipient of its key file. `size_bytes` and `sha256` are of
   * the encrypted bytes as stored.
   */
  encryption?: 'age-x25519';
  /** First 16 hex digits of the SHA-256 of the age recipient (public key); the key itself is never stored. */
  key_fingerprint?: string;
  /**
   * The storage key of the artifact in every location, when it is not the
   * canonical `backups/<id>/<name>`: a dump under a dump lock written straight
   * to S3 by the agent is stored under its attempt's key (see
   * `attemptArtifactKey` in shared/storage/keys.ts).
   */
  key?: string;
  /**
   * What the data held at backup time, for restore drills (shared/drill-stats.ts); absent when the
   * environment's `drill_stats` is `off`, for PostgreSQL globals, and in manifests written before
   * drills existed.
   */
  stats?: ArtifactStats;
  /**
   * Redis: what the source server was when the RDB was taken, for a restore that sends the RDB's
   * bytes to the target as they are (agent/engines/redis.ts); absent when not known (the source
   * refused `CONFIG GET` or `MODULE LIST`) and in manifests written before it was recorded.
   */
  redis?: RedisSource;
}

/** See {@link ArtifactEntry.redis}. */
export interface RedisSource {
  /**
   * The source's `databases` setting (immutable while a server runs): every database index in the
   * RDB is below it.
   */
  databases: number;
  /** Names of the modules the source had loaded (`MODULE LIST`): only they can have written data to the RDB. */
  modules: string[];
}

/**
 * A Redis source from the wire (an unset message decodes as null), or undefined when
 * unset or not usable (no `databases`).
 */
export function redisSourceFromWire(w: unknown): RedisSource | undefined {
  const r = w as { databases?: number | string; modules?: string[] } | null | undefined;
  const databases = Number(r?.databases ?? 0);
  if (!r || !Number.isSafeInteger(databases) || databases <= 0) return undefined;
  return { databases, modules: [...(r.modules ?? [])] };
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  format_version: typeof MANIFEST_VERSION;
  backup_id: string;
  environment: string;
  created: string;
  finished: string;
  live: boolean;
  tag: 'manual' | 'automated';
  consistency: string;
  artifacts: ArtifactEntry[];
}

const SHA256 = /^[0-9a-f]{64}$/;
const ARTIFACT_NAME = /^[A-Za-z0-9_.-]+\/[^/\0]+$/;

/**
 * Parses and checks a manifest read from storage.
 *
 * @throws InvalidArgumentError when the text is not a version-1 envsnap manifest.
 */
export function parseManifest(text: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError('manifest is not valid JSON', { cause: err });
  }
  const m = raw as Partial<Manifest> & { format_version?: unknown };
  if (!m || typeof m !== 'object' || m.format !== MANIFEST_FORMAT) {
    throw new InvalidArgumentError('not an envsnap manifest');
  }
  if (m.format_version !== MANIFEST_VERSION) {
    throw new InvalidArgumentError(`unsupported manifest format version ${String(m.format_version)}`, {
      hint: `this envsnap reads version ${MANIFEST_VERSION}; upgrade envsnap`,
    });
  }
  if (!Array.isArray(m.artifacts)) throw new InvalidArgumentError('manifest has no artifacts list');
  for (const a of m.artifacts) checkArtifactEntry(a);
  return m as Manifest;
}

/**
 * Checks one artifact entry's shape.
 *
 * @throws InvalidArgumentError naming the bad field.
 */
export function checkArtifactEntry(a: ArtifactEntry): void {
  if (!ARTIFACT_NAME.test(a.name) || a.name.split('/').some((p) => p === '..' || p === '.')) {
    throw new InvalidArgumentError(`invalid artifact name "${a.name}"`);
  }
  if (!SHA256.test(a.sha256)) throw new InvalidArgumentError(`artifact ${a.name}: invalid sha256`);
  if (a.key !== undefined && !a.key.startsWith('backups/')) {
    throw new InvalidArgumentError(`artifact ${a.name}: invalid key "${a.key}"`);
  }
  if (!Number.isSafeInteger(a.size_bytes) || a.size_bytes < 0) {
    throw new InvalidArgumentError(`artifact ${a.name}: invalid size_bytes`);
  }
}

/** Serializes a manifest (stable key order, trailing newline). */
export function serializeManifest(m: Manifest): string {
  return JSON.stringify(m, null, 2) + '\n';
}

/**
 * The order in which an agent applies one service's artifacts: the globals (PostgreSQL roles,
 * format `pg_globals`) first, then the databases in manifest order. Works on manifest entries and
 * wire artifacts alike (anything with a `format`); returns a new array.
 *
 * The controller relies on it to know which artifact a single-task restore applies first.
 */
export function restoreOrder<T extends { format: string }>(artifacts: readonly T[]): T[] {
  return [...artifacts].sort((a, b) => Number(b.format === 'pg_globals') - Number(a.format === 'pg_globals'));
}
