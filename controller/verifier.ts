import { createHash } from 'node:crypto';
import cron, { type ScheduledTask } from 'node-cron';
import { InvalidArgumentError, NotFoundError, errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { parseManifest } from '../shared/manifest.js';
import type { StorageBackend } from '../shared/storage/backend.js';
import { backupPrefix, manifestKey, storedArtifactKey } from '../shared/storage/keys.js';
import type {
  BackupRecord,
  Catalog,
  LocationVerification,
  ObjectCheck,
  VerificationRecord,
  VerificationResult,
} from './catalog.js';
import { copyLocations } from './backup-copies.js';
import type { ControllerMetrics } from './metrics.js';
import type { VerificationGate } from './retention-manager.js';

/** The manifest's name inside a backup (`backups/<id>/manifest.json`). */
const MANIFEST_NAME = 'manifest.json';

/** A manifest larger than this is not read (it is not one envsnap wrote), bytes. */
const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

/** Object checks that prove a stored copy bad (as opposed to `error`: storage could not be read). */
const BAD: ReadonlySet<ObjectCheck['status']> = new Set([
  'missing',
  'size_mismatch',
  'checksum_mismatch',
  'manifest_mismatch',
]);

/** One backup's verification as `backup:verify` reports it. */
export interface BackupVerification {
  backupId: string;
  environment: string;
  created: string;
  /** When it ran (ISO 8601). */
  time: string;
  /** Worst result over `locations`: failed, then error, then ok. */
  result: VerificationResult;
  /** The locations checked (by this run), or every location recorded (by `lastVerification`). */
  locations: LocationVerification[];
}

/** One finding of `repository:check`. */
export interface RepositoryIssue {
  /** Storage location name. */
  location: string;
  /**
   * `orphan`: an object the catalog does not know (its backup id is unknown, or
   * it is not an artifact or the manifest of its backup); `missing` or
   * `size_mismatch`: an object a complete backup needs is gone or has the wrong size.
   */
  kind: 'orphan' | 'missing' | 'size_mismatch';
  /** The backup id from the key (`backups/<id>/…`). */
  backupId: string;
  /** The object's storage key. */
  key: string;
  detail: string;
  /** With `repair`: `deleted`, `marked not restorable`, or `failed: <reason>`; else empty. */
  action: string;
}

/** What `repository:check` found, per location and in total. */
export interface RepositoryReport {
  repair: boolean;
  locations: Array<{ location: string; objects: number; backups: number }>;
  issues: RepositoryIssue[];
}

/** Worst of several results: failed, then error, then ok. */
function worst(results: VerificationResult[]): VerificationResult {
  if (results.includes('failed')) return 'failed';
  if (results.includes('error')) return 'error';
  return 'ok';
}

/**
 * Verifies stored backups: `backup:verify` (re-reads every artifact and the
 * manifest of a backup from storage, streamed, and checks size and SHA-256
 * against the catalog), the scheduled verification (`controller.verify_schedule`),
 * and `repository:check` (orphan objects, and catalog entries whose objects are
 * gone or have the wrong size).
 *
 * Results are kept per storage location (`location` = the storage's name), in
 * the catalog's `verifications` sublevel, one record per backup, and in
 * memory for the restorable rule. A location's `failed` result is conclusive
 * (an object is missing or differs); `error` (storage could not be read) is
 * not, and leaves the location's previous conclusive result in force.
 *
 * The restorable rule (see `refusal`): a backup is refused when at least one of
 * its locations has a conclusive result and none of them a conclusive `ok` —
 * "no verified-good copy anywhere". A backup never verified is restorable; a
 * later verification that passes makes a failed one restorable again.
 * `repository:check --repair` marks a broken backup by recording a `failed`
 * verification (source `repository-check`), so the same rule applies and a
 * passing `backup:verify` lifts it.
 */
export class Verifier implements VerificationGate {
  private readonly state = new Map<string, VerificationRecord>();
  private readonly storages: Map<string, StorageBackend>;
  private recordChain: Promise<unknown> = Promise.resolve();
  private task: ScheduledTask | undefined;
  private scheduled: Promise<void> | undefined;
  private readonly abort = new AbortController();

  /**
   * @param storages every configured storage location.
   * @param environments the configured environments' names (for metrics with zero values).
   * @param schedule cron spec of the scheduled verification of every complete backup; undefined = off.
   */
  constructor(
    private readonly catalog: Catalog,
    storages: StorageBackend[],
    private readonly environments: string[],
    private readonly metrics: ControllerMetrics,
    private readonly logger: Logger,
    private readonly schedule?: string,
  ) {
    this.storages = new Map(storages.map((s) => [s.name, s]));
    metrics.failingVerification = () => this.failingCounts();
  }

  /**
   * Loads the recorded verifications (dropping those of backups no longer in
   * the catalog). Call before serving requests.
   */
  async load(): Promise<void> {
    for (const v of await this.catalog.listVerifications()) {
      try {
        await this.catalog.getBackup(v.backupId);
        this.state.set(v.backupId, v);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        await this.catalog.deleteVerification(v.backupId);
      }
    }
  }

  /** Starts the scheduled verification, if `verify_schedule` is set. */
  async start(): Promise<void> {
    if (!this.schedule) return;
    this.task = cron.createTask(this.schedule, () => this.scheduledRun(), {
      name: 'verify',
      suppressMissedWarning: true,
    });
    await this.task.start();
    this.logger.info({ schedule: this.schedule }, 'scheduled verification on');
  }

  /** Stops the schedule and aborts a verification that is running. Safe to call twice. */
  async stop(): Promise<void> {
    await this.task?.destroy();
    this.task = undefined;
    this.abort.abort(new Error('the controller is shutting down'));
    await this.scheduled;
  }

  private scheduledRun(): void {
    if (this.scheduled) {
      this.logger.warn('scheduled verification skipped: the previous one is still running');
      return;
    }
    const started = Date.now();
    this.scheduled = this.verifyAll({ source: 'schedule' })
      .then((all) => {
        const bad = all.filter((v) => v.result !== 'ok');
        this.logger.info(
          { backups: all.length, notOk: bad.length, seconds: (Date.now() - started) / 1000 },
          'scheduled verification finished',
        );
      })
      .catch((err: unknown) => this.logger.error({ err: errorMessage(err) }, 'scheduled verification failed'))
      .finally(() => {
        this.scheduled = undefined;
      });
  }

  /**
   * The locations holding copies of a backup: its primary (`storage`) and its complete replicas, less
   * the copies retention pruned (see controller/backup-copies.ts).
   */
  private locationsOf(b: BackupRecord): string[] {
    return copyLocations(b);
  }

  /** The locations holding a copy whose last conclusive verification failed. */
  failedLocations(backup: BackupRecord): string[] {
    const held = new Set(copyLocations(backup));
    return (this.state.get(backup.id)?.locations ?? [])
      .filter((l) => held.has(l.location) && l.conclusive?.result === 'failed')
      .map((l) => l.location);
  }

  /**
   * Why the backup must not be restored because of its verifications, or
   * undefined when nothing stands against it (see the class comment).
   */
  refusal(backup: BackupRecord): string | undefined {
    const rec = this.state.get(backup.id);
    if (!rec) return undefined;
    // A copy retention pruned no longer counts, good or bad.
    const held = new Set(copyLocations(backup));
    const conclusive = rec.locations.flatMap((l) =>
      l.conclusive && held.has(l.location) ? [{ ...l.conclusive, location: l.location }] : [],
    );
    if (conclusive.length === 0 || conclusive.some((c) => c.result === 'ok')) return undefined;
    const last = conclusive.sort((a, b) => b.time.localeCompare(a.time))[0]!;
    return `its verification failed in storage "${last.location}" at ${last.time}: ${last.detail}`;
  }

  /** The backup's last recorded verification, all locations, or undefined if never verified. */
  lastVerification(backup: BackupRecord): BackupVerification | undefined {
    const rec = this.state.get(backup.id);
    if (!rec) return undefined;
    return {
      backupId: backup.id,
      environment: backup.environment,
      created: backup.created,
      time: rec.time,
      result: worst(rec.locations.map((l) => l.result)),
      locations: rec.locations,
    };
  }

  /**
   * Verifies one complete backup in each of its locations (or only `location`),
   * records the result and counts it in the metrics.
   *
   * @throws NotFoundError for an unknown backup or location, or a location without a copy of it.
   * @throws InvalidArgumentError when the backup is not complete.
   */
  async verifyBackup(
    backupId: string,
    opts: { location?: string; source?: VerificationRecord['source'] } = {},
  ): Promise<BackupVerification> {
    const backup = await this.catalog.getBackup(backupId);
    if (backup.status !== 'complete') {
      throw new InvalidArgumentError(
        `backup ${backup.id} is ${backup.status}; only complete backups are verified`,
      );
    }
    if (opts.location !== undefined) this.checkLocation(opts.location);
    const where = this.locationsOf(backup).filter((l) => opts.location === undefined || l === opts.location);
    if (where.length === 0) {
      throw new NotFoundError(`backup ${backup.id} has no copy in storage "${opts.location}"`, {
        hint: `its copies are in: ${this.locationsOf(backup).join(', ')}`,
      });
    }
    return this.verify(backup, where, opts.source ?? 'verify');
  }

  /**
   * Verifies every complete backup (of one environment, or all), one at a
   * time, newest first. Backups deleted meanwhile are left out.
   *
   * @throws NotFoundError for an unknown environment or location.
   */
  async verifyAll(
    opts: { environment?: string; location?: string; source?: VerificationRecord['source'] } = {},
  ): Promise<BackupVerification[]> {
    if (opts.environment !== undefined && !this.environments.includes(opts.environment)) {
      throw new NotFoundError(`environment "${opts.environment}" not found`);
    }
    if (opts.location !== undefined) this.checkLocation(opts.location);
    const out: BackupVerification[] = [];
    for (const b of await this.catalog.listBackups(opts.environment)) {
      this.abort.signal.throwIfAborted();
      if (b.status !== 'complete') continue;
      const where = this.locationsOf(b).filter((l) => opts.location === undefined || l === opts.location);
      if (where.length === 0) continue;
      const current = await this.catalog.getBackup(b.id).catch(() => undefined);
      if (current?.status !== 'complete') continue;
      out.push(await this.verify(current, where, opts.source ?? 'verify'));
    }
    return out;
  }

  /** @throws NotFoundError when no storage location has this name. */
  private checkLocation(name: string): void {
    if (!this.storages.has(name)) {
      throw new NotFoundError(`storage location "${name}" is not configured`, {
        hint: `configured: ${[...this.storages.keys()].join(', ')}`,
      });
    }
  }

  private async verify(
    backup: BackupRecord,
    where: string[],
    source: VerificationRecord['source'],
  ): Promise<BackupVerification> {
    const results: LocationVerification[] = [];
    for (const location of where) results.push(await this.verifyIn(backup, location));
    await this.record(backup, results, source);
    for (const r of results) {
      const labels = { environment: backup.environment, location: r.location, result: r.result };
      this.metrics.verifications.inc(labels);
      this.metrics.lastVerification.set(labels, Date.parse(r.time) / 1000);
      const log = {
        backup: backup.id,
        environment: backup.environment,
        location: r.location,
        detail: r.detail,
      };
      if (r.result === 'ok') this.logger.info(log, 'backup verified');
      else this.logger.warn(log, `backup verification ${r.result}`);
    }
    return {
      backupId: backup.id,
      environment: backup.environment,
      created: backup.created,
      time: results[0]?.time ?? new Date().toISOString(),
      result: worst(results.map((r) => r.result)),
      locations: results,
    };
  }

  /** Checks every artifact and the manifest of a backup in one location. */
  private async verifyIn(backup: BackupRecord, location: string): Promise<LocationVerification> {
    const time = new Date().toISOString();
    const storage = this.storages.get(location);
    if (!storage) {
      return {
        location,
        result: 'error',
        time,
        detail: `storage location "${location}" is not configured`,
        objects: [],
      };
    }
    const objects: ObjectCheck[] = [];
    const artifacts = [...backup.artifacts].sort((a, b) => a.name.localeCompare(b.name));
    for (const a of artifacts) {
      objects.push(
        await this.checkObject(storage, storedArtifactKey(backup.id, a), a.name, a.size_bytes, a.sha256),
      );
    }
    objects.push(await this.checkManifest(storage, backup));
    const result: VerificationResult = objects.some((o) => BAD.has(o.status))
      ? 'failed'
      : objects.some((o) => o.status === 'error')
        ? 'error'
        : 'ok';
    const notOk = objects.filter((o) => o.status !== 'ok');
    const detail =
      result === 'ok'
        ? `${artifacts.length} artifact${artifacts.length === 1 ? '' : 's'} (${backup.sizeBytes} bytes) and the manifest match`
        : notOk
            .slice(0, 3)
            .map((o) => `${o.name}: ${o.status.replace('_', ' ')}`)
            .join('; ') + (notOk.length > 3 ? `; and ${notOk.length - 3} more` : '');
    return { location, result, time, detail, objects };
  }

  /** Stats, then streams one object through SHA-256 (never holding it in memory). */
  private async checkObject(
    storage: StorageBackend,
    key: string,
    name: string,
    sizeBytes: number,
    sha256: string,
  ): Promise<ObjectCheck> {
    const signal = this.abort.signal;
    try {
      const st = await storage.stat(key);
      if (!st) return { name, status: 'missing', detail: `${key} is not in storage "${storage.name}"` };
      if (st.sizeBytes !== sizeBytes) {
        return {
          name,
          status: 'size_mismatch',
          detail: `stored ${st.sizeBytes} bytes, catalog says ${sizeBytes}`,
        };
      }
      const stream = await storage.get(key);
      const hash = createHash('sha256');
      let size = 0;
      try {
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          signal.throwIfAborted();
          hash.update(chunk);
          size += chunk.length;
        }
      } finally {
        stream.destroy();
      }
      if (size !== sizeBytes) {
        return { name, status: 'size_mismatch', detail: `read ${size} bytes, catalog says ${sizeBytes}` };
      }
      const actual = hash.digest('hex');
      if (actual !== sha256) {
        return { name, status: 'checksum_mismatch', detail: `sha256 ${actual}, catalog says ${sha256}` };
      }
      return { name, status: 'ok', detail: '' };
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if (err instanceof NotFoundError) {
        return { name, status: 'missing', detail: `${key} is not in storage "${storage.name}"` };
      }
      return { name, status: 'error', detail: errorMessage(err) };
    }
  }

  /** Reads the manifest (bounded) and compares it with the catalog entry. */
  private async checkManifest(storage: StorageBackend, backup: BackupRecord): Promise<ObjectCheck> {
    const name = MANIFEST_NAME;
    const key = manifestKey(backup.id);
    const signal = this.abort.signal;
    try {
      const st = await storage.stat(key);
      if (!st) return { name, status: 'missing', detail: `${key} is not in storage "${storage.name}"` };
      if (st.sizeBytes > MAX_MANIFEST_BYTES) {
        return {
          name,
          status: 'manifest_mismatch',
          detail: `${st.sizeBytes} bytes: not an envsnap manifest`,
        };
      }
      const stream = await storage.get(key);
      const chunks: Buffer[] = [];
      let size = 0;
      try {
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          signal.throwIfAborted();
          size += chunk.length;
          if (size > MAX_MANIFEST_BYTES) {
            return { name, status: 'manifest_mismatch', detail: 'over 16 MiB: not an envsnap manifest' };
          }
          chunks.push(chunk);
        }
      } finally {
        stream.destroy();
      }
      let m;
      try {
        m = parseManifest(Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        return { name, status: 'manifest_mismatch', detail: errorMessage(err) };
      }
      const problem = manifestDifference(m, backup);
      return problem
        ? { name, status: 'manifest_mismatch', detail: problem }
        : { name, status: 'ok', detail: '' };
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if (err instanceof NotFoundError) {
        return { name, status: 'missing', detail: `${key} is not in storage "${storage.name}"` };
      }
      return { name, status: 'error', detail: errorMessage(err) };
    }
  }

  /**
   * Merges this run's location results into the backup's record (an `error`
   * keeps the location's previous conclusive result) and stores it, unless the
   * backup was deleted or began expiring meanwhile. Serialized, so that two
   * runs never lose each other's locations.
   */
  private record(
    backup: BackupRecord,
    results: LocationVerification[],
    source: VerificationRecord['source'],
  ): Promise<void> {
    const run = async () => {
      const prev = this.state.get(backup.id) ?? (await this.catalog.getVerification(backup.id));
      const byLocation = new Map((prev?.locations ?? []).map((l) => [l.location, l]));
      for (const r of results) {
        const old = byLocation.get(r.location);
        if (r.result === 'error') {
          if (old?.conclusive) r.conclusive = old.conclusive;
        } else {
          r.conclusive = { result: r.result, time: r.time, detail: r.detail };
        }
        byLocation.set(r.location, r);
      }
      const rec: VerificationRecord = {
        backupId: backup.id,
        environment: backup.environment,
        time: results[0]?.time ?? new Date().toISOString(),
        source,
        locations: [...byLocation.values()].sort((a, b) => a.location.localeCompare(b.location)),
      };
      const current = await this.catalog.getBackup(backup.id).catch(() => undefined);
      if (current?.status !== 'complete') return;
      await this.catalog.putVerification(rec);
      this.state.set(backup.id, rec);
    };
    const next = this.recordChain.then(run, run);
    this.recordChain = next.catch(() => undefined);
    return next;
  }

  /**
   * Complete backups refused by the restorable rule, per configured
   * environment (0 included), for `envsnap_backups_failing_verification`.
   * Forgets records of backups deleted since.
   */
  private async failingCounts(): Promise<Array<{ environment: string; count: number }>> {
    const counts = new Map(this.environments.map((e) => [e, 0]));
    for (const rec of [...this.state.values()]) {
      if (!rec.locations.some((l) => l.conclusive?.result === 'failed')) continue;
      const b = await this.catalog.getBackup(rec.backupId).catch(() => undefined);
      if (!b) {
        this.state.delete(rec.backupId);
        continue;
      }
      if (b.status !== 'complete' || !this.refusal(b)) continue;
      counts.set(b.environment, (counts.get(b.environment) ?? 0) + 1);
    }
    return [...counts].map(([environment, count]) => ({ environment, count }));
  }

  /**
   * `repository:check`: lists every object under `backups/` in each location
   * and compares with the catalog. Objects of backups still running or being
   * deleted (`pending`, `in_progress`, `expiring`) are left alone. Sizes are
   * checked with `stat`; checksums are `backup:verify`'s job.
   *
   * With `repair`: orphans are deleted (a whole unknown backup directory at
   * once), and each complete backup with a missing or wrong-size object gets a
   * `failed` verification recorded for that location, which makes it not
   * restorable until a `backup:verify` passes.
   */
  async checkRepository(repair: boolean): Promise<RepositoryReport> {
    const report: RepositoryReport = { repair, locations: [], issues: [] };
    const known = new Map((await this.catalog.listBackups()).map((b) => [b.id, b]));
    for (const [location, storage] of this.storages) {
      const keys = await storage.list('backups/');
      const byId = new Map<string, string[]>();
      for (const key of keys) {
        const id = key.split('/')[1] ?? '';
        byId.set(id, [...(byId.get(id) ?? []), key]);
      }
      report.locations.push({ location, objects: keys.length, backups: byId.size });
      // Objects the catalog does not know.
      for (const [id, group] of byId) {
        const b = known.get(id) ?? (await this.catalog.getBackup(id).catch(() => undefined));
        if (!b) {
          // A backup created since the catalog was read is in the catalog now (its entry comes first).
          const issues = group.map((key) => ({
            location,
            kind: 'orphan' as const,
            backupId: id,
            key,
            detail: 'backup id unknown to the catalog',
            action: '',
          }));
          if (repair) {
            const action = await this.removeOrphanBackup(storage, id, group);
            for (const i of issues) i.action = action;
          }
          report.issues.push(...issues);
          continue;
        }
        if (b.status === 'pending' || b.status === 'in_progress' || b.status === 'expiring') continue;
        const expected = new Set<string>();
        if (b.status === 'complete' && this.locationsOf(b).includes(location)) {
          for (const a of b.artifacts) expected.add(storedArtifactKey(b.id, a));
          expected.add(manifestKey(b.id));
        }
        for (const key of group) {
          if (expected.has(key)) continue;
          const issue: RepositoryIssue = {
            location,
            kind: 'orphan',
            backupId: id,
            key,
            detail: `not an object of backup ${id} (${b.status})`,
            action: '',
          };
          if (repair) issue.action = await this.removeObject(storage, key);
          report.issues.push(issue);
        }
      }
      // Catalog entries whose objects are gone or have the wrong size.
      for (const b of known.values()) {
        if (b.status !== 'complete' || !this.locationsOf(b).includes(location)) continue;
        const issues: RepositoryIssue[] = [];
        const objects: ObjectCheck[] = [];
        // The manifest's size is not in the catalog: only its presence is checked.
        const wanted: Array<{ name: string; key: string; size?: number }> = [
          ...b.artifacts.map((a) => ({ name: a.name, key: storedArtifactKey(b.id, a), size: a.size_bytes })),
          { name: MANIFEST_NAME, key: manifestKey(b.id) },
        ];
        for (const w of wanted) {
          const st = await storage.stat(w.key);
          let check: ObjectCheck = { name: w.name, status: 'ok', detail: 'size matches (checksum not read)' };
          if (!st)
            check = { name: w.name, status: 'missing', detail: `${w.key} is not in storage "${location}"` };
          else if (w.size !== undefined && st.sizeBytes !== w.size)
            check = {
              name: w.name,
              status: 'size_mismatch',
              detail: `stored ${st.sizeBytes} bytes, catalog says ${w.size}`,
            };
          objects.push(check);
          if (check.status !== 'ok') {
            issues.push({
              location,
              kind: check.status === 'missing' ? 'missing' : 'size_mismatch',
              backupId: b.id,
              key: w.key,
              detail: check.detail,
              action: '',
            });
          }
        }
        if (issues.length === 0) continue;
        // Deleted or expiring since the catalog was read: not broken, just going.
        const current = await this.catalog.getBackup(b.id).catch(() => undefined);
        if (current?.status !== 'complete') continue;
        if (repair) {
          const bad = objects.filter((o) => o.status !== 'ok');
          const result: LocationVerification = {
            location,
            result: 'failed',
            time: new Date().toISOString(),
            detail: bad.map((o) => `${o.name}: ${o.status.replace('_', ' ')}`).join('; '),
            objects,
          };
          let action = 'marked not restorable';
          try {
            await this.record(current, [result], 'repository-check');
            const labels = { environment: b.environment, location, result: 'failed' };
            this.metrics.verifications.inc(labels);
            this.metrics.lastVerification.set(labels, Date.parse(result.time) / 1000);
            this.logger.warn(
              { backup: b.id, location, detail: result.detail },
              'backup marked not restorable',
            );
          } catch (err) {
            action = `failed: ${errorMessage(err)}`;
          }
          for (const i of issues) i.action = action;
        }
        report.issues.push(...issues);
      }
    }
    return report;
  }

  private async removeOrphanBackup(storage: StorageBackend, id: string, keys: string[]): Promise<string> {
    try {
      // One last look: a backup that registered since is not an orphan.
      if (
        await this.catalog.getBackup(id).then(
          () => true,
          () => false,
        )
      )
        return 'skipped: backup now known';
      if (keys.some((k) => k.startsWith(backupPrefix(id)))) await storage.deletePrefix(backupPrefix(id));
      for (const k of keys.filter((k) => !k.startsWith(backupPrefix(id)))) await storage.delete(k);
      this.logger.warn(
        { backup: id, location: storage.name, objects: keys.length },
        'orphan objects removed',
      );
      return 'deleted';
    } catch (err) {
      return `failed: ${errorMessage(err)}`;
    }
  }

  private async removeObject(storage: StorageBackend, key: string): Promise<string> {
    try {
      await storage.delete(key);
      this.logger.warn({ key, location: storage.name }, 'orphan object removed');
      return 'deleted';
    } catch (err) {
      return `failed: ${errorMessage(err)}`;
    }
  }
}

/** What differs between a stored manifest and the catalog entry, or undefined when they agree. */
function manifestDifference(m: ReturnType<typeof parseManifest>, b: BackupRecord): string | undefined {
  if (m.backup_id !== b.id) return `manifest is of backup ${m.backup_id}`;
  if (m.environment !== b.environment)
    return `manifest says environment ${m.environment}, catalog ${b.environment}`;
  const stored = new Map(m.artifacts.map((a) => [a.name, a]));
  if (stored.size !== b.artifacts.length) {
    return `manifest lists ${stored.size} artifacts, catalog ${b.artifacts.length}`;
  }
  for (const a of b.artifacts) {
    const s = stored.get(a.name);
    if (!s) return `manifest does not list ${a.name}`;
    if (s.size_bytes !== a.size_bytes || s.sha256 !== a.sha256) {
      return `manifest says ${a.name} is ${s.size_bytes} bytes sha256 ${s.sha256}, catalog ${a.size_bytes} bytes sha256 ${a.sha256}`;
    }
  }
  return undefined;
}
