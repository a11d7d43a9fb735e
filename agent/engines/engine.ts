import type { Readable, Writable } from 'node:stream';

import type { RedisSource } from '../../shared/manifest.js';

/**
 * A connection to a database or cache on the agent's own node, with its secret
 * already resolved from `password_file` / `password_env`. Never log this object.
 */
export interface ResolvedConnection {
  host?: string;
  port?: number;
  /** Unix socket path (MariaDB: the socket file; PostgreSQL: the socket directory). */
  socket?: string;
  user?: string;
  password?: string;
}

/** What the engine was asked to back up: a configured service. */
export interface ServiceTarget {
  /** Service name from the config, e.g. "db". */
  name: string;
  kind: 'mariadb' | 'mysql' | 'postgresql' | 'redis';
  connection: ResolvedConnection;
  /** Databases named in the config; empty means every non-system database. */
  databases: string[];
}

/** Artifact formats; recorded in the manifest. */
export type ArtifactFormat = 'sql' | 'pg_custom' | 'pg_globals' | 'rdb';

/** One artifact an engine will produce for a service. */
export interface DumpUnit {
  /** Database name; '' for whole-server units (pg globals, redis). */
  database: string;
  format: ArtifactFormat;
  /** Base file name without compression suffix, e.g. "sakila.sql", "sakila.pgdump", "globals.sql", "dump.rdb". */
  fileName: string;
  /**
   * PostgreSQL: a snapshot exported by another session (`pg_export_snapshot()`), for
   * `pg_dump --snapshot=`, so that the dump and the restore-drill stats see the same data.
   */
  snapshot?: string;
  /**
   * Redis: the source server when the RDB was taken (recorded by `plan`, kept in the manifest,
   * given back to a restore); absent when not known.
   */
  redis?: RedisSource;
  /** Restores: the artifact's raw size in bytes (the manifest's `raw_bytes`); 0 or absent when not known. */
  rawBytes?: number;
}

/** An artifact as stored, for {@link Engine.restoreCompressed}. */
export interface CompressedInput {
  /** The stored bytes (decrypted when the artifact is encrypted), still compressed. */
  stream: Readable;
  /** The artifact's compression (`zstd`, `gzip`), for `startDecompressor` (agent/compression.ts). */
  compression: string;
}

/** A running dump that writes into the `into` it was given (see {@link Engine.dump}). */
export interface DumpRun {
  /** Resolves when the dump finished successfully; rejects with ToolFailedError otherwise. */
  wait(): Promise<void>;
  /** Stops the dump at once (SIGKILL to the tool, cleanup of temp files). Safe to call twice. */
  kill(): void;
}

/** A running dump: raw (uncompressed) bytes come out of `stdout`. */
export interface DumpProcess extends DumpRun {
  /** The raw dump: the tool's stdout pipe (tool-based engines) or a file stream (Redis). */
  stdout: Readable;
}

export interface EngineContext {
  /** Aborted when the task is cancelled; engines must stop their tools then. */
  signal: AbortSignal;
  /** A private scratch directory for this task on the agent (created, removed by the caller). */
  workDir: string;
  /** Appends a line to the activity log (no secrets). */
  log(message: string): void;
}

/**
 * A database or cache engine driven with its own tools.
 *
 * Rules: stream everything (never hold a dump in memory); never put a secret
 * on a command line (use option files or the tools' environment variables);
 * throw ToolMissingError naming the Debian package when a tool is absent.
 */
export interface Engine {
  /** Lists the artifacts a backup of `service` will produce, in order. */
  plan(service: ServiceTarget, ctx: EngineContext): Promise<DumpUnit[]>;
  /**
   * Starts dumping one unit. Without `into`, the raw bytes come out of the returned `stdout`.
   * With `into` (a stream backed by a file descriptor: the compressor's stdin pipe), the engine owns
   * `into`: a dump tool gets its descriptor as its own stdout and writes straight into the
   * compressor, so that the raw bytes never pass through the agent, and the agent's own end is
   * closed at once (the compressor sees the end of its input when the tool exits); an engine that
   * reads a file writes it into `into` and ends it. Rejects with ToolMissingError when the tool is
   * absent.
   */
  dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext): Promise<DumpProcess>;
  dump(service: ServiceTarget, unit: DumpUnit, ctx: EngineContext, into: Writable): Promise<DumpRun>;
  /**
   * Restores one unit from `input` (raw, already decompressed bytes) into the
   * service, replacing what is there so that the data equals the backup.
   * Resolves when the data is fully applied.
   *
   * Databases are restored safely: loaded into `<db>__envsnap_staging` first and swapped in only
   * once the load succeeded, so that a restore that fails or is killed at any point leaves the
   * live database as it was, or fully restored (MariaDB, PostgreSQL; see each engine for the
   * residual windows). The previous data is kept as `<db>__envsnap_pre_restore` until
   * {@link dropPreRestoreCopies} or the next restore of that database. Redis cannot be restored
   * atomically without owning the server (see redis.ts).
   *
   * Except for `pg_globals` (roles, applied as they stream), nothing reaches the live data before
   * `input` ends: the staging load or the RDB file comes first, then the swap or the load. The
   * agent ends `input` only once the artifact matched its manifest SHA-256 (and fails it
   * otherwise), and the controller relies on this to leave the check of a single-task restore's
   * first artifact to the agent: an engine must keep it.
   */
  restore(service: ServiceTarget, unit: DumpUnit, input: Readable, ctx: EngineContext): Promise<void>;
  /**
   * Optional: {@link restore} from the artifact as stored (still compressed, already decrypted),
   * for an engine that starts the decompressor itself with its own tool's stdin as the
   * decompressor's stdout, so that the raw bytes go from process to process and never through
   * the agent. The agent then uses it instead of {@link restore}, with the same contract: it ends
   * `input.stream` only once the artifact matched its manifest size and SHA-256.
   */
  restoreCompressed?(
    service: ServiceTarget,
    unit: DumpUnit,
    input: CompressedInput,
    ctx: EngineContext,
  ): Promise<void>;
  /**
   * Drops the pre-restore copies that restores of `service` kept: those of the databases named
   * in the config, or all of them on the server when it names none. Meant to run after the next
   * successful backup of the service, or on an explicit cleanup. Resolves with the names dropped
   * (none for Redis, which keeps no copy).
   */
  dropPreRestoreCopies(service: ServiceTarget, ctx: EngineContext): Promise<string[]>;
  /** A sentence for the manifest on what consistency the dump gives (e.g. InnoDB-only snapshot). */
  consistency: string;
}
