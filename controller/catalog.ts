import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import { NotFoundError } from '../shared/errors.js';
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
}

export type ActivityState = 'pending' | 'in_progress' | 'complete' | 'failed';

export interface ActivityRecord {
  id: string;
  type: 'backup.create' | 'backup.restore';
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
  private logSeq = 0;
  private closed = false;

  private constructor(db: Level<string, unknown>) {
    this.db = db;
    this.backups = db.sublevel<string, BackupRecord>('backups', { valueEncoding: 'json' });
    this.activities = db.sublevel<string, ActivityRecord>('activities', { valueEncoding: 'json' });
    this.logs = db.sublevel<string, LogRecord>('activity-log', { valueEncoding: 'json' });
    this.agents = db.sublevel<string, AgentRecord>('agents', { valueEncoding: 'json' });
    this.schedules = db.sublevel<string, ScheduleRecord>('schedules', { valueEncoding: 'json' });
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

  async deleteBackup(id: string): Promise<void> {
    await this.backups.del(id);
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

  /** Closes LevelDB. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
  }
}
