import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { EnvironmentConfig, MountConfig, ServiceConfig, Compression } from '../shared/config.js';
import {
  AgentUnavailableError,
  ArtifactCorruptError,
  EnvironmentInactiveError,
  InvalidArgumentError,
  NotFoundError,
  NotRestorableError,
  ShuttingDownError,
  TargetMismatchError,
  errorMessage,
} from '../shared/errors.js';
import { newId } from '../shared/ids.js';
import type { Logger } from '../shared/logger.js';
import {
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  checkArtifactEntry,
  serializeManifest,
  type ArtifactEntry,
  type Manifest,
} from '../shared/manifest.js';
import type { PutResult, StorageBackend } from '../shared/storage/backend.js';
import { artifactKey, backupPrefix, manifestKey } from '../shared/storage/keys.js';
import type {
  WireArtifact,
  WireConnection,
  WireMountSpec,
  WireServiceSpec,
  WireTask,
} from '../shared/wire.js';
import type { ActivityHub } from './activity-hub.js';
import type { AgentRegistry, TaskOutcome } from './agent-registry.js';
import type { ActivityRecord, BackupRecord, Catalog } from './catalog.js';
import type { ControllerMetrics } from './metrics.js';

/** One unit of work for one agent within a job. */
interface JobTask {
  taskId: string;
  nodeId: string;
  /** Service or mount name (in the job's environment). */
  name: string;
  /** Service kind, or `mount`. */
  kind: string;
  settled: boolean;
}

/** A backup or restore that is running in this controller. */
interface RunningJob {
  activity: ActivityRecord;
  backupId: string;
  type: ActivityRecord['type'];
  abort: AbortController;
  tasks: Map<string, JobTask>;
  /** Backups: what the controller itself measured for each uploaded artifact. */
  uploads: Map<string, PutResult>;
  done: Promise<void>;
}

/**
 * What retention adds around a backup's life (implemented by RetentionManager).
 */
export interface BackupLifecycle {
  /** Before a backup starts; throws to refuse it (e.g. the manual backup limit). */
  beforeCreate(env: EnvironmentConfig, tag: 'manual' | 'automated', replaceOldest: boolean): Promise<void>;
  /** After a backup completed: prune, rotate. Errors are logged; they never fail the backup. */
  afterComplete(env: EnvironmentConfig, backup: BackupRecord, replaceOldest: boolean): Promise<void>;
  /** Complete and inside the environment's restorable window. */
  isRestorable(backup: BackupRecord): boolean;
}

/** One service or mount of a restore, with the node that restores it. */
interface RestorePlanItem {
  name: string;
  kind: string;
  node: string;
  restoreService?: WireTask['restoreService'];
  restoreMount?: WireTask['restoreMount'];
}

const COMPATIBLE_KINDS: Record<string, string> = {
  mariadb: 'mysql',
  mysql: 'mysql',
  postgresql: 'postgresql',
  redis: 'redis',
  mount: 'mount',
};

/**
 * Runs backups and restores: picks the node for each service and mount,
 * hands tasks to agents, receives artifacts, writes the manifest, and keeps
 * the catalog, the activity log and the metrics up to date.
 *
 * A backup becomes `complete` (restorable) only when every artifact is stored
 * and the controller's own size and SHA-256 of it match the agent's; any
 * error marks it `failed` with the reason and deletes what it stored.
 */
export class JobManager {
  private readonly running = new Map<string, RunningJob>();
  private accepting = true;

  constructor(
    private readonly environments: EnvironmentConfig[],
    private readonly defaultCompression: Compression,
    private readonly catalog: Catalog,
    private readonly agents: AgentRegistry,
    private readonly hub: ActivityHub,
    readonly storage: StorageBackend,
    private readonly metrics: ControllerMetrics,
    private readonly logger: Logger,
    private readonly lifecycle: BackupLifecycle,
  ) {}

  /**
   * Marks backups and activities left running by a previous controller process
   * as failed and removes their partial artifacts.
   */
  async recover(): Promise<void> {
    for (const b of await this.catalog.listBackups()) {
      if (b.status !== 'pending' && b.status !== 'in_progress') continue;
      await this.storage.deletePrefix(backupPrefix(b.id));
      await this.catalog.putBackup({
        ...b,
        status: 'failed',
        finished: new Date().toISOString(),
        error: 'the controller stopped while the backup ran; partial artifacts were removed',
        artifacts: [],
        sizeBytes: 0,
      });
      this.logger.warn({ backup: b.id }, 'backup interrupted by a controller restart marked failed');
    }
    for (const a of await this.catalog.listActivities(undefined, 1000)) {
      if (a.state !== 'pending' && a.state !== 'in_progress') continue;
      await this.catalog.putActivity({
        ...a,
        state: 'failed',
        finished: new Date().toISOString(),
        error: 'the controller stopped while the activity ran',
      });
    }
  }

  private environment(name: string): EnvironmentConfig {
    const env = this.environments.find((e) => e.name === name);
    if (!env) {
      const known = this.environments.map((e) => e.name).join(', ') || 'none';
      throw new NotFoundError(`environment "${name}" not found`, {
        hint: `configured environments: ${known}`,
      });
    }
    return env;
  }

  /** The first node of a service whose agent is connected. */
  private pickNode(nodes: string[], what: string): string {
    const node = nodes.find((n) => this.agents.isConnected(n));
    if (!node) {
      throw new AgentUnavailableError(`no connected agent for ${what} (nodes: ${nodes.join(', ')})`, {
        hint: "check envsnap agent:list and the agents' logs",
      });
    }
    return node;
  }

  /**
   * Starts a backup of every service and mount of an environment.
   *
   * @throws NotFoundError for an unknown environment.
   * @throws EnvironmentInactiveError when the environment has `active: false`.
   * @throws AgentUnavailableError when a service or mount has no connected agent.
   * @throws ShuttingDownError while the controller drains.
   */
  async createBackup(
    envName: string,
    opts: { live: boolean; compression?: string; tag?: 'manual' | 'automated'; replaceOldest?: boolean },
  ): Promise<{ activityId: string; backupId: string; done: Promise<BackupRecord> }> {
    if (!this.accepting) throw new ShuttingDownError();
    const env = this.environment(envName);
    if (!env.active) throw new EnvironmentInactiveError(env.name);
    const tag = opts.tag ?? 'manual';
    await this.lifecycle.beforeCreate(env, tag, Boolean(opts.replaceOldest));
    const compression = opts.compression || this.defaultCompression;
    if (compression !== 'zstd' && compression !== 'gzip') {
      throw new InvalidArgumentError(`unknown compression "${compression}"`, { hint: 'use zstd or gzip' });
    }
    if (env.services.length === 0 && env.mounts.length === 0) {
      throw new InvalidArgumentError(`environment "${env.name}" has no services and no mounts to back up`);
    }
    const plan = [
      ...env.services.map((s) => ({
        name: s.name,
        kind: s.kind,
        node: this.pickNode(s.nodes, `service ${s.name}`),
        service: s,
      })),
      ...env.mounts.map((m) => ({
        name: m.name,
        kind: 'mount',
        node: this.pickNode([m.node], `mount ${m.name}`),
        mount: m,
      })),
    ];
    const now = new Date().toISOString();
    const backupId = newId();
    const activity: ActivityRecord = {
      id: newId(),
      type: 'backup.create',
      environment: env.name,
      state: 'pending',
      created: now,
      backupId,
      description: `${tag} backup of ${env.name}${opts.live ? ' (live)' : ''}`,
    };
    const backup: BackupRecord = {
      id: backupId,
      environment: env.name,
      created: now,
      status: 'pending',
      live: opts.live,
      tag,
      consistency: '',
      activityId: activity.id,
      storage: this.storage.name,
      artifacts: [],
      sizeBytes: 0,
    };
    await this.catalog.putBackup(backup);
    await this.catalog.putActivity(activity);
    const job = this.register(activity, backupId);
    const tasks = this.addTasks(job, plan);
    const done = this.runBackup(job, backup, plan, tasks, compression).then(async () => {
      if (backup.status === 'complete') {
        await this.lifecycle
          .afterComplete(env, backup, Boolean(opts.replaceOldest))
          .catch((err: unknown) =>
            this.logger.error({ err: errorMessage(err), backup: backup.id }, 'retention after backup failed'),
          );
      }
      return backup;
    });
    job.done = done.then(() => undefined);
    return { activityId: activity.id, backupId, done };
  }

  /** True while a backup of the environment runs. */
  /** Whether every service and mount of the environment has at least one connected agent. */
  agentsReady(envName: string): boolean {
    const env = this.environments.find((e) => e.name === envName);
    if (!env) return false;
    return (
      env.services.every((s) => s.nodes.some((n) => this.agents.isConnected(n))) &&
      env.mounts.every((m) => this.agents.isConnected(m.node))
    );
  }

  hasRunningBackup(envName: string): boolean {
    return [...this.running.values()].some(
      (j) => j.type === 'backup.create' && j.activity.environment === envName,
    );
  }

  private register(activity: ActivityRecord, backupId: string): RunningJob {
    const job: RunningJob = {
      activity,
      backupId,
      type: activity.type,
      abort: new AbortController(),
      tasks: new Map(),
      uploads: new Map(),
      done: Promise.resolve(),
    };
    this.running.set(activity.id, job);
    this.hub.start(activity.id);
    this.metrics.runningJobs.inc({ type: activity.type });
    return job;
  }

  private addTasks(job: RunningJob, plan: Array<{ name: string; kind: string; node: string }>): JobTask[] {
    const tasks = plan.map((p) => ({
      taskId: newId(),
      nodeId: p.node,
      name: p.name,
      kind: p.kind,
      settled: false,
    }));
    for (const t of tasks) job.tasks.set(t.taskId, t);
    return tasks;
  }

  private async runBackup(
    job: RunningJob,
    backup: BackupRecord,
    plan: Array<{ name: string; kind: string; node: string; service?: ServiceConfig; mount?: MountConfig }>,
    tasks: JobTask[],
    compression: string,
  ): Promise<void> {
    const started = Date.now();
    const log = (level: 'info' | 'warn' | 'error', msg: string) => this.hub.log(job.activity.id, level, msg);
    try {
      await this.setActivity(job, { state: 'in_progress' });
      backup.status = 'in_progress';
      await this.catalog.putBackup(backup);
      log(
        'info',
        `backup ${backup.id} of ${backup.environment} started (${backup.live ? 'live' : 'consistent'})`,
      );
      const outcomes = await this.runAll(
        job,
        plan.map((p, i) => {
          const t = tasks[i]!;
          const work: WireTask = p.service
            ? {
                taskId: t.taskId,
                activityId: job.activity.id,
                backupId: backup.id,
                backupService: { service: serviceSpec(p.service), compression },
              }
            : {
                taskId: t.taskId,
                activityId: job.activity.id,
                backupId: backup.id,
                backupMount: { mount: mountSpec(p.mount!), compression },
              };
          log('info', `${p.kind} ${p.name}: dumping on ${p.node}`);
          return { task: t, work };
        }),
      );
      const artifacts: ArtifactEntry[] = [];
      const consistency = new Set<string>();
      for (const [i, outcome] of outcomes.entries()) {
        const task = tasks[i]!;
        for (const a of outcome.artifacts) {
          const entry = toEntry(a);
          checkArtifactEntry(entry);
          if (!entry.name.startsWith(`${task.name}/`) || entry.node !== task.nodeId) {
            throw new ArtifactCorruptError(
              `artifact ${entry.name} does not belong to ${task.kind} ${task.name}`,
            );
          }
          const stored = job.uploads.get(entry.name);
          if (!stored) throw new ArtifactCorruptError(`artifact ${entry.name} was reported but never stored`);
          if (stored.sha256 !== entry.sha256 || stored.sizeBytes !== entry.size_bytes) {
            throw new ArtifactCorruptError(
              `artifact ${entry.name}: stored ${stored.sizeBytes} bytes sha256 ${stored.sha256}, agent reported ${entry.size_bytes} bytes sha256 ${entry.sha256}`,
            );
          }
          artifacts.push(entry);
        }
        const svc = plan[i]!.service;
        if (svc) consistency.add(consistencyOf(svc.kind));
      }
      artifacts.sort((a, b) => a.name.localeCompare(b.name));
      const finished = new Date().toISOString();
      const manifest: Manifest = {
        format: MANIFEST_FORMAT,
        format_version: MANIFEST_VERSION,
        backup_id: backup.id,
        environment: backup.environment,
        created: backup.created,
        finished,
        live: backup.live,
        tag: backup.tag,
        consistency: [...consistency].join(' '),
        artifacts,
      };
      job.abort.signal.throwIfAborted();
      await this.storage.put(
        manifestKey(backup.id),
        Readable.from([Buffer.from(serializeManifest(manifest))]),
      );
      Object.assign(backup, {
        status: 'complete',
        finished,
        artifacts,
        consistency: manifest.consistency,
        sizeBytes: artifacts.reduce((n, a) => n + a.size_bytes, 0),
      });
      await this.catalog.putBackup(backup);
      const seconds = (Date.now() - started) / 1000;
      log(
        'info',
        `Backup ${backup.id} complete: ${artifacts.length} artifacts, ${backup.sizeBytes} bytes in ${seconds.toFixed(1)} s`,
      );
      this.metrics.backups.inc({ environment: backup.environment, status: 'complete' });
      this.metrics.backupDuration.observe({ environment: backup.environment, status: 'complete' }, seconds);
      this.metrics.bytesWritten.inc({ environment: backup.environment }, backup.sizeBytes);
      this.metrics.lastSuccess.set({ environment: backup.environment }, Date.now() / 1000);
      await this.finishActivity(job, 'complete');
    } catch (err) {
      const reason = errorMessage(err);
      this.abortJob(job, reason);
      log('error', `Backup ${backup.id} failed: ${reason}`);
      try {
        await this.storage.deletePrefix(backupPrefix(backup.id));
        log('info', 'partial artifacts removed');
      } catch (cleanupErr) {
        log('error', `cannot remove partial artifacts: ${errorMessage(cleanupErr)}`);
      }
      Object.assign(backup, {
        status: 'failed',
        finished: new Date().toISOString(),
        error: reason,
        artifacts: [],
        sizeBytes: 0,
      });
      await this.catalog.putBackup(backup).catch(() => undefined);
      this.metrics.backups.inc({ environment: backup.environment, status: 'failed' });
      this.metrics.backupDuration.observe(
        { environment: backup.environment, status: 'failed' },
        (Date.now() - started) / 1000,
      );
      this.metrics.lastFailure.set({ environment: backup.environment }, Date.now() / 1000);
      await this.finishActivity(job, 'failed', reason);
    }
  }

  /** Runs tasks on their agents at once; the first failure cancels the rest and rejects. */
  private async runAll(
    job: RunningJob,
    items: Array<{ task: JobTask; work: WireTask }>,
  ): Promise<TaskOutcome[]> {
    const aborted = new Promise<never>((_, reject) => {
      const onAbort = () =>
        reject(
          job.abort.signal.reason instanceof Error
            ? job.abort.signal.reason
            : new Error(String(job.abort.signal.reason)),
        );
      if (job.abort.signal.aborted) onAbort();
      else job.abort.signal.addEventListener('abort', onAbort, { once: true });
    });
    aborted.catch(() => undefined);
    const runs = items.map(({ task, work }) =>
      this.agents
        .runTask(task.nodeId, work, {
          onProgress: (p) => this.hub.progress(job.activity.id, p),
          onLog: (level, message) =>
            this.hub.log(job.activity.id, level, `${task.kind} ${task.name} on ${task.nodeId}: ${message}`),
        })
        .then(
          (outcome) => {
            task.settled = true;
            return outcome;
          },
          (err: unknown) => {
            task.settled = true;
            throw new Error(`${task.kind} ${task.name} on ${task.nodeId}: ${errorMessage(err)}`, {
              cause: err,
            });
          },
        ),
    );
    return Promise.race([Promise.all(runs), aborted]);
  }

  private abortJob(job: RunningJob, reason: string): void {
    if (!job.abort.signal.aborted) job.abort.abort(new Error(reason));
    for (const t of job.tasks.values()) {
      if (!t.settled) this.agents.cancelTask(t.taskId, reason);
    }
  }

  private async setActivity(job: RunningJob, patch: Partial<ActivityRecord>): Promise<void> {
    Object.assign(job.activity, patch);
    await this.catalog.putActivity(job.activity);
  }

  private async finishActivity(job: RunningJob, state: 'complete' | 'failed', error?: string): Promise<void> {
    await this.setActivity(job, {
      state,
      finished: new Date().toISOString(),
      ...(error ? { error } : {}),
    }).catch((err: unknown) => this.logger.error({ err }, 'cannot record activity end'));
    await this.hub.flush();
    this.running.delete(job.activity.id);
    this.metrics.runningJobs.dec({ type: job.type });
    this.hub.finish(job.activity);
  }

  /**
   * Starts a restore of a complete backup into its own environment or `target`.
   * Every check that needs no I/O on artifacts happens before this returns.
   *
   * @throws NotFoundError for an unknown backup or environment.
   * @throws NotRestorableError when the backup is not complete.
   * @throws EnvironmentInactiveError when the target is inactive.
   * @throws TargetMismatchError when the target lacks a service or mount of the backup, or its kind differs.
   * @throws AgentUnavailableError when a target service or mount has no connected agent.
   */
  async restoreBackup(backupId: string, target?: string): Promise<{ activityId: string; backupId: string }> {
    if (!this.accepting) throw new ShuttingDownError();
    const backup = await this.catalog.getBackup(backupId);
    if (backup.status !== 'complete') {
      throw new NotRestorableError(
        `backup ${backup.id} is ${backup.status}, not restorable${backup.error ? `: ${backup.error}` : ''}`,
      );
    }
    if (!this.lifecycle.isRestorable(backup)) {
      throw new NotRestorableError(
        `backup ${backup.id} is older than the restorable window of ${backup.environment}`,
        {
          hint: 'retention.restorable_days in the config sets the window',
        },
      );
    }
    const env = this.environment(target || backup.environment);
    if (!env.active) throw new EnvironmentInactiveError(env.name);
    for (const j of this.running.values()) {
      if (j.activity.environment === env.name) {
        throw new InvalidArgumentError(
          `environment "${env.name}" has a running ${j.type} (activity ${j.activity.id})`,
          {
            hint: 'wait for it to finish',
          },
        );
      }
    }
    // Match the backup's services and mounts to the target by name, all before touching anything.
    const byName = new Map<string, ArtifactEntry[]>();
    for (const a of backup.artifacts) byName.set(a.service, [...(byName.get(a.service) ?? []), a]);
    const problems: string[] = [];
    const plan: RestorePlanItem[] = [];
    for (const [name, arts] of byName) {
      const kind = arts[0]!.kind;
      const svc = env.services.find((s) => s.name === name);
      const mnt = env.mounts.find((m) => m.name === name);
      if (kind === 'mount') {
        if (!mnt) {
          problems.push(`mount "${name}" is missing in ${env.name}`);
          continue;
        }
        plan.push({
          name,
          kind,
          node: mnt.node,
          restoreMount: { mount: mountSpec(mnt), artifact: toWire(arts[0]!) },
        });
      } else {
        if (!svc) {
          problems.push(`service "${name}" is missing in ${env.name}`);
          continue;
        }
        if (COMPATIBLE_KINDS[svc.kind] !== COMPATIBLE_KINDS[kind]) {
          problems.push(`service "${name}" is ${svc.kind} in ${env.name} but ${kind} in the backup`);
          continue;
        }
        const node = svc.nodes.find((n) => this.agents.isConnected(n)) ?? svc.nodes[0]!;
        plan.push({
          name,
          kind: svc.kind,
          node,
          restoreService: { service: serviceSpec(svc), artifacts: arts.map(toWire) },
        });
      }
    }
    if (problems.length) {
      throw new TargetMismatchError(
        `backup ${backup.id} does not match environment ${env.name}: ${problems.join('; ')}`,
        {
          hint: 'a target needs a service or mount of the same name and kind for each one in the backup',
        },
      );
    }
    for (const p of plan) this.pickNode([p.node], `${p.restoreMount ? 'mount' : 'service'} ${p.name}`);
    const activity: ActivityRecord = {
      id: newId(),
      type: 'backup.restore',
      environment: env.name,
      state: 'pending',
      created: new Date().toISOString(),
      backupId: backup.id,
      description: `restore of backup ${backup.id} (${backup.environment}) into ${env.name}`,
    };
    await this.catalog.putActivity(activity);
    const job = this.register(activity, backup.id);
    const tasks = this.addTasks(job, plan);
    job.done = this.runRestore(job, backup, env, plan, tasks);
    return { activityId: activity.id, backupId: backup.id };
  }

  private async runRestore(
    job: RunningJob,
    backup: BackupRecord,
    env: EnvironmentConfig,
    plan: RestorePlanItem[],
    tasks: JobTask[],
  ): Promise<void> {
    const started = Date.now();
    const log = (level: 'info' | 'warn' | 'error', msg: string) => this.hub.log(job.activity.id, level, msg);
    try {
      await this.setActivity(job, { state: 'in_progress' });
      log('info', `Restoring backup ${backup.id} of ${backup.environment} into ${env.name}`);
      log('info', `verifying ${backup.artifacts.length} artifacts before anything is applied`);
      for (const a of backup.artifacts) {
        job.abort.signal.throwIfAborted();
        await this.verifyArtifact(backup.id, a, job.abort.signal);
      }
      log('info', 'every artifact matches its manifest size and SHA-256');
      await this.runAll(
        job,
        plan.map((p, i) => {
          const t = tasks[i]!;
          log('info', `${p.kind} ${p.name}: restoring on ${p.node}`);
          const work: WireTask = {
            taskId: t.taskId,
            activityId: job.activity.id,
            backupId: backup.id,
            ...(p.restoreMount ? { restoreMount: p.restoreMount } : { restoreService: p.restoreService }),
          };
          return { task: t, work };
        }),
      );
      const seconds = (Date.now() - started) / 1000;
      log('info', `Restore of ${backup.id} into ${env.name} complete in ${seconds.toFixed(1)} s`);
      this.metrics.restores.inc({ environment: env.name, status: 'complete' });
      this.metrics.restoreDuration.observe({ environment: env.name, status: 'complete' }, seconds);
      await this.finishActivity(job, 'complete');
    } catch (err) {
      const reason = errorMessage(err);
      this.abortJob(job, reason);
      log('error', `Restore of ${backup.id} failed: ${reason}`);
      this.metrics.restores.inc({ environment: env.name, status: 'failed' });
      this.metrics.restoreDuration.observe(
        { environment: env.name, status: 'failed' },
        (Date.now() - started) / 1000,
      );
      await this.finishActivity(job, 'failed', reason);
    }
  }

  /**
   * Re-reads one stored artifact and checks its size and SHA-256 against the manifest.
   *
   * @throws ArtifactCorruptError when it is missing or differs.
   */
  async verifyArtifact(backupId: string, a: ArtifactEntry, signal?: AbortSignal): Promise<void> {
    let stream: Readable;
    try {
      stream = await this.storage.get(artifactKey(backupId, a.name));
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new ArtifactCorruptError(`artifact ${a.name} is missing from storage "${this.storage.name}"`, {
          cause: err,
        });
      }
      throw err;
    }
    const hash = createHash('sha256');
    let size = 0;
    await pipeline(
      stream,
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          hash.update(chunk);
          size += chunk.length;
        }
        yield* [];
      },
      { signal },
    );
    const sha = hash.digest('hex');
    if (size !== a.size_bytes || sha !== a.sha256) {
      throw new ArtifactCorruptError(
        `artifact ${a.name} is corrupt: expected ${a.size_bytes} bytes sha256 ${a.sha256}, found ${size} bytes sha256 ${sha}`,
        { hint: 'nothing was restored; use another backup' },
      );
    }
  }

  /**
   * Checks that an upload belongs to a running backup task of that node, and
   * returns the job, for the artifact transfer handler.
   *
   * @throws NotFoundError when no running backup has this task.
   */
  uploadTarget(
    backupId: string,
    taskId: string,
    artifactName: string,
  ): { signal: AbortSignal; record(result: PutResult): boolean } {
    const job = [...this.running.values()].find(
      (j) => j.backupId === backupId && j.type === 'backup.create' && j.tasks.has(taskId),
    );
    const task = job?.tasks.get(taskId);
    if (!job || !task || task.settled || job.abort.signal.aborted) {
      throw new NotFoundError(`no running backup task ${taskId} for backup ${backupId}`);
    }
    if (!artifactName.startsWith(`${task.name}/`)) {
      throw new InvalidArgumentError(`artifact ${artifactName} does not belong to ${task.kind} ${task.name}`);
    }
    return {
      signal: job.abort.signal,
      record: (result) => {
        if (job.abort.signal.aborted || task.settled) return false;
        job.uploads.set(artifactName, result);
        return true;
      },
    };
  }

  /**
   * Checks that a download is for a running restore task of that backup.
   *
   * @throws NotFoundError when no running restore has this task.
   */
  downloadSource(
    backupId: string,
    taskId: string,
    artifactName: string,
  ): { environment: string; signal: AbortSignal } {
    const job = [...this.running.values()].find(
      (j) => j.backupId === backupId && j.type === 'backup.restore' && j.tasks.has(taskId),
    );
    if (!job) throw new NotFoundError(`no running restore task ${taskId} for backup ${backupId}`);
    const task = job.tasks.get(taskId)!;
    if (!artifactName.startsWith(`${task.name}/`)) {
      throw new InvalidArgumentError(`artifact ${artifactName} does not belong to ${task.kind} ${task.name}`);
    }
    return { environment: job.activity.environment, signal: job.abort.signal };
  }

  /** Number of backups and restores running now. */
  get runningCount(): number {
    return this.running.size;
  }

  /**
   * Stops accepting jobs, waits up to `timeoutMs` for running ones, then aborts
   * the rest (their partial artifacts are removed) and waits for them to end.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.accepting = false;
    const all = () => Promise.all([...this.running.values()].map((j) => j.done));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      all().then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      for (const j of this.running.values()) this.abortJob(j, 'the controller is shutting down');
      await all();
    }
  }
}

function connectionSpec(c: ServiceConfig['connection']): WireConnection {
  return {
    host: c.host ?? '',
    port: c.port ?? 0,
    socket: c.socket ?? '',
    user: c.user ?? '',
    passwordFile: c.password_file ?? '',
    passwordEnv: c.password_env ?? '',
  };
}

function serviceSpec(s: ServiceConfig): WireServiceSpec {
  return {
    name: s.name,
    kind: s.kind,
    connection: connectionSpec(s.connection),
    databases: s.databases ?? [],
  };
}

function mountSpec(m: MountConfig): WireMountSpec {
  return { name: m.name, path: m.path, exclude: m.exclude ?? [] };
}

function consistencyOf(kind: string): string {
  switch (kind) {
    case 'mariadb':
    case 'mysql':
      return 'MariaDB/MySQL: --single-transaction snapshot per database, consistent for InnoDB tables only.';
    case 'postgresql':
      return 'PostgreSQL: pg_dump snapshot per database.';
    case 'redis':
      return 'Redis: point-in-time RDB snapshot.';
    default:
      return '';
  }
}

/** Manifest entry from a wire artifact. */
export function toEntry(a: WireArtifact): ArtifactEntry {
  return {
    name: a.name,
    service: a.service,
    kind: a.kind,
    node: a.node,
    database: a.database,
    format: a.format,
    compression: a.compression,
    size_bytes: Number(a.sizeBytes),
    sha256: a.sha256,
    raw_bytes: Number(a.rawBytes),
  };
}

/** Wire artifact from a manifest entry. */
export function toWire(a: ArtifactEntry): WireArtifact {
  return {
    name: a.name,
    service: a.service,
    kind: a.kind,
    node: a.node,
    database: a.database,
    format: a.format,
    compression: a.compression,
    sizeBytes: a.size_bytes,
    sha256: a.sha256,
    rawBytes: a.raw_bytes,
  };
}
