import cron, { type ScheduledTask } from 'node-cron';
import type { WireSchedule } from '../shared/wire.js';
import type { EnvironmentConfig, ScheduleConfig } from '../shared/config.js';
import { errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Catalog, ScheduleRecord } from './catalog.js';
import type { JobManager } from './jobs.js';
import type { ControllerMetrics } from './metrics.js';
import type { RetentionManager } from './retention-manager.js';

/** A schedule as `schedule:list` shows it. */
export type ScheduleStatus = WireSchedule;

interface Entry {
  env: EnvironmentConfig;
  schedule: ScheduleConfig;
  key: string;
  task: ScheduledTask;
}

/** How long a catch-up run waits for the environment's agents to reconnect (ms). */
const CATCH_UP_AGENT_WAIT_MS = 60_000;

/** How far back start-up looks for the last missed run, at most (seconds). */
const MAX_LOOKBACK_SECONDS = 7 * 24 * 3600;

/**
 * Runs automated backups on each active environment's `schedules:` (node-cron,
 * in each schedule's time zone, with optional random jitter), and the periodic
 * prune.
 *
 * - No overlap: a run that finds a backup of its environment still running is
 *   skipped and recorded as `skipped` (metric `envsnap_schedule_runs_total`).
 * - Catch-up: the scheduled time of each run is kept in the catalog. At
 *   start-up, if the last time the spec matched before now is later than the
 *   last recorded run, that run was missed while the controller was down; it is
 *   run once now if it is younger than the environment's `catch_up` seconds,
 *   and recorded as `missed` otherwise.
 */
export class Scheduler {
  private readonly entries: Entry[] = [];
  private pruneTask: ScheduledTask | undefined;
  /** Each environment's `drill_schedule`: a restore drill of its newest complete backup. */
  private readonly drillTasks: ScheduledTask[] = [];
  private stopped = false;

  constructor(
    private readonly environments: EnvironmentConfig[],
    private readonly pruneSchedule: string,
    private readonly jobs: JobManager,
    private readonly retention: RetentionManager,
    private readonly catalog: Catalog,
    private readonly metrics: ControllerMetrics,
    private readonly logger: Logger,
  ) {}

  /** Creates the cron tasks, then catches up on runs missed while the controller was down. */
  async start(): Promise<void> {
    this.stopped = false;
    for (const env of this.environments) {
      if (!env.active) continue;
      env.schedules.forEach((schedule, i) => {
        const key = `${env.name}#${i}`;
        const task = cron.createTask(schedule.cron, (ctx) => this.fire(entry, ctx.date), {
          name: `backup ${key}`,
          timezone: schedule.timezone,
          maxRandomDelay: Math.round(schedule.jitter * 1000),
          suppressMissedWarning: true,
        });
        const entry: Entry = { env, schedule, key, task };
        this.entries.push(entry);
      });
    }
    for (const env of this.environments) {
      if (!env.active || !env.drill_schedule) continue;
      const task = cron.createTask(env.drill_schedule, () => this.drill(env.name), {
        name: `drill ${env.name}`,
        suppressMissedWarning: true,
      });
      this.drillTasks.push(task);
      await task.start();
    }
    for (const e of this.entries) await this.catchUp(e);
    for (const e of this.entries) await e.task.start();
    this.pruneTask = cron.createTask(this.pruneSchedule, () => this.periodicPrune(), {
      name: 'prune',
      suppressMissedWarning: true,
    });
    await this.pruneTask.start();
    this.logger.info({ schedules: this.entries.length }, 'scheduler started');
  }

  private async periodicPrune(): Promise<void> {
    try {
      const gone = (await this.retention.prune(undefined, false)).filter((d) => !d.keep);
      if (gone.length) this.logger.info({ pruned: gone.length }, 'periodic prune');
    } catch (err) {
      this.logger.error({ err: errorMessage(err) }, 'periodic prune failed');
    }
  }

  /**
   * A scheduled restore drill of the environment's newest complete backup. Never throws: the
   * result is in the catalog and the metrics (envsnap_drill_last_result); a drill that cannot
   * start (no complete backup, agents missing) is logged and counted as failed.
   */
  private async drill(environment: string): Promise<void> {
    try {
      const r = await this.jobs.drillBackup({ environment, latest: true, source: 'schedule' });
      this.logger[r.result === 'pass' ? 'info' : 'error'](
        { environment, backup: r.backupId, result: r.result },
        'scheduled restore drill finished',
      );
    } catch (err) {
      this.logger.error({ environment, err: errorMessage(err) }, 'scheduled restore drill could not run');
      this.metrics.drills.inc({ environment, result: 'fail' });
      this.metrics.drillLastResult.set({ environment, status: 'fail' }, 1);
      this.metrics.drillLastResult.set({ environment, status: 'pass' }, 0);
      this.metrics.drillLastRun.set({ environment, status: 'fail' }, Date.now() / 1000);
    }
  }

  private async record(key: string, patch: Partial<ScheduleRecord>, cronSpec: string): Promise<void> {
    const prev = (await this.catalog.getSchedule(key)) ?? { key, cron: cronSpec };
    await this.catalog.putSchedule({ ...prev, ...patch, key, cron: cronSpec });
  }

  /** One scheduled run. Never throws: the outcome is recorded. */
  private async fire(e: Entry, scheduledFor: Date): Promise<void> {
    const base = { lastScheduledFor: scheduledFor.toISOString(), lastRun: new Date().toISOString() };
    try {
      if (this.jobs.hasRunningBackup(e.env.name)) {
        this.logger.warn(
          { environment: e.env.name, schedule: e.schedule.cron },
          'scheduled backup skipped: a backup is still running',
        );
        this.metrics.scheduleRuns.inc({ environment: e.env.name, result: 'skipped' });
        await this.record(
          e.key,
          {
            ...base,
            lastResult: 'skipped',
            lastError: 'a backup of the environment was still running',
            lastBackupId: '',
          },
          e.schedule.cron,
        );
        return;
      }
      const ref = await this.jobs.createBackup(e.env.name, { live: e.schedule.live, tag: 'automated' });
      this.metrics.scheduleRuns.inc({ environment: e.env.name, result: 'started' });
      await this.record(
        e.key,
        { ...base, lastResult: 'started', lastBackupId: ref.backupId, lastError: '' },
        e.schedule.cron,
      );
      const backup = await ref.done;
      await this.record(
        e.key,
        { lastResult: backup.status === 'complete' ? 'complete' : 'failed', lastError: backup.error ?? '' },
        e.schedule.cron,
      );
    } catch (err) {
      this.logger.error(
        { environment: e.env.name, err: errorMessage(err) },
        'scheduled backup could not start',
      );
      this.metrics.scheduleRuns.inc({ environment: e.env.name, result: 'failed' });
      await this.record(
        e.key,
        { ...base, lastResult: 'failed', lastError: errorMessage(err) },
        e.schedule.cron,
      ).catch(() => undefined);
    }
  }

  /** The latest time after `after` and at or before `now` that the spec matches, if any. */
  private lastMatch(e: Entry, after: Date, now: Date): Date | undefined {
    const seconds = e.schedule.cron.trim().split(/\s+/).length === 6;
    const step = seconds ? 1000 : 60_000;
    let t = Math.floor(now.getTime() / step) * step;
    const floor = Math.max(after.getTime(), now.getTime() - MAX_LOOKBACK_SECONDS * 1000);
    for (; t > floor; t -= step) {
      if (e.task.match(new Date(t))) return new Date(t);
    }
    return undefined;
  }

  private async catchUp(e: Entry): Promise<void> {
    const rec = await this.catalog.getSchedule(e.key);
    const now = new Date();
    if (!rec || rec.cron !== e.schedule.cron || !rec.lastScheduledFor) {
      // Never ran with this spec: nothing was missed; start counting from now.
      await this.record(e.key, { lastScheduledFor: now.toISOString() }, e.schedule.cron);
      return;
    }
    const missed = this.lastMatch(e, new Date(rec.lastScheduledFor), now);
    if (!missed) return;
    const ageSeconds = (now.getTime() - missed.getTime()) / 1000;
    if (ageSeconds <= e.env.catch_up) {
      this.logger.info(
        { environment: e.env.name, scheduledFor: missed.toISOString() },
        'catching up a run missed while the controller was down',
      );
      void this.fireWhenAgentsReady(e, missed);
    } else {
      this.logger.warn(
        { environment: e.env.name, scheduledFor: missed.toISOString() },
        'scheduled run missed (older than catch_up)',
      );
      this.metrics.scheduleRuns.inc({ environment: e.env.name, result: 'missed' });
      await this.record(
        e.key,
        {
          lastScheduledFor: missed.toISOString(),
          lastResult: 'missed',
          lastError: `missed while the controller was down (${Math.round(ageSeconds)} s ago)`,
        },
        e.schedule.cron,
      );
    }
  }

  /**
   * A catch-up runs at start-up, before the agents had time to reconnect: it
   * waits for them (at most CATCH_UP_AGENT_WAIT_MS), then fires; if they are
   * still missing, the run fails and records why.
   */
  private async fireWhenAgentsReady(e: Entry, scheduledFor: Date): Promise<void> {
    const deadline = Date.now() + CATCH_UP_AGENT_WAIT_MS;
    while (!this.stopped && Date.now() < deadline && !this.jobs.agentsReady(e.env.name)) {
      await new Promise((r) => setTimeout(r, 250));
    }
    if (!this.stopped) await this.fire(e, scheduledFor);
  }

  /** Every schedule with its next runs and last result. */
  async list(environment?: string): Promise<ScheduleStatus[]> {
    const out: ScheduleStatus[] = [];
    for (const e of this.entries) {
      if (environment && e.env.name !== environment) continue;
      const rec = await this.catalog.getSchedule(e.key);
      out.push({
        environment: e.env.name,
        cron: e.schedule.cron,
        timezone: e.schedule.timezone,
        live: e.schedule.live,
        nextRuns: e.task.getNextRuns(3).map((d) => d.toISOString()),
        lastRun: rec?.lastRun ?? '',
        lastResult: rec?.lastResult ?? '',
        lastBackupId: rec?.lastBackupId ?? '',
        lastError: rec?.lastError ?? '',
      });
    }
    return out;
  }

  /** Stops every cron task. Safe to call twice. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const e of this.entries) await e.task.destroy();
    this.entries.length = 0;
    for (const t of this.drillTasks) await t.destroy();
    this.drillTasks.length = 0;
    await this.pruneTask?.destroy();
    this.pruneTask = undefined;
  }
}
