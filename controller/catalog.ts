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
 */
export class Catalog {
  private readonly db: Level<string, unknown>;
  private readonly backups;
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
    return new Catalog(db);
  }

  async putBackup(b: BackupRecord): Promise<void> {
    await this.backups.put(b.id, b);
  }

  /** @throws NotFoundError when no backup has this id. */
  async getBackup(id: string): Promise<BackupRecord> {
    const b = await this.backups.get(id);
    if (!b)
      throw new NotFoundError(`backup ${id} not found`, { hint: 'list backups with envsnap backup:list' });
    return b;
  }

  /** Backups newest first, optionally of one environment. */
  async listBackups(environment?: string): Promise<BackupRecord[]> {
    const out: BackupRecord[] = [];
    for await (const b of this.backups.values({ reverse: true })) {
      if (!environment || b.environment === environment) out.push(b);
    }
    return out;
  }

  /** Removes a backup's entry and its verification and drill records in one batch. */
  async deleteBackup(id: string): Promise<void> {
    await this.db.batch([
      { type: 'del', key: id, sublevel: this.backups },
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
