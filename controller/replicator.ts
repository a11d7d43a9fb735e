import { errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { manifestKey, storedArtifactKey } from '../shared/storage/keys.js';
import { isPrunedCopy } from './backup-copies.js';
import type { BackupRecord, Catalog } from './catalog.js';
import type { ControllerMetrics } from './metrics.js';
import type { StorageSet } from './storage-set.js';

/** Longest wait between two attempts at one replica copy, ms. */
const MAX_BACKOFF_MS = 3600_000;

/**
 * Retries replica copies that failed during a backup's single pass: every
 * `intervalMs` it reads the catalog's under-replicated backups
 * (`Catalog.listUnderReplicated`, an index: not the whole catalog) and, for
 * each replica whose next attempt is due, copies each artifact and the
 * manifest from the primary copy to that replica, checking size and SHA-256. A success marks
 * the replica `complete`; a failure doubles the wait (capped at one hour).
 */
export class Replicator {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(
    private readonly catalog: Catalog,
    private readonly storages: StorageSet,
    private readonly metrics: ControllerMetrics,
    private readonly logger: Logger,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.running ??= this.pass().finally(() => {
        this.running = undefined;
      });
    }, this.intervalMs);
    this.timer.unref();
  }

  /** One pass over the under-replicated backups. Never throws. */
  async pass(): Promise<void> {
    // With one location there is no replica to copy: nothing to read.
    if (this.storages.all().length < 2) return;
    try {
      const now = Date.now();
      // The catalog's under-replicated index: a pass reads the backups with work, not every backup.
      for (const b of await this.catalog.listUnderReplicated()) {
        for (const [name, state] of Object.entries(b.replicas ?? {})) {
          // A copy retention pruned on purpose is not copied back.
          if (state.status === 'complete' || isPrunedCopy(b, name)) continue;
          if (state.nextAttempt && Date.parse(state.nextAttempt) > now) continue;
          await this.copy(b, name);
        }
      }
      // Count after the copies.
      this.metrics.underReplicated.reset();
      for (const [env, n] of await this.catalog.countUnderReplicated())
        this.metrics.underReplicated.set({ environment: env }, n);
    } catch (err) {
      this.logger.error({ err: errorMessage(err) }, 'replication pass failed');
    }
  }

  private async copy(b: BackupRecord, location: string): Promise<void> {
    const primary = this.storages.backend(b.storage);
    const replica = this.storages.backend(location);
    const state = b.replicas![location]!;
    try {
      for (const a of b.artifacts) {
        const result = await replica.put(
          storedArtifactKey(b.id, a),
          await primary.get(storedArtifactKey(b.id, a)),
        );
        if (result.sha256 !== a.sha256 || result.sizeBytes !== a.size_bytes) {
          throw new Error(
            `copy of ${a.name} differs from the manifest (${result.sizeBytes} bytes sha256 ${result.sha256})`,
          );
        }
      }
      await replica.put(manifestKey(b.id), await primary.get(manifestKey(b.id)));
      await this.update(b.id, location, { status: 'complete', attempts: state.attempts + 1 });
      this.metrics.replicaCopies.inc({ location, result: 'ok' });
      this.logger.info({ backup: b.id, location }, 'replica copy completed from the primary');
    } catch (err) {
      const attempts = state.attempts + 1;
      const wait = Math.min(this.intervalMs * 2 ** attempts, MAX_BACKOFF_MS);
      await this.update(b.id, location, {
        status: 'failed',
        attempts,
        error: errorMessage(err),
        nextAttempt: new Date(Date.now() + wait).toISOString(),
      });
      this.metrics.replicaCopies.inc({ location, result: 'failed' });
      this.logger.warn(
        { backup: b.id, location, attempts, retryInS: wait / 1000, err: errorMessage(err) },
        'replica copy failed',
      );
    }
  }

  /** Re-reads the entry (it may have changed, or gone) and writes the replica's new state. */
  private async update(id: string, location: string, state: NonNullable<BackupRecord['replicas']>[string]) {
    const fresh = await this.catalog.getBackup(id).catch(() => undefined);
    if (!fresh || fresh.status !== 'complete' || isPrunedCopy(fresh, location)) return;
    fresh.replicas = { ...fresh.replicas, [location]: state };
    await this.catalog.putBackup(fresh);
  }

  /** Stops the timer and waits for a pass in flight. Safe to call twice. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
