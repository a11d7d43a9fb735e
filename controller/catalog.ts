import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import { NotFoundError } from '../shared/errors.js';
import type { ArtifactDrillResult } from '../shared/drill-stats.js';
import type { ArtifactEntry } from '../shared/manifest.js';

/** Backup states, in the order a backup goes through them. */
export type BackupState = 'pending' | 'in_progress' | 'complete' | 'failed' | 'expiring';

/** A backup as the catalog keeps it. Times are ISO 8601 UTC. */
export interface BackupRecord {
  id: string;
  environment: string;
  created: string;
  finished?: string;
  status: BackupState;
  live: boolean;
  tag: 'manual' | 'automated';
  error?: string;
  consistency: string;
  activityId: string;
  /** The storage location holding the primary copy. */
  storage: string;
  artifacts: ArtifactEntry[];
  /** Sum of the artifacts' stored sizes, bytes. */
  sizeBytes: number;
  /** Replica locations of the environment, by storage name (the primary is `storage`). */
  replicas?: Record<string, ReplicaState>;
  /**
   * Copies deleted by retention, by storage name (the primary's or a replica's): that location's own
   * rules let the copy go while another location's kept the backup. A pruned copy is not missing: the
   * restore, the verifier and the replicator leave it alone (see controller/backup-copies.ts).
   */
  pruned?: Record<string, PrunedCopy>;
}

/** A copy of a backup that retention deleted from one location. */
export interface PrunedCopy {
  /** When it was deleted (ISO 8601). */
  time: string;
  /** The retention decision, e.g. `not kept by any automated rule (last 2)`. */
  reason: string;
  /** False while its objects are being deleted (a crash leaves it so; the next prune finishes). */
  done?: boolean;
}

/**
 * One replica copy of a backup. `failed` copies are retried from the primary
 * copy with backoff (controller/replicator.ts).
 */
export interface ReplicaState {
  status: 'complete' | 'failed';
  /** The last error, for failed copies. */
  error?: string;
  /** Copy attempts after the backup itself. */
  attempts: number;
  /** When the next attempt may run (ISO 8601). */
  nextAttempt?: string;
}

export type ActivityState = 'pending' | 'in_progress' | 'complete' | 'failed';

export interface ActivityRecord {
  id: string;
  type: 'backup.create' | 'backup.restore' | 'db.dump' | 'backup.drill';
  environment: string;
  state: ActivityState;
  created: string;
  finished?: string;
  backupId: string;
  error?: string;
  description: string;
}

export interface LogRecord {
  time: string;
  level: 'info' | 'warn' | 'error';
  message: string;
}

/** What the scheduler remembers of one schedule, across restarts. */
export interface ScheduleRecord {
  /** `<environment>#<index in schedules:>`. */
  key: string;
  /** The cron spec it was recorded for; a changed spec starts afresh. */
  cron: string;
  /** The scheduled time of the last run that fired or was judged (ISO 8601). */
  lastScheduledFor?: string;
  /** When it last actually started a backup or was skipped (ISO 8601). */
  lastRun?: string;
  lastResult?: 'started' | 'complete' | 'failed' | 'skipped' | 'missed';
  lastBackupId?: string;
  lastError?: string;
}

/**
 * A dump lock: the lease of one HA service (`<environment>/<service>`) held by
 * one node for one task. Kept in the catalog so that a restarted controller
 * honours the leases still live.
 */
export interface LockRecord {
  key: string;
  environment: string;
  service: string;
  /** The node holding the lease. */
  holder: string;
  /** Fencing token: grows with every grant, over all locks, across restarts. */
  token: number;
  /** When the lease ends unless renewed (ISO 8601). */
  expires: string;
  activityId: string;
  taskId: string;
  purpose: 'backup' | 'db-dump';
}

/** What one check of one stored object found (see controller/verifier.ts). */
export type ObjectCheckStatus =
  'ok' | 'missing' | 'size_mismatch' | 'checksum_mismatch' | 'manifest_mismatch' | 'error';

/** One object of a backup as a verification found it. */
export interface ObjectCheck {
  /** Artifact name, or `manifest.json`. */
  name: string;
  status: ObjectCheckStatus;
  /** What differs or what failed; empty when ok. */
  detail: string;
}

/**
 * A verification's outcome in one storage location: `ok` (every object
 * matches), `failed` (an object is missing or differs: conclusive) or `error`
 * (storage could not be read: inconclusive).
 */
export type VerificationResult = 'ok' | 'failed' | 'error';

/** A backup's last verification in one storage location. */
export interface LocationVerification {
  /** The storage location's name from the config. */
  location: string;
  result: VerificationResult;
  /** When it ran (ISO 8601). */
  time: string;
  /** One line for people: what was wrong, or how much was checked. */
  detail: string;
  /** Every object checked, in name order. */
  objects: ObjectCheck[];
  /**
   * The last conclusive result (`ok` or `failed`) here, which decides
   * restorability: an `error` run keeps the previous one.
   */
  conclusive?: { result: 'ok' | 'failed'; time: string; detail: string };
}

/** A backup's last verification, per storage location (catalog key: the backup id). */
export interface VerificationRecord {
  backupId: string;
  environment: string;
  /** When the last verification of any location ran (ISO 8601). */
  time: string;
  /** What ran it. */
  source: 'verify' | 'schedule' | 'repository-check';
  locations: LocationVerification[];
}

/**
 * The catalog format {@link Catalog} writes; 2 added the `backups-by-environment` index, 3 the
 * `backups-under-replicated` index.
 */
export const CATALOG_FORMAT = 3;

/**
 * Whether a backup is complete and some replica of it still lacks its copy: a replica neither
 * `complete` nor pruned by retention (a pruned copy is gone on purpose; see `isPrunedCopy`). These are
 * the backups the replicator has work for.
 */
export function isUnderReplicated(b: BackupRecord): boolean {
  return (
    b.status === 'complete' &&
    Object.entries(b.replicas ?? {}).some(
      ([name, r]) => r.status !== 'complete' && b.pruned?.[name] === undefined,
    )
  );
}

/** One page of {@link Catalog.listBackupsPage}. */
export interface BackupPage {
  /** Newest first. */
  backups: BackupRecord[];
  /** How many older backups match and were not returned (0 when this is the last page). */
  more: number;
}

/** The `backups-by-environment` key of a backup. Names never hold `!`, which sorts below them. */
function indexKey(environment: string, id: string): string {
  return `${environment}!${id}`;
}

/** A LevelDB iterator limit: `Infinity` becomes -1 (no limit). */
function toLimit(limit: number): number {
  return Number.isFinite(limit) ? limit : -1;
}

/** Counts the keys of an iterator without decoding any value. */
async function countKeys(keys: AsyncIterable<string>): Promise<number> {
  let n = 0;
  for await (const key of keys) n += key === undefined ? 0 : 1;
  return n;
}

/** A backup's last restore drill (catalog key: the backup id; see JobManager.drillBackup). */
export interface DrillRecord {
  backupId: string;
  environment: string;
  /** When it started (ISO 8601). */
  time: string;
  /** fail when any artifact failed or could not be restored into its scratch target. */
  result: 'pass' | 'fail';
  durationSeconds: number;
  activityId: string;
  /** What ran it. */
  source: 'drill' | 'schedule';
  artifacts: ArtifactDrillResult[];
}

export interface AgentRecord {
  nodeId: string;
  lastSeen: string;
  version: string;
  hostname: string;
}

/**
 * The controller's catalog: backups, activities with their logs, and agents
 * seen, in LevelDB (`level`) under `<state_dir>/catalog`.
 *
 * Keys are time-ordered IDs, so listing newest first is a reverse range scan.
 * The catalog is the only record of what is restorable; the manifest in
 * storage is its copy beside the artifacts.
 *
 * Catalog format 2 (the `catalog-format` key of the `meta` sublevel) adds the
 * `backups-by-environment` index: one key `<environment>!<backup id>` (empty
 * value) per backup, written and deleted in the same LevelDB batch as the
 * backup's record, so that one environment's newest backups are a reverse
 * range read of the index and not a scan of every backup. A catalog of an
 * older format gets its index built once, when it is opened.
 *
 * Format 3 adds the `backups-under-replicated` index: one key per backup that
 * {@link isUnderReplicated} (value: its environment), kept in the same batch, so
 * that the replicator's pass reads the backups it has work for and not the
 * whole catalog.
 */
export class Catalog {
  private readonly db: Level<string, unknown>;
  private readonly backups;
  private readonly byEnvironment;
  private readonly underReplicated;
  private readonly activities;
  private readonly logs;
  private readonly agents;
  private readonly schedules;
  private readonly locks;
  private readonly meta;
  private readonly verifications;
  private readonly drills;
  private logSeq = 0;
  private closed = false;

  private constructor(db: Level<string, unknown>) {
    this.db = db;
    this.backups = db.sublevel<string, BackupRecord>('backups', { valueEncoding: 'json' });
    this.byEnvironment = db.sublevel<string, string>('backups-by-environment', { valueEncoding: 'utf8' });
    this.underReplicated = db.sublevel<string, string>('backups-under-replicated', { valueEncoding: 'utf8' });
    this.activities = db.sublevel<string, ActivityRecord>('activities', { valueEncoding: 'json' });
    this.logs = db.sublevel<string, LogRecord>('activity-log', { valueEncoding: 'json' });
    this.agents = db.sublevel<string, AgentRecord>('agents', { valueEncoding: 'json' });
    this.schedules = db.sublevel<string, ScheduleRecord>('schedules', { valueEncoding: 'json' });
    this.locks = db.sublevel<string, LockRecord>('locks', { valueEncoding: 'json' });
    this.meta = db.sublevel<string, number>('meta', { valueEncoding: 'json' });
    this.verifications = db.sublevel<string, VerificationRecord>('verifications', {
      valueEncoding: 'json',
    });
    this.drills = db.sublevel<string, DrillRecord>('drills', { valueEncoding: 'json' });
  }

  /** Opens (creating) the catalog in `stateDir`. */
  static async open(stateDir: string): Promise<Catalog> {
    const dir = join(stateDir, 'catalog');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
    await db.open();
    const catalog = new Catalog(db);
    try {
      await catalog.upgrade();
    } catch (err) {
      await db.close();
      throw err;
    }
    return catalog;
  }

  /** The catalog format on disk (1 when never marked: catalogs before the index). */
  async format(): Promise<number> {
    return (await this.meta.get('catalog-format')) ?? 1;
  }

  /**
   * Brings an older catalog to {@link CATALOG_FORMAT}: builds the indexes from the backup records
   * (`backups-by-environment` and `backups-under-replicated`), in batches of 1,000, then writes the
   * format marker. Interrupted, it starts over at the next open (index writes are idempotent), so the
   * indexes are built once.
   */
  private async upgrade(): Promise<void> {
    if ((await this.format()) >= CATALOG_FORMAT) return;
    await this.byEnvironment.clear();
    await this.underReplicated.clear();
    let ops: Array<ReturnType<Catalog['indexOps']>[number]> = [];
    for await (const b of this.backups.values()) {
      ops.push(...this.indexOps(b));
      if (ops.length >= 1000) {
        await this.db.batch(ops);
        ops = [];
      }
    }
    await this.db.batch(ops);
    await this.meta.put('catalog-format', CATALOG_FORMAT);
  }

  /** The index writes that go with storing `b`. */
  private indexOps(b: BackupRecord) {
    return [
      { type: 'put' as const, key: indexKey(b.environment, b.id), value: '', sublevel: this.byEnvironment },
      isUnderReplicated(b)
        ? { type: 'put' as const, key: b.id, value: b.environment, sublevel: this.underReplicated }
        : { type: 'del' as const, key: b.id, sublevel: this.underReplicated },
    ];
  }

  /** Writes a backup's record and its index keys in one batch. */
  async putBackup(b: BackupRecord): Promise<void> {
    await this.db.batch([{ type: 'put', key: b.id, value: b, sublevel: this.backups }, ...this.indexOps(b)]);
  }

  /**
   * The backups the replicator has work for ({@link isUnderReplicated}), oldest first, read through
   * the `backups-under-replicated` index: the cost is their number, not the catalog's.
   */
  async listUnderReplicated(): Promise<BackupRecord[]> {
    const ids = await this.underReplicated.keys().all();
    const found = await this.backups.getMany(ids);
    return found.filter((b): b is BackupRecord => b !== undefined);
  }

  /** How many backups of each environment are {@link isUnderReplicated} (index keys only). */
  async countUnderReplicated(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for await (const env of this.underReplicated.values()) counts.set(env, (counts.get(env) ?? 0) + 1);
    return counts;
  }

  /** @throws NotFoundError when no backup has this id. */
  async getBackup(id: string): Promise<BackupRecord> {
    const b = await this.backups.get(id);
    if (!b)
      throw new NotFoundError(`backup ${id} not found`, { hint: 'list backups with envsnap backup:list' });
    return b;
  }

  /**
   * Backups newest first, optionally of one environment (read through the index: the cost is that
   * environment's backups, not the catalog's). Every backup is read: for a bounded page, use
   * {@link listBackupsPage}.
   */
  async listBackups(environment?: string): Promise<BackupRecord[]> {
    if (!environment) return this.backups.values({ reverse: true }).all();
    return (await this.listBackupsPage({ environment, limit: Infinity })).backups;
  }

  /**
   * One page of backups, newest first: at most `limit` backups (of `environment`, or of every
   * environment) created before the backup `before` (exclusive; IDs sort by creation time), with
   * the number of older ones left. One environment is a reverse range read of the
   * `backups-by-environment` index, then a `getMany` of the records; the count of the rest reads
   * keys only.
   */
  async listBackupsPage(opts: { environment?: string; limit: number; before?: string }): Promise<BackupPage> {
    const { environment, limit, before } = opts;
    if (!environment) {
      const range = { reverse: true, ...(before ? { lt: before } : {}) };
      const backups = await this.backups.values({ ...range, limit: toLimit(limit) }).all();
      const last = backups[backups.length - 1];
      const more =
        last && backups.length >= limit ? await countKeys(this.backups.keys({ ...range, lt: last.id })) : 0;
      return { backups, more };
    }
    const range = {
      reverse: true,
      gt: indexKey(environment, ''),
      lt: before ? indexKey(environment, before) : `${environment}"`,
    };
    const keys = await this.byEnvironment.keys({ ...range, limit: toLimit(limit) }).all();
    const ids = keys.map((k) => k.slice(environment.length + 1));
    const found = await this.backups.getMany(ids);
    // A record missing behind an index key would be a bug; never hand out undefined.
    const backups = found.filter((b): b is BackupRecord => b !== undefined);
    const lastKey = keys[keys.length - 1];
    const more =
      lastKey && keys.length >= limit
        ? await countKeys(this.byEnvironment.keys({ ...range, lt: lastKey }))
        : 0;
    return { backups, more };
  }

  /** Removes a backup's entry, its index keys and its verification and drill records in one batch. */
  async deleteBackup(id: string): Promise<void> {
    const b = await this.backups.get(id);
    await this.db.batch([
      { type: 'del', key: id, sublevel: this.backups },
      ...(b
        ? [{ type: 'del' as const, key: indexKey(b.environment, id), sublevel: this.byEnvironment }]
        : []),
      { type: 'del', key: id, sublevel: this.underReplicated },
      { type: 'del', key: id, sublevel: this.verifications },
      { type: 'del', key: id, sublevel: this.drills },
    ]);
  }

  /** Records a backup's last restore drill (replacing the previous one). */
  async putDrill(d: DrillRecord): Promise<void> {
    await this.drills.put(d.backupId, d);
  }

  /** A backup's last restore drill; undefined when never drilled. */
  async getDrill(backupId: string): Promise<DrillRecord | undefined> {
    return this.drills.get(backupId);
  }

  async putVerification(v: VerificationRecord): Promise<void> {
    await this.verifications.put(v.backupId, v);
  }

  async getVerification(backupId: string): Promise<VerificationRecord | undefined> {
    return this.verifications.get(backupId);
  }

  async listVerifications(): Promise<VerificationRecord[]> {
    return this.verifications.values().all();
  }

  async deleteVerification(backupId: string): Promise<void> {
    await this.verifications.del(backupId);
  }

  async putActivity(a: ActivityRecord): Promise<void> {
    await this.activities.put(a.id, a);
  }

  /** @throws NotFoundError when no activity has this id. */
  async getActivity(id: string): Promise<ActivityRecord> {
    const a = await this.activities.get(id);
    if (!a)
      throw new NotFoundError(`activity ${id} not found`, {
        hint: 'list activities with envsnap activity:list',
      });
    return a;
  }

  /** Activities newest first. */
  async listActivities(environment?: string, limit = 50): Promise<ActivityRecord[]> {
    const out: ActivityRecord[] = [];
    for await (const a of this.activities.values({ reverse: true })) {
      if (environment && a.environment !== environment) continue;
      out.push(a);
      if (out.length >= limit) break;
    }
    return out;
  }

  async appendLog(activityId: string, line: LogRecord): Promise<void> {
    const key = `${activityId}:${Date.now().toString().padStart(15, '0')}:${(this.logSeq++ % 1e6).toString().padStart(6, '0')}`;
    await this.logs.put(key, line);
  }

  async readLog(activityId: string): Promise<LogRecord[]> {
    const out: LogRecord[] = [];
    for await (const l of this.logs.values({ gte: `${activityId}:`, lt: `${activityId};` })) out.push(l);
    return out;
  }

  async putAgent(a: AgentRecord): Promise<void> {
    await this.agents.put(a.nodeId, a);
  }

  async listAgents(): Promise<AgentRecord[]> {
    const out: AgentRecord[] = [];
    for await (const a of this.agents.values()) out.push(a);
    return out;
  }

  async getSchedule(key: string): Promise<ScheduleRecord | undefined> {
    return this.schedules.get(key);
  }

  async putSchedule(r: ScheduleRecord): Promise<void> {
    await this.schedules.put(r.key, r);
  }

  async putLock(l: LockRecord): Promise<void> {
    await this.locks.put(l.key, l);
  }

  async deleteLock(key: string): Promise<void> {
    await this.locks.del(key);
  }

  async listLocks(): Promise<LockRecord[]> {
    return this.locks.values().all();
  }

  /**
   * The next fencing token: one more than any token ever handed out, written
   * to disk before it is returned, so that tokens only grow across restarts.
   */
  async nextFencingToken(): Promise<number> {
    const last = (await this.meta.get('fencing-token')) ?? 0;
    const next = last + 1;
    await this.meta.put('fencing-token', next);
    return next;
  }

  /** Closes LevelDB. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
  }
}
