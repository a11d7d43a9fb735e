import type { EnvironmentConfig, StorageConfig } from '../shared/config.js';
import type { WirePruneDecision } from '../shared/wire.js';
import { InvalidArgumentError, NotFoundError, NotRestorableError, errorMessage } from '../shared/errors.js';
import { failpoint } from '../shared/failpoint.js';
import type { Logger } from '../shared/logger.js';
import type { StorageBackend } from '../shared/storage/backend.js';
import type { StorageSet } from './storage-set.js';
import { backupPrefix } from '../shared/storage/keys.js';
import { storedLocations } from './backup-copies.js';
import type { BackupRecord, Catalog } from './catalog.js';
import type { BackupLifecycle } from './jobs.js';
import type { ControllerMetrics } from './metrics.js';
import {
  checkManualCapacity,
  isWithinRestorableWindow,
  manualLimit,
  manualLimitError,
  resolvePolicy,
  selectCopyRetention,
  type LocationRetention,
} from './retention.js';

type LocationRetentionConfig = NonNullable<StorageConfig['retention']>;

/** What verification says about restoring a backup (implemented by controller/verifier.ts). */
export interface VerificationGate {
  /** Why the backup must not be restored because of its verifications, or undefined. */
  refusal(backup: BackupRecord): string | undefined;
  /** The locations whose copy of the backup failed its last conclusive verification. */
  failedLocations(backup: BackupRecord): string[];
}

/** One backup's fate in a prune. */
export type PruneDecision = WirePruneDecision;

/**
 * Applies retention: the manual backup limit before a backup, pruning after
 * each backup and on the prune schedule, `backup:delete`, and the restorable
 * window.
 *
 * Deleting is crash-safe (the order restic's `forget --prune` and pgBackRest's
 * expire follow in spirit): the catalog entry is first marked `expiring`, then
 * the artifacts are deleted from storage, then the entry is removed. A crash at
 * any step leaves an `expiring` entry, which the next prune finishes. A prune
 * also deletes objects under `backups/<id>/` whose id the catalog does not
 * know, so nothing stays in storage that the catalog does not know about.
 *
 * Retention is decided per storage location (see selectCopyRetention): a
 * location's own `retention` replaces the environment's for its copies. A
 * backup no location keeps is expired as above; a backup some location keeps
 * loses only the other locations' copies (see pruneCopy), recorded in its
 * `pruned` field.
 */
export class RetentionManager implements BackupLifecycle {
  private chain: Promise<unknown> = Promise.resolve();
  private gate: VerificationGate | undefined;

  private locationRetention = new Map<string, LocationRetentionConfig>();

  constructor(
    private readonly environments: EnvironmentConfig[],
    private readonly catalog: Catalog,
    private readonly storages: StorageSet,
    private readonly metrics: ControllerMetrics,
    private readonly logger: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  private env(name: string): EnvironmentConfig | undefined {
    return this.environments.find((e) => e.name === name);
  }

  /**
   * Gives storage locations their own retention (the `retention` of a `storage:` entry): it replaces
   * the environment's for that location's copies. Locations not given follow their environment's.
   *
   * @throws InvalidArgumentError for an invalid policy (see resolvePolicy).
   */
  setLocationRetention(storage: readonly StorageConfig[]): void {
    const next = new Map<string, LocationRetentionConfig>();
    for (const s of storage) {
      if (!s.retention) continue;
      resolvePolicy(s.retention);
      next.set(s.name, s.retention);
    }
    this.locationRetention = next;
  }

  /** The retention of an environment's copies in one location: the location's own, else the environment's. */
  private rulesFor(env: EnvironmentConfig, location: string): LocationRetention | undefined {
    const cfg = this.locationRetention.get(location) ?? env.retention;
    if (!cfg) return undefined;
    return { policy: resolvePolicy(cfg), ...(cfg.timezone ? { timeZone: cfg.timezone } : {}) };
  }

  /** Runs deletions one at a time (prunes after concurrent backups must not race). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  /**
   * Refuses a manual backup over the environment's limit (see manualLimit); in-flight manual
   * backups hold a slot. `--replace-oldest` skips the check: afterComplete rotates instead.
   *
   * @throws InvalidArgumentError naming the limit and the oldest manual backup.
   */
  async beforeCreate(
    env: EnvironmentConfig,
    tag: 'manual' | 'automated',
    replaceOldest: boolean,
  ): Promise<void> {
    if (tag !== 'manual' || replaceOldest) return;
    const capacity = checkManualCapacity(
      await this.catalog.listBackups(env.name),
      manualLimit(env.type, env.manual_limit),
    );
    if (capacity.full) throw manualLimitError(env.name, env.type, capacity);
  }

  async afterComplete(env: EnvironmentConfig, backup: BackupRecord, replaceOldest: boolean): Promise<void> {
    if (replaceOldest && backup.tag === 'manual') {
      const limit = manualLimit(env.type, env.manual_limit);
      const manual = (await this.catalog.listBackups(env.name)).filter(
        (b) => b.tag === 'manual' && b.status === 'complete',
      );
      for (const old of manual.slice(limit)) {
        this.logger.info({ backup: old.id, environment: env.name }, 'replacing the oldest manual backup');
        await this.delete(old.id);
      }
    }
    await this.prune(env.name, false);
  }

  /** Makes the restorable rule also ask verification (see controller/verifier.ts). */
  setVerificationGate(gate: VerificationGate): void {
    this.gate = gate;
  }

  /**
   * Complete, inside the environment's restorable window (`retention.restorable_days`),
   * and not refused by its verifications (no verified-good copy anywhere; see controller/verifier.ts).
   */
  isRestorable(backup: BackupRecord): boolean {
    return this.restoreRefusal(backup) === undefined;
  }

  /** Why a backup cannot be restored, as the error a restore throws; undefined when it can. */
  restoreRefusal(backup: BackupRecord): NotRestorableError | undefined {
    if (backup.status !== 'complete') {
      return new NotRestorableError(
        `backup ${backup.id} is ${backup.status}, not restorable${backup.error ? `: ${backup.error}` : ''}`,
      );
    }
    const days = this.env(backup.environment)?.retention?.restorable_days;
    if (!isWithinRestorableWindow(backup.created, days, this.now())) {
      return new NotRestorableError(
        `backup ${backup.id} is older than the restorable window of ${backup.environment}`,
        { hint: 'retention.restorable_days in the config sets the window' },
      );
    }
    const refused = this.gate?.refusal(backup);
    if (refused) {
      return new NotRestorableError(`backup ${backup.id} is not restorable: ${refused}`, {
        hint: `once its storage is repaired, envsnap backup:verify ${backup.id} makes it restorable again; or restore another backup`,
      });
    }
    return undefined;
  }

  /**
   * Deletes one backup (expiring → artifacts deleted → entry removed).
   *
   * @throws NotFoundError for an unknown id.
   * @throws InvalidArgumentError while the backup is still running.
   */
  delete(backupId: string): Promise<BackupRecord> {
    return this.serial(async () => {
      const b = await this.catalog.getBackup(backupId);
      if (b.status === 'pending' || b.status === 'in_progress') {
        throw new InvalidArgumentError(`backup ${b.id} is still running`, {
          hint: 'wait for it to finish or fail',
        });
      }
      await this.expire(b);
      return b;
    });
  }

  /**
   * Deletes one location's copy of a backup that stays (another location keeps it): the entry first
   * records the copy as pruned (so restores, verification and the replicator leave that location
   * alone), then the objects go, then the entry says the deletion is done. A crash in between leaves
   * `done: false`, which the next prune finishes.
   */
  private async pruneCopy(id: string, location: string, reason: string): Promise<void> {
    const mark = async (done: boolean) => {
      const fresh = await this.catalog.getBackup(id);
      const prev = fresh.pruned?.[location];
      fresh.pruned = {
        ...fresh.pruned,
        [location]: { time: prev?.time ?? this.now().toISOString(), reason: prev?.reason ?? reason, done },
      };
      await this.catalog.putBackup(fresh);
    };
    await mark(false);
    await this.storages.backend(location).deletePrefix(backupPrefix(id));
    failpoint('prune.after-delete-copy');
    await mark(true);
    this.metrics.copiesPruned.inc({ location });
  }

  private async expire(b: BackupRecord): Promise<void> {
    if (b.status !== 'expiring') {
      b.status = 'expiring';
      await this.catalog.putBackup(b);
    }
    await this.storages.forEnvironment(b.environment).deletePrefix(backupPrefix(b.id));
    failpoint('prune.after-delete-artifacts');
    await this.catalog.deleteBackup(b.id);
    this.metrics.backupsPruned.inc({ environment: b.environment });
  }

  /**
   * Applies each environment's retention (one environment, or all). With
   * `dryRun` nothing changes and the decisions say what would happen and why.
   */
  prune(environment: string | undefined, dryRun: boolean): Promise<PruneDecision[]> {
    return this.serial(async () => {
      if (environment && !this.env(environment))
        throw new NotFoundError(`environment "${environment}" not found`);
      const all = await this.catalog.listBackups();
      const decisions: PruneDecision[] = [];
      // Finish deletions a crash interrupted.
      for (const b of all.filter((x) => x.status === 'expiring')) {
        if (environment && b.environment !== environment) continue;
        decisions.push({
          backupId: b.id,
          environment: b.environment,
          created: b.created,
          tag: b.tag,
          keep: false,
          reasons: ['interrupted deletion'],
        });
        if (!dryRun) await this.expire(b);
      }
      // Finish copy deletions a crash interrupted.
      for (const b of all) {
        if (environment && b.environment !== environment) continue;
        for (const [location, p] of Object.entries(b.pruned ?? {})) {
          if (p.done === false && !dryRun && b.status !== 'expiring')
            await this.pruneCopy(b.id, location, p.reason);
        }
      }
      for (const env of this.environments) {
        if (environment && env.name !== environment) continue;
        const backups = all.filter((b) => b.environment === env.name && b.status !== 'expiring');
        const byId = new Map(backups.map((b) => [b.id, b]));
        const selected = selectCopyRetention(
          backups.map((b) => ({
            id: b.id,
            created: b.created,
            tag: b.tag,
            status: b.status,
            locations: storedLocations(b),
            unusable: [
              ...Object.entries(b.replicas ?? {})
                .filter(([, r]) => r.status !== 'complete')
                .map(([name]) => name),
              ...(this.gate?.failedLocations(b) ?? []),
            ],
          })),
          (location) => this.rulesFor(env, location),
          this.now(),
        );
        for (const d of selected) {
          const b = byId.get(d.id)!;
          decisions.push({
            backupId: b.id,
            environment: env.name,
            created: b.created,
            tag: b.tag,
            keep: d.keep,
            reasons: d.reasons,
            locations: d.locations,
          });
          if (dryRun) continue;
          if (!d.keep) {
            this.logger.info(
              { backup: b.id, environment: env.name, reason: d.reasons.join('; ') },
              'pruning backup',
            );
            await this.expire(b);
            continue;
          }
          for (const l of d.locations) {
            if (l.keep) continue;
            if (!this.storages.all().some((s) => s.name === l.location)) {
              this.logger.warn(
                { backup: b.id, location: l.location },
                'copy left in place: its storage location is no longer configured',
              );
              continue;
            }
            const reason = l.reasons.join(', ');
            this.logger.info(
              { backup: b.id, environment: env.name, location: l.location, reason },
              'pruning the copy of one location (another location keeps the backup)',
            );
            await this.pruneCopy(b.id, l.location, reason);
          }
        }
      }
      if (!dryRun && !environment) await this.removeOrphans(new Set(all.map((b) => b.id)));
      return decisions.sort((a, b) => b.created.localeCompare(a.created));
    });
  }

  /** Deletes stored objects of backups the catalog does not know. */
  private async removeOrphans(known: Set<string>): Promise<void> {
    for (const location of this.storages.all()) await this.removeOrphansIn(location, known);
  }

  private async removeOrphansIn(location: StorageBackend, known: Set<string>): Promise<void> {
    const ids = new Set((await location.list('backups/')).map((k) => k.split('/')[1]!));
    for (const id of ids) {
      if (known.has(id)) continue;
      // A backup created since the catalog was read is in the catalog now.
      try {
        await this.catalog.getBackup(id);
        continue;
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
      }
      this.logger.warn(
        { backup: id, storage: location.name },
        'removing objects of a backup the catalog does not know',
      );
      await location
        .deletePrefix(backupPrefix(id))
        .catch((err: unknown) => this.logger.error({ err: errorMessage(err) }, 'orphan removal failed'));
    }
  }
}
