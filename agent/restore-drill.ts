/**
 * The agent's side of a restore drill: each artifact of a service or mount is downloaded, checked
 * (size, SHA-256, key) and restored into a throwaway target, never into the live data:
 *
 * - MariaDB/MySQL, PostgreSQL: a scratch database `<db>__envsnap_drill` on the same server
 *   (agent/engines/mariadb-stats.ts, postgresql-stats.ts); PostgreSQL globals (roles) are not
 *   restored, since roles are server-wide and the live ones would change;
 * - Redis: a throwaway redis-server on a free loopback port (agent/engines/redis-stats.ts);
 * - a mount: a scratch directory in the task's work directory, extracted like a restore does and
 *   archived again to recompute the tree digest (agent/tree-digest.ts).
 *
 * The stats recorded at backup time are recomputed there, at the level they were recorded with
 * (`checksums` when none were), and the target is removed whatever happened. Comparing is the
 * controller's job (shared/drill-stats.ts): the agent only reports what it found, per artifact,
 * with the error of an artifact that did not restore (the next ones are still drilled).
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';

import type { ArtifactStats } from '../shared/drill-stats.js';
import { errorMessage } from '../shared/errors.js';
import type { StorageBackend } from '../shared/storage/backend.js';
import type { WireArtifact, WireDrilledArtifact, WireMountSpec } from '../shared/wire.js';
import { downloadAndApply } from './artifact-pipelines.js';
import { checkKeyFor, type EncryptionKey } from './encryption.js';
import type { EngineContext, ServiceTarget } from './engines/engine.js';
import { drillMariadb } from './engines/mariadb-stats.js';
import { drillPostgresql, recordedRowHash } from './engines/postgresql-stats.js';
import type { ArchiveInput } from './compression.js';
import { drillRedis } from './engines/redis-stats.js';
import { extractMountArchive, writeMountArchive } from './mount-archive.js';

export interface DrillDeps {
  client: () => grpc.Client;
  encryption: EncryptionKey | undefined;
  backupId: string;
  taskId: string;
  progress: (artifact: string) => (bytes: number, done?: boolean) => void;
  /** Artifacts read straight from a location (s3, or a local one this node shares), by name; the others through the controller. */
  direct?: Map<string, { storage: StorageBackend; key: string }> | undefined;
}

/** Drills every artifact of a service, one after another (see the file comment). */
export async function drillServiceArtifacts(
  deps: DrillDeps,
  service: ServiceTarget,
  artifacts: WireArtifact[],
  ctx: EngineContext,
): Promise<WireDrilledArtifact[]> {
  const out: WireDrilledArtifact[] = [];
  for (const a of artifacts) {
    ctx.signal.throwIfAborted();
    if (a.format === 'pg_globals') continue; // roles are server-wide: never restored by a drill
    out.push(
      await drillOne(
        deps,
        a,
        ctx,
        async (input, checksums) => {
          switch (service.kind) {
            case 'mariadb':
            case 'mysql': {
              const r = await drillMariadb(
                service.kind,
                service.connection,
                a.database,
                input.stream,
                checksums,
                ctx,
              );
              return { stats: { tables: r.tables, objects: r.objects }, cleanup: r.cleanup };
            }
            case 'postgresql': {
              const rowHash = checksums ? recordedRowHash(a.stats?.tables) : undefined;
              const r = await drillPostgresql(service, a.database, input, rowHash, ctx);
              return { stats: { tables: r.tables }, cleanup: r.cleanup };
            }
            case 'redis': {
              const r = await drillRedis(input.stream, ctx);
              return { stats: { keyspaces: r.keyspaces }, cleanup: r.cleanup };
            }
          }
        },
        // PostgreSQL's scratch pg_restore gets the artifact from its own decompressor, as a
        // restore does (agent/engines/postgresql.ts `restoreCompressed`).
        service.kind === 'postgresql',
      ),
    );
  }
  return out;
}

/** Drills a mount's archive in a scratch directory under the task's work directory. */
export async function drillMountArtifact(
  deps: DrillDeps,
  mount: WireMountSpec,
  artifact: WireArtifact,
  ctx: EngineContext,
): Promise<WireDrilledArtifact> {
  return drillOne(
    deps,
    artifact,
    ctx,
    async (input, checksums) => {
      const scratch = join(ctx.workDir, 'drill-mount');
      const cleanup = (): Promise<string> =>
        rm(scratch, { recursive: true, force: true }).then(
          () => '',
          (err: unknown) => `could not remove the scratch directory ${scratch}: ${errorMessage(err)}`,
        );
      try {
        await mkdir(scratch, { mode: 0o700 });
        // As a restore does: tar reads the artifact from its own decompressor.
        const { entries } = await extractMountArchive(input, scratch, { signal: ctx.signal });
        ctx.log(`mount ${mount.name}: ${entries} entries restored into a scratch directory`);
        // The tree digest is all a drill needs of the archive: its bytes go nowhere.
        const nowhere = new Writable({ write: (_chunk, _enc, cb) => cb() });
        const result = await writeMountArchive(scratch, nowhere, {
          signal: ctx.signal,
          treeStats: checksums ? 'hash' : 'counts',
        }).done;
        return { stats: { tree: result.tree! }, cleanup: cleanup() };
      } catch (err) {
        await cleanup();
        throw err;
      }
    },
    true,
  );
}

/**
 * Drills one artifact from `input`: the raw (decompressed) bytes, or, for a drill that asked for
 * the artifact as stored, the decrypted, still compressed bytes with `input.compression` set (see
 * downloadAndApply's `applyCompressed`).
 */
type Drill = (
  input: ArchiveInput,
  checksums: boolean,
) => Promise<{ stats: Omit<ArtifactStats, 'basis' | 'level'>; cleanup: Promise<string> }>;

async function drillOne(
  deps: DrillDeps,
  a: WireArtifact,
  ctx: EngineContext,
  drill: Drill,
  stored = false,
): Promise<WireDrilledArtifact> {
  const started = Date.now();
  const level = a.stats?.level === 'counts' ? 'counts' : 'checksums';
  const report = deps.progress(a.name);
  let observed: ArtifactStats | undefined;
  let cleanup: Promise<string> = Promise.resolve('');
  const run = async (input: ArchiveInput): Promise<void> => {
    const r = await drill(input, level === 'checksums');
    cleanup = r.cleanup;
    observed = { basis: 'snapshot', level, ...r.stats };
  };
  try {
    checkKeyFor(a, deps.encryption);
    await downloadAndApply({
      client: deps.client(),
      backupId: deps.backupId,
      taskId: deps.taskId,
      artifact: a,
      apply: (raw) => run({ stream: raw }),
      applyCompressed: stored ? (bytes) => run({ stream: bytes, compression: a.compression }) : undefined,
      encryption: deps.encryption,
      signal: ctx.signal,
      onBytes: (n) => report(n),
      direct: deps.direct?.get(a.name),
    });
    report(Number(a.sizeBytes), true);
    return {
      name: a.name,
      observed: observed ?? null,
      error: '',
      cleanupError: await cleanup,
      seconds: (Date.now() - started) / 1000,
    };
  } catch (err) {
    const cleanupError = await cleanup;
    ctx.signal.throwIfAborted();
    ctx.log(`${a.name}: the drill could not restore it: ${errorMessage(err)}`);
    return {
      name: a.name,
      observed: null,
      error: errorMessage(err),
      cleanupError,
      seconds: (Date.now() - started) / 1000,
    };
  }
}
