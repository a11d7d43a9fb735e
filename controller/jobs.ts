import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { EnvironmentConfig, MountConfig, ServiceConfig, Compression } from '../shared/config.js';
import {
  AgentUnavailableError,
  ArtifactCorruptError,
  EnvironmentInactiveError,
  HookFailedError,
  InvalidArgumentError,
  LeaseLostError,
  NotFoundError,
  NotRestorableError,
  ShuttingDownError,
  StaleFencingTokenError,
  TargetMismatchError,
  errorMessage,
} from '../shared/errors.js';
import { judgeArtifact, statsFromWire, type ArtifactDrillResult } from '../shared/drill-stats.js';
import { newId } from '../shared/ids.js';
import type { Logger } from '../shared/logger.js';
import {
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  checkArtifactEntry,
  redisSourceFromWire,
  restoreOrder,
  serializeManifest,
  type ArtifactEntry,
  type Manifest,
} from '../shared/manifest.js';
import type { StorageBackend } from '../shared/storage/backend.js';
import {
  artifactKey,
  attemptArtifactKey,
  backupPrefix,
  manifestKey,
  storedArtifactKey,
} from '../shared/storage/keys.js';
import type {
  WireArtifact,
  WireDirectCopy,
  WireDrilledArtifact,
  WireHookTask,
  WireStorageTarget,
  WireTask,
} from '../shared/wire.js';
import type { ActivityHub } from './activity-hub.js';
import { CANCELLED_REASONS_KEPT, type AgentRegistry, type TaskOutcome } from './agent-registry.js';
import { copyLocations } from './backup-copies.js';
import type {
  ActivityRecord,
  BackupRecord,
  Catalog,
  DrillRecord,
  LockRecord,
  ReplicaState,
} from './catalog.js';
import { lockKey, type LockManager } from './lock-manager.js';
import type { ControllerMetrics } from './metrics.js';
import { QuiescedSite, byNode } from './quiesce.js';
import { mountSpec, serviceSpec } from './wire-specs.js';
import type { ReplicaOutcome, ReplicatedPutResult, ReplicatedStorage, StorageSet } from './storage-set.js';

/** One unit of work for one agent within a job. */
interface JobTask {
  taskId: string;
  nodeId: string;
  /** Service or mount name (in the job's environment). */
  name: string;
  /** Service kind, `mount` or `hook`. */
  kind: string;
  settled: boolean;
  /** Aborted when this task's lease is lost: its uploads in flight are discarded. */
  abort: AbortController;
  /** The dump lock this task runs under. */
  lock?: { key: string; token: number };
}

/** A task failed because its node is gone (disconnected, or its lease expired): the dump may move. */
function isNodeLoss(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof AgentUnavailableError || e instanceof LeaseLostError) return true;
  }
  return false;
}

/** A backup or restore that is running in this controller. */
interface RunningJob {
  activity: ActivityRecord;
  backupId: string;
  type: ActivityRecord['type'];
  abort: AbortController;
  tasks: Map<string, JobTask>;
  /**
   * Backups: each artifact's copies by location: what the controller itself
   * stored (UploadArtifact), and the direct copies it checked (CommitArtifact).
   */
  uploads: Map<string, Map<string, ReplicaOutcome>>;
  /** Backups: the storage key of each recorded artifact. */
  keys: Map<string, string>;
  /** Restores: the location each artifact is read from (the first whose copy verified). */
  sources: Map<string, StorageBackend>;
  /** Restores: the backup's artifacts by name. */
  entries: Map<string, ArtifactEntry>;
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
  /** Complete, inside the environment's restorable window, and not refused by its verifications. */
  isRestorable(backup: BackupRecord): boolean;
  /** Why a backup cannot be restored (the error a restore throws), or undefined when it can. */
  restoreRefusal(backup: BackupRecord): NotRestorableError | undefined;
}

/** One service or mount of a backup, with the node picked for it. */
interface BackupPlanItem {
  name: string;
  kind: string;
  node: string;
  service?: ServiceConfig;
  mount?: MountConfig;
}

/** One service or mount of a restore, with the node that restores it. */
interface RestorePlanItem {
  name: string;
  kind: string;
  node: string;
  restoreService?: WireTask['restoreService'];
  restoreMount?: WireTask['restoreMount'];
}

/** The artifacts of one service or mount a drill hands to one agent task. */
interface DrillGroup {
  name: string;
  /** The service's kind, or `mount`. */
  kind: string;
  node: string;
  svc?: ServiceConfig | undefined;
  mnt?: MountConfig | undefined;
  artifacts: ArtifactEntry[];
}

/** The groups with only the artifacts `keep` selects, leaving out groups left empty. */
function drillSubset(groups: readonly DrillGroup[], keep: (a: ArtifactEntry) => boolean): DrillGroup[] {
  return groups
    .map((g) => ({ ...g, artifacts: g.artifacts.filter(keep) }))
    .filter((g) => g.artifacts.length > 0);
}

/** How many artifacts a restore or drill reads at once to check them before anything is applied. */
const VERIFY_CONCURRENCY = 4;

/**
 * The artifact a restore leaves to the agent's own SHA-256 check, or undefined: with a single
 * task, the first artifact it applies, unless those are PostgreSQL globals (roles are applied as
 * they stream). The agent fails before that artifact's swap when its bytes differ from the
 * manifest, and nothing was applied before it, so the restore stays all-or-nothing. With several
 * tasks another service may already be swapped in when one fails: every artifact is read first.
 */
function agentCheckedArtifact(plan: readonly RestorePlanItem[]): string | undefined {
  if (plan.length !== 1) return undefined;
  const p = plan[0]!;
  if (p.restoreMount) return p.restoreMount.artifact.name;
  const first = restoreOrder(p.restoreService?.artifacts ?? [])[0];
  return first && first.format !== 'pg_globals' ? first.name : undefined;
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
  /**
   * Why the uploads of tasks that lost their dump lock are refused, by task id (the last
   * {@link CANCELLED_REASONS_KEPT}): a holder that wakes up after its job ended is still told
   * its fencing token is stale, not that the job is unknown.
   */
  private readonly fenced = new Map<string, string>();
  private accepting = true;

  constructor(
    private readonly environments: EnvironmentConfig[],
    private readonly defaultCompression: Compression,
    private readonly catalog: Catalog,
    private readonly agents: AgentRegistry,
    private readonly hub: ActivityHub,
    readonly storages: StorageSet,
    private readonly metrics: ControllerMetrics,
    private readonly logger: Logger,
    private readonly lifecycle: BackupLifecycle,
    private readonly locks: LockManager,
    /** Nodes of an HA group a dump is tried on before the backup fails. */
    private readonly dumpAttempts: number,
  ) {}

  /**
   * Marks backups and activities left running by a previous controller process
   * as failed and removes their partial artifacts.
   */
  async recover(): Promise<void> {
    for (const b of await this.catalog.listBackups()) {
      if (b.status !== 'pending' && b.status !== 'in_progress') continue;
      await this.storages.forEnvironment(b.environment).deletePrefix(backupPrefix(b.id));
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
        node: this.pickNode(s.dump_from ?? s.nodes, `service ${s.name}`),
        service: s,
      })),
      ...env.mounts.map((m) => ({
        name: m.name,
        kind: 'mount',
        node: this.pickNode([m.node], `mount ${m.name}`),
        mount: m,
      })),
    ];
    const backupId = newId();
    const activityId = newId();
    // Two dumps of one service never overlap: refuse at once if one runs.
    const reserved = this.locks.reserveAll(
      plan.flatMap((p) => ('service' in p ? [{ key: lockKey(env.name, p.name), node: p.node }] : [])),
      { activityId, purpose: 'backup' },
    );
    const now = new Date().toISOString();
    const activity: ActivityRecord = {
      id: activityId,
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
      storage: this.storages.forEnvironment(env.name).name,
      artifacts: [],
      sizeBytes: 0,
    };
    try {
      await this.catalog.putBackup(backup);
      await this.catalog.putActivity(activity);
    } catch (err) {
      reserved.release();
      throw err;
    }
    const job = this.register(activity, backupId);
    const tasks = this.addTasks(job, plan);
    const done = this.runBackup(job, env, backup, plan, tasks, compression).then(async () => {
      reserved.release();
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

  /** Whether every service and mount of the environment has at least one connected agent. */
  agentsReady(envName: string): boolean {
    const env = this.environments.find((e) => e.name === envName);
    if (!env) return false;
    return (
      env.services.every((s) => s.nodes.some((n) => this.agents.isConnected(n))) &&
      env.mounts.every((m) => this.agents.isConnected(m.node))
    );
  }

  /** True while a backup of the environment runs. */
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
      keys: new Map(),
      sources: new Map(),
      entries: new Map(),
      done: Promise.resolve(),
    };
    this.running.set(activity.id, job);
    this.hub.start(activity.id);
    this.metrics.runningJobs.inc({ type: activity.type });
    return job;
  }

  private addTasks(job: RunningJob, plan: Array<{ name: string; kind: string; node: string }>): JobTask[] {
    return plan.map((p) => this.addTask(job, p));
  }

  private addTask(job: RunningJob, p: { name: string; kind: string; node: string }): JobTask {
    const t: JobTask = {
      taskId: newId(),
      nodeId: p.node,
      name: p.name,
      kind: p.kind,
      settled: false,
      abort: new AbortController(),
    };
    job.tasks.set(t.taskId, t);
    return t;
  }

  private async runBackup(
    job: RunningJob,
    env: EnvironmentConfig,
    backup: BackupRecord,
    plan: BackupPlanItem[],
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
      const outcomes = await this.runBackupTasks(job, env, backup, plan, tasks, compression, log);
      const store = this.storages.forEnvironment(backup.environment);
      const artifacts: ArtifactEntry[] = [];
      const consistency = new Set<string>();
      for (const [i, { task, outcome }] of outcomes.entries()) {
        for (const a of outcome.artifacts) {
          const entry = toEntry(a);
          checkArtifactEntry(entry);
          if (!entry.name.startsWith(`${task.name}/`) || entry.node !== task.nodeId) {
            throw new ArtifactCorruptError(
              `artifact ${entry.name} does not belong to ${task.kind} ${task.name}`,
            );
          }
          const copy = job.uploads.get(entry.name)?.get(store.primary.name);
          if (!copy) throw new ArtifactCorruptError(`artifact ${entry.name} was reported but never stored`);
          if (!copy.ok) {
            throw new ArtifactCorruptError(
              `artifact ${entry.name}: primary copy in "${store.primary.name}" failed: ${copy.error}`,
            );
          }
          const stored = copy.result;
          if (stored.sha256 !== entry.sha256 || stored.sizeBytes !== entry.size_bytes) {
            throw new ArtifactCorruptError(
              `artifact ${entry.name}: stored ${stored.sizeBytes} bytes sha256 ${stored.sha256}, agent reported ${entry.size_bytes} bytes sha256 ${entry.sha256}`,
            );
          }
          const key = job.keys.get(entry.name);
          if (key && key !== artifactKey(backup.id, entry.name)) entry.key = key;
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
      const manifestPut = await store.put(
        manifestKey(backup.id),
        Readable.from([Buffer.from(serializeManifest(manifest))]),
      );
      const replicas = replicaStates(store, [
        ...[...artifacts].map((a) => job.uploads.get(a.name)!),
        putCopies(store, manifestPut),
      ]);
      for (const [name, r] of Object.entries(replicas)) {
        if (r.status === 'failed')
          log('warn', `replica ${name} incomplete (${r.error}); it will be copied again from the primary`);
      }
      Object.assign(backup, {
        status: 'complete',
        finished,
        artifacts,
        consistency: manifest.consistency,
        sizeBytes: artifacts.reduce((n, a) => n + a.size_bytes, 0),
        replicas,
      });
      await this.catalog.putBackup(backup);
      this.dropPreRestoreCopies(job, outcomes, plan);
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
        await this.storages.forEnvironment(backup.environment).deletePrefix(backupPrefix(backup.id));
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
    return this.firstFailure(
      job,
      items.map(({ task, work }) => this.runTracked(job, task, work)),
    );
  }

  /** All results, or the first failure (or the job's abort), whichever comes first. */
  private firstFailure<T>(job: RunningJob, runs: Array<Promise<T>>): Promise<T[]> {
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
    for (const r of runs) r.catch(() => undefined);
    return Promise.race([Promise.all(runs), aborted]);
  }

  /** Runs one task on its agent, forwarding its progress and log to the activity. */
  private runTracked(job: RunningJob, task: JobTask, work: WireTask): Promise<TaskOutcome> {
    return this.agents
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
      );
  }

  /**
   * A backup's dumps and archives, all at once, between the environment's
   * quiesce and resume hooks (consistent backups of environments that have
   * them). Resume always runs, after the remaining tasks were cancelled on a
   * failure.
   */
  private async runBackupTasks(
    job: RunningJob,
    env: EnvironmentConfig,
    backup: BackupRecord,
    plan: BackupPlanItem[],
    tasks: JobTask[],
    compression: string,
    log: (level: 'info' | 'warn' | 'error', msg: string) => void,
  ): Promise<Array<{ task: JobTask; outcome: TaskOutcome }>> {
    const site =
      !backup.live && QuiescedSite.needed(env)
        ? await QuiescedSite.quiesce(env, (node, hook) => this.runHook(job, node, hook), this.metrics, log)
        : undefined;
    // With a location agents may write straight (s3, or a local one they share), every task is told all of them.
    const storageTargets = this.storages.hasDirect(env.name) ? this.storages.targets(env.name) : [];
    try {
      return await this.firstFailure(
        job,
        plan.map((p, i) => {
          const first = tasks[i]!;
          const base = { activityId: job.activity.id, backupId: backup.id, storageTargets };
          if (p.service) {
            const spec = serviceSpec(p.service);
            return this.runLeased(job, env, p.service, first, 'backup', log, (t, token) => ({
              ...base,
              taskId: t.taskId,
              backupService: {
                service: spec,
                compression,
                drillStats: env.drill_stats,
                quiesced: site !== undefined,
              },
              fencingToken: token,
              leaseTtlMs: this.locks.ttlMs,
            }));
          }
          log('info', `mount ${p.name}: archiving on ${p.node}`);
          return this.runTracked(job, first, {
            ...base,
            taskId: first.taskId,
            backupMount: { mount: mountSpec(p.mount!), compression, drillStats: env.drill_stats },
          }).then((outcome) => ({ task: first, outcome }));
        }),
      );
    } catch (err) {
      this.abortJob(job, errorMessage(err));
      throw err;
    } finally {
      await site?.resume();
    }
  }

  /**
   * After a complete backup, the pre-restore copies that earlier restores
   * kept of each database service are no longer the newest good data: each
   * service's node drops them (engines' dropPreRestoreCopies). In the
   * background; a failure is logged and never fails the backup.
   */
  private dropPreRestoreCopies(
    job: RunningJob,
    outcomes: Array<{ task: JobTask }>,
    plan: BackupPlanItem[],
  ): void {
    outcomes.forEach(({ task }, i) => {
      const svc = plan[i]?.service;
      if (!svc || svc.kind === 'redis' || !this.agents.isConnected(task.nodeId)) return;
      const cleanup = this.addTask(job, { name: svc.name, kind: svc.kind, node: task.nodeId });
      this.agents
        .runTask(
          task.nodeId,
          {
            taskId: cleanup.taskId,
            activityId: job.activity.id,
            backupId: job.backupId,
            preRestoreCleanup: { service: serviceSpec(svc) },
          },
          {},
        )
        .catch((err: unknown) =>
          this.logger.warn(
            { environment: job.activity.environment, service: svc.name, err: errorMessage(err) },
            'pre-restore copies not dropped',
          ),
        );
    });
  }

  /** Runs one hook task (quiesce or resume) on a node. */
  private async runHook(job: RunningJob, node: string, hook: WireHookTask): Promise<void> {
    const task = this.addTask(job, { name: hook.phase, kind: 'hook', node });
    await this.runTracked(job, task, {
      taskId: task.taskId,
      activityId: job.activity.id,
      backupId: job.backupId,
      hook,
    });
  }

  /**
   * Runs a service's dump under its dump lock. The lock is leased to the first
   * connected node in the service's preference (`dump_from`, else `nodes`);
   * the task carries the lease's fencing token, which every upload must show.
   *
   * If the holder is lost (its agent disconnects, or its lease expires because
   * its heartbeats stopped), the task is cancelled, its uploads in flight are
   * aborted, the controller waits until the lease has ended (so two dumps of
   * one service never overlap), deletes what the lost holder stored, and
   * leases the dump to the next node, up to `dump_attempts` nodes. Any other
   * failure fails the dump at once.
   */
  private async runLeased(
    job: RunningJob,
    env: EnvironmentConfig,
    svc: ServiceConfig,
    first: JobTask,
    purpose: LockRecord['purpose'],
    log: (level: 'info' | 'warn' | 'error', msg: string) => void,
    makeWork: (task: JobTask, token: number) => WireTask,
  ): Promise<{ task: JobTask; outcome: TaskOutcome }> {
    const key = lockKey(env.name, svc.name);
    const order = svc.dump_from ?? svc.nodes;
    const tried: string[] = [];
    let task = first;
    for (let attempt = 1; ; attempt++) {
      job.abort.signal.throwIfAborted();
      tried.push(task.nodeId);
      const lease = await this.locks.acquire({
        key,
        environment: env.name,
        service: svc.name,
        holder: task.nodeId,
        activityId: job.activity.id,
        taskId: task.taskId,
        purpose,
      });
      task.lock = { key, token: lease.token };
      log(
        'info',
        `${svc.kind} ${svc.name}: dump lock granted to ${task.nodeId} (fencing token ${lease.token}); dumping`,
      );
      let releaseLease = true;
      let stopWatching = () => {};
      const lost = new Promise<never>((_, reject) => {
        const onLost = (l: LockRecord, reason: string) => {
          if (l.key !== key || l.token !== lease.token) return;
          reject(new LeaseLostError(reason));
        };
        this.locks.on('lost', onLost);
        stopWatching = () => this.locks.off('lost', onLost);
      });
      lost.catch(() => undefined);
      try {
        const outcome = await Promise.race([this.runTracked(job, task, makeWork(task, lease.token)), lost]);
        return { task, outcome };
      } catch (err) {
        task.settled = true;
        if (!isNodeLoss(err) || job.abort.signal.aborted) throw err;
        // The holder is gone: stop it, discard its uploads in flight, and let the lease run out.
        const reason = errorMessage(err);
        const fencedMessage = `upload with fencing token ${lease.token} discarded: ${reason}`;
        this.fenced.set(task.taskId, fencedMessage);
        for (const oldest of this.fenced.keys()) {
          if (this.fenced.size <= CANCELLED_REASONS_KEPT) break;
          this.fenced.delete(oldest);
        }
        task.abort.abort(new StaleFencingTokenError(fencedMessage));
        this.agents.cancelTask(task.taskId, `dump lock lost (fencing token ${lease.token}): ${reason}`);
        const next = order.find((n) => !tried.includes(n) && this.agents.isConnected(n));
        // The lost holder may still be running (frozen, cut off): its lease is left to expire.
        releaseLease = false;
        if (attempt >= this.dumpAttempts || !next) {
          throw new LeaseLostError(
            `${svc.kind} ${svc.name}: ${reason}; no node left to take over (tried ${tried.join(', ')}, dump_attempts ${this.dumpAttempts})`,
            { cause: err },
          );
        }
        log('warn', `${svc.kind} ${svc.name} on ${task.nodeId}: ${reason}; waiting for its lease to end`);
        await this.locks.waitGone(key, lease.token, job.abort.signal);
        if (job.backupId) {
          await this.storages
            .forEnvironment(env.name)
            .deletePrefix(`${backupPrefix(job.backupId)}${svc.name}/`);
          for (const name of [...job.uploads.keys()]) {
            if (name.startsWith(`${svc.name}/`)) job.uploads.delete(name);
          }
        }
        log(
          'warn',
          `${svc.kind} ${svc.name}: partial artifacts of ${task.nodeId} discarded; dump reassigned to ${next} (attempt ${attempt + 1} of ${this.dumpAttempts})`,
        );
        task = this.addTask(job, { name: svc.name, kind: svc.kind, node: next });
      } finally {
        stopWatching();
        if (releaseLease) await this.locks.release(key, lease.token);
      }
    }
  }

  private abortJob(job: RunningJob, reason: string): void {
    if (!job.abort.signal.aborted) job.abort.abort(new Error(reason));
    for (const t of job.tasks.values()) {
      // Hooks are left to finish: a quiesce must be answered by its resume, which runs next.
      if (!t.settled && t.kind !== 'hook') this.agents.cancelTask(t.taskId, reason);
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
   * @throws NotRestorableError when the backup is not complete, is outside the restorable window, or failed its verification.
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
    // The restorable window, and a failed verification (see controller/verifier.ts).
    const refused = this.lifecycle.restoreRefusal(backup);
    if (refused) throw refused;
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
      for (const a of backup.artifacts) job.entries.set(a.name, a);
      // A corrupt artifact must leave every service as it was. The controller reads each artifact
      // in full before anything is applied, except the first one a single-task restore applies:
      // the agent checks that one as it streams and fails before its swap (engine.ts, restore),
      // when it says it does (an older agent may apply input before its check).
      const candidate = agentCheckedArtifact(plan);
      const node = plan[0]?.node ?? '';
      const agentChecked = candidate && this.agents.checksArtifactStream(node) ? candidate : undefined;
      if (candidate && !agentChecked) {
        log(
          'info',
          `the agent on ${node} does not declare that it checks artifacts as it restores (an older release): the controller reads ${candidate} first too`,
        );
      }
      const early = backup.artifacts.filter((a) => a.name !== agentChecked);
      if (agentChecked) {
        log(
          'info',
          `verifying ${early.length} of ${backup.artifacts.length} artifacts before anything is applied; ` +
            `the agent checks ${agentChecked} as it restores, before it swaps it in`,
        );
        const first = this.copyCandidates(backup, job.entries.get(agentChecked)!, log)[0];
        if (first) job.sources.set(agentChecked, first);
        else early.push(job.entries.get(agentChecked)!); // pickSource says there is no copy
      } else log('info', `verifying ${backup.artifacts.length} artifacts before anything is applied`);
      await this.pickSources(backup, early, job, log);
      if (early.length > 0) log('info', 'every artifact read matches its manifest size and SHA-256');
      const runTasks = (current: JobTask[]) =>
        this.runAll(
          job,
          plan.map((p, i) => {
            const t = current[i]!;
            log('info', `${p.kind} ${p.name}: restoring on ${p.node}`);
            // The agent reads copies in s3 locations, and in local ones it shares, straight.
            const names = p.restoreMount
              ? [p.restoreMount.artifact.name]
              : (p.restoreService?.artifacts ?? []).map((a) => a.name);
            const artifactSources = this.artifactSources(job, names);
            const work: WireTask = {
              taskId: t.taskId,
              activityId: job.activity.id,
              backupId: backup.id,
              ...(p.restoreMount ? { restoreMount: p.restoreMount } : { restoreService: p.restoreService }),
              artifactSources,
            };
            return { task: t, work };
          }),
        );
      if (agentChecked && this.agents.isConnected(node) && !this.agents.checksArtifactStream(node)) {
        // The agent reconnected as an older release while the other artifacts were read.
        await this.pickSources(backup, [job.entries.get(agentChecked)!], job, log);
      }
      try {
        await runTasks(tasks);
      } catch (err) {
        if (!agentChecked || job.abort.signal.aborted || job.sources.get(agentChecked) === undefined)
          throw err;
        // Was it the copy the agent read? Then nothing was applied (the agent fails before the
        // swap of the first artifact) and the restore runs again from a good copy.
        const used = job.sources.get(agentChecked)!;
        const good = await this.pickSource(backup, job.entries.get(agentChecked)!, job.abort.signal, log);
        if (good === used) throw err;
        job.sources.set(agentChecked, good);
        log('warn', `restoring again from "${good.name}" after: ${errorMessage(err)}`);
        await runTasks(plan.map((p) => this.addTask(job, p)));
      }
      if (env.hooks.post_restore.length > 0) {
        log('info', 'running the post_restore hooks');
        const results = await Promise.allSettled(
          [...byNode(env.hooks.post_restore)].map(([node, commands]) =>
            this.runHook(job, node, {
              environment: env.name,
              phase: 'post_restore',
              commands,
              maxPauseMs: 0,
              resumeCommands: [],
            }),
          ),
        );
        const failed = results.flatMap((r) => (r.status === 'rejected' ? [errorMessage(r.reason)] : []));
        if (failed.length > 0) {
          this.metrics.hookFailures.inc({ environment: env.name, phase: 'post_restore' }, failed.length);
          throw new HookFailedError(
            `the data was restored, but post_restore hooks failed: ${failed.join('; ')}`,
            { hint: 'run the failed commands by hand; the restored data itself is complete' },
          );
        }
      }
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
   * `db-dump`, after the reference platform's `ece-tools db-dump`: dumps the
   * environment's databases (all configured ones, or the named ones) to
   * `dump-<db>-<unix seconds>.sql.gz` files in `dumpDirectory` (default
   * `<agent work_dir>/dumps`) on the node that gets each service's dump lock.
   * It runs between the quiesce and resume hooks unless `live`.
   *
   * @throws NotFoundError for an unknown environment or database.
   * @throws InvalidArgumentError when no environment is named and several exist, or a name is unsafe.
   * @throws LockHeldError at once, naming the holder, when a dump of one of the services runs.
   * @throws AgentUnavailableError when a service has no connected node.
   */
  async dbDump(req: {
    environment?: string;
    databases: string[];
    dumpDirectory: string;
    live: boolean;
  }): Promise<{ activityId: string; backupId: string }> {
    if (!this.accepting) throw new ShuttingDownError();
    let env: EnvironmentConfig;
    if (req.environment) env = this.environment(req.environment);
    else if (this.environments.length === 1) env = this.environments[0]!;
    else {
      throw new InvalidArgumentError('several environments are configured; name one', {
        hint: `pass -e ENV (one of: ${this.environments.map((e) => e.name).join(', ') || 'none'})`,
      });
    }
    if (!env.active) throw new EnvironmentInactiveError(env.name);
    if (req.dumpDirectory && !req.dumpDirectory.startsWith('/')) {
      throw new InvalidArgumentError(`dump directory "${req.dumpDirectory}" is not an absolute path`);
    }
    const sql = env.services.filter((s) => s.kind !== 'redis');
    if (sql.length === 0)
      throw new InvalidArgumentError(`environment "${env.name}" has no database services`);
    const wanted = new Map<ServiceConfig, string[]>();
    if (req.databases.length === 0) {
      for (const s of sql) wanted.set(s, s.databases ?? []);
    } else {
      for (const db of req.databases) {
        if (!/^[A-Za-z0-9_$-]{1,64}$/.test(db)) {
          throw new InvalidArgumentError(`"${db}" is not a database name envsnap can dump to a file`);
        }
        const svc = sql.find((s) => s.databases?.includes(db)) ?? sql.find((s) => !s.databases);
        if (!svc) {
          const known = sql.flatMap((s) => s.databases ?? []).join(', ');
          throw new NotFoundError(`database "${db}" is not configured in environment ${env.name}`, {
            hint: `configured databases: ${known}`,
          });
        }
        wanted.set(svc, [...(wanted.get(svc) ?? []), db]);
      }
    }
    const plan = [...wanted].map(([svc, databases]) => ({
      svc,
      databases,
      name: svc.name,
      kind: svc.kind,
      node: this.pickNode(svc.dump_from ?? svc.nodes, `service ${svc.name}`),
    }));
    const activityId = newId();
    const reserved = this.locks.reserveAll(
      plan.map((p) => ({ key: lockKey(env.name, p.name), node: p.node })),
      { activityId, purpose: 'db-dump' },
    );
    const activity: ActivityRecord = {
      id: activityId,
      type: 'db.dump',
      environment: env.name,
      state: 'pending',
      created: new Date().toISOString(),
      backupId: '',
      description: `db-dump of ${env.name}${req.live ? ' (live)' : ''}: ${
        req.databases.length ? req.databases.join(', ') : 'every configured database'
      }`,
    };
    try {
      await this.catalog.putActivity(activity);
    } catch (err) {
      reserved.release();
      throw err;
    }
    const job = this.register(activity, '');
    const tasks = this.addTasks(job, plan);
    job.done = this.runDbDump(job, env, plan, tasks, req).finally(() => reserved.release());
    return { activityId, backupId: '' };
  }

  private async runDbDump(
    job: RunningJob,
    env: EnvironmentConfig,
    plan: Array<{ svc: ServiceConfig; databases: string[] }>,
    tasks: JobTask[],
    req: { dumpDirectory: string; live: boolean },
  ): Promise<void> {
    const log = (level: 'info' | 'warn' | 'error', msg: string) => this.hub.log(job.activity.id, level, msg);
    try {
      await this.setActivity(job, { state: 'in_progress' });
      log('info', `db-dump of ${env.name} started (${req.live ? 'live' : 'consistent'})`);
      const site =
        !req.live && QuiescedSite.needed(env)
          ? await QuiescedSite.quiesce(env, (node, hook) => this.runHook(job, node, hook), this.metrics, log)
          : undefined;
      try {
        const results = await this.firstFailure(
          job,
          plan.map((p, i) =>
            this.runLeased(job, env, p.svc, tasks[i]!, 'db-dump', log, (t, token) => ({
              taskId: t.taskId,
              activityId: job.activity.id,
              backupId: '',
              dbDump: {
                service: { ...serviceSpec(p.svc), databases: p.databases },
                dumpDirectory: req.dumpDirectory,
              },
              fencingToken: token,
              leaseTtlMs: this.locks.ttlMs,
            })),
          ),
        );
        for (const { task, outcome } of results) {
          for (const f of outcome.files ?? []) log('info', `dump written on ${task.nodeId}: ${f}`);
        }
      } catch (err) {
        this.abortJob(job, errorMessage(err));
        throw err;
      } finally {
        await site?.resume();
      }
      this.metrics.dbDumps.inc({ environment: env.name, status: 'complete' });
      log('info', 'db-dump complete');
      await this.finishActivity(job, 'complete');
    } catch (err) {
      const reason = errorMessage(err);
      log('error', `db-dump failed: ${reason}`);
      this.metrics.dbDumps.inc({ environment: env.name, status: 'failed' });
      await this.finishActivity(job, 'failed', reason);
    }
  }

  /**
   * Restore drill (README, "Restore drills"): the environment's nodes restore every artifact of a
   * complete backup into throwaway targets (scratch databases `<db>__envsnap_drill`, a throwaway
   * redis-server, a scratch directory; never the live data), recompute the stats the manifest
   * recorded at backup time, and remove the targets; the controller compares
   * (shared/drill-stats.ts), records the result in the catalog and the metrics, and resolves with it.
   * Each artifact's size and SHA-256 are checked by the agent as it drills it (from the first copy;
   * when the drill errs and that copy is bad, the artifact is drilled again from the first good
   * one), or, for an agent that does not declare that check (`Hello.checks_artifact_stream`), read
   * back by the controller first, up to {@link VERIFY_CONCURRENCY} at once. An artifact without a
   * good copy anywhere, that does not restore, or whose data differs, fails the
   * drill; the others are still drilled. Stats taken outside the dump's snapshot (live backups)
   * are compared but only reported.
   *
   * @param req `backupId`, or `environment` with `latest` for its newest complete backup.
   * @throws NotFoundError for an unknown backup or environment, or no complete backup.
   * @throws NotRestorableError when the backup is not complete.
   * @throws EnvironmentInactiveError when its environment is inactive.
   * @throws InvalidArgumentError when a drill of the environment runs already.
   */
  async drillBackup(req: {
    backupId?: string;
    environment?: string;
    latest?: boolean;
    source: DrillRecord['source'];
  }): Promise<DrillRecord> {
    if (!this.accepting) throw new ShuttingDownError();
    let backup: BackupRecord;
    if (req.latest) {
      const env = this.environment(req.environment ?? '');
      const found = (await this.catalog.listBackups(env.name)).find((b) => b.status === 'complete');
      if (!found)
        throw new NotFoundError(`environment ${env.name} has no complete backup to drill`, {
          hint: 'create one with envsnap backup:create',
        });
      backup = found;
    } else {
      backup = await this.catalog.getBackup(req.backupId ?? '');
      if (req.environment && req.environment !== backup.environment) {
        throw new InvalidArgumentError(
          `backup ${backup.id} belongs to environment ${backup.environment}, not ${req.environment}`,
          { hint: "a drill runs on the nodes of the backup's own environment" },
        );
      }
    }
    if (backup.status !== 'complete') {
      throw new NotRestorableError(
        `backup ${backup.id} is ${backup.status}; only complete backups are drilled`,
      );
    }
    const env = this.environment(backup.environment);
    if (!env.active) throw new EnvironmentInactiveError(env.name);
    for (const j of this.running.values()) {
      if (j.type === 'backup.drill' && j.activity.environment === env.name) {
        throw new InvalidArgumentError(
          `environment "${env.name}" has a running drill (activity ${j.activity.id})`,
          { hint: 'wait for it to finish' },
        );
      }
    }
    const activity: ActivityRecord = {
      id: newId(),
      type: 'backup.drill',
      environment: env.name,
      state: 'pending',
      created: new Date().toISOString(),
      backupId: backup.id,
      description: `restore drill of backup ${backup.id} (${env.name})`,
    };
    await this.catalog.putActivity(activity);
    const job = this.register(activity, backup.id);
    const done = this.runDrill(job, backup, env, req.source);
    job.done = done.then(() => undefined);
    return done;
  }

  private async runDrill(
    job: RunningJob,
    backup: BackupRecord,
    env: EnvironmentConfig,
    source: DrillRecord['source'],
  ): Promise<DrillRecord> {
    const started = Date.now();
    const log = (level: 'info' | 'warn' | 'error', msg: string) => this.hub.log(job.activity.id, level, msg);
    const results = new Map<string, ArtifactDrillResult>();
    const recorded = new Map(backup.artifacts.map((a) => [a.name, a]));
    const fail = (name: string, detail: string) =>
      results.set(name, { name, result: 'error', detail, differences: [], informational: false });
    try {
      await this.setActivity(job, { state: 'in_progress' });
      log(
        'info',
        `Restore drill of backup ${backup.id} of ${env.name}: scratch targets only, the live data is not touched`,
      );
      for (const a of backup.artifacts) job.entries.set(a.name, a);
      // Group the artifacts per service or mount, each on a node of the environment.
      const groups: DrillGroup[] = [];
      const byName = new Map<string, ArtifactEntry[]>();
      for (const a of backup.artifacts) byName.set(a.service, [...(byName.get(a.service) ?? []), a]);
      for (const [name, arts] of byName) {
        const kind = arts[0]!.kind;
        for (const a of arts) {
          if (a.format === 'pg_globals')
            results.set(a.name, {
              name: a.name,
              result: 'skipped',
              detail: 'roles are server-wide: a drill does not restore them',
              differences: [],
              informational: false,
            });
        }
        const todo = arts.filter((a) => a.format !== 'pg_globals');
        if (todo.length === 0) continue;
        const svc = kind === 'mount' ? undefined : env.services.find((s) => s.name === name);
        const mnt = kind === 'mount' ? env.mounts.find((m) => m.name === name) : undefined;
        const node = mnt?.node ?? svc?.nodes.find((n) => this.agents.isConnected(n)) ?? svc?.nodes[0] ?? '';
        if ((!svc && !mnt) || (svc && COMPATIBLE_KINDS[svc.kind] !== COMPATIBLE_KINDS[kind])) {
          for (const a of todo) fail(a.name, `${kind} ${name} is not in the config of ${env.name} any more`);
          continue;
        }
        if (!this.agents.isConnected(node)) {
          for (const a of todo) fail(a.name, `no agent connected for node ${node}`);
          continue;
        }
        groups.push({ name, kind: svc?.kind ?? 'mount', node, svc, mnt, artifacts: todo });
      }
      // Bytes: a drill applies nothing to live data, so an agent that checks each artifact's size and
      // SHA-256 as it drills it reads the first copy straight, as a restore's first artifact; for an
      // older agent the controller reads the artifacts first, 4 at once. An artifact without a good
      // copy anywhere cannot be drilled.
      const trusted = new Set<string>();
      const early: ArtifactEntry[] = [];
      for (const g of groups) {
        const capable = this.agents.checksArtifactStream(g.node);
        if (!capable) {
          log(
            'info',
            `the agent on ${g.node} does not declare that it checks artifacts as it restores (an older release): the controller reads those of ${g.kind} ${g.name} first`,
          );
        }
        for (const a of g.artifacts) {
          const first = capable ? this.copyCandidates(backup, a, log)[0] : undefined;
          if (first) {
            job.sources.set(a.name, first);
            trusted.add(a.name);
          } else early.push(a); // pickSource says there is no copy
        }
      }
      await this.pickSources(backup, early, job, log, (a, err) => fail(a.name, err.message));
      const ready = drillSubset(groups, (a) => job.sources.has(a.name));
      log(
        'info',
        `${ready.reduce((n, g) => n + g.artifacts.length, 0)} artifacts to drill on ${new Set(ready.map((g) => g.node)).size} node(s); ` +
          `the agents check ${trusted.size} of them as they drill them, the controller read ${early.length} first`,
      );
      const drilled = await this.runDrillTasks(job, backup, ready, log);
      // An artifact the agent checked did not restore: when the copy it read is bad, drill it again
      // from a good one (as a restore does); else its error stands.
      const suspects = ready.flatMap((g) =>
        g.artifacts.filter((a) => {
          const d = drilled.get(a.name);
          return trusted.has(a.name) && typeof d === 'object' && d.error !== '';
        }),
      );
      if (suspects.length > 0) {
        const used = new Map(suspects.map((a) => [a.name, job.sources.get(a.name)]));
        await this.pickSources(backup, suspects, job, log, (a, err) => fail(a.name, err.message));
        const again = new Set(
          suspects.filter((a) => job.sources.has(a.name) && job.sources.get(a.name) !== used.get(a.name)),
        );
        for (const a of suspects) {
          const d = drilled.get(a.name) as WireDrilledArtifact;
          if (d.cleanupError) log('error', `${a.name}: ${d.cleanupError}`);
          if (again.has(a))
            log(
              'warn',
              `${a.name}: drilling again from "${job.sources.get(a.name)!.name}" after: ${d.error}`,
            );
        }
        if (again.size > 0) {
          const second = await this.runDrillTasks(
            job,
            backup,
            drillSubset(ready, (a) => again.has(a)),
            log,
          );
          for (const [name, d] of second) drilled.set(name, d);
        }
      }
      for (const a of ready.flatMap((g) => g.artifacts)) {
        if (results.has(a.name)) continue; // no good copy anywhere
        const d = drilled.get(a.name);
        if (typeof d === 'string') {
          fail(a.name, d);
          continue;
        }
        const judged = judgeArtifact(a.name, a.stats, {
          error: d ? d.error : 'the agent did not report this artifact',
          observed: d ? statsFromWire(d.observed, a.kind) : undefined,
        });
        if (d?.cleanupError) {
          judged.detail += `; scratch target not removed: ${d.cleanupError}`;
          log('error', `${a.name}: ${d.cleanupError}`);
        }
        results.set(a.name, judged);
      }
    } catch (err) {
      const reason = errorMessage(err);
      this.abortJob(job, reason);
      for (const a of backup.artifacts) if (!results.has(a.name)) fail(a.name, `drill stopped: ${reason}`);
    }
    const artifacts = [...recorded.keys()].sort().map(
      (name) =>
        results.get(name) ?? {
          name,
          result: 'error' as const,
          detail: 'not drilled',
          differences: [],
          informational: false,
        },
    );
    const bad = artifacts.filter((a) => a.result === 'fail' || a.result === 'error');
    const record: DrillRecord = {
      backupId: backup.id,
      environment: env.name,
      time: job.activity.created,
      result: bad.length === 0 ? 'pass' : 'fail',
      durationSeconds: (Date.now() - started) / 1000,
      activityId: job.activity.id,
      source,
      artifacts,
    };
    for (const a of artifacts) {
      const level =
        a.result === 'fail' || a.result === 'error' ? 'error' : a.differences.length ? 'warn' : 'info';
      log(level, `${a.name}: ${a.result}${a.informational ? ' (informational)' : ''}: ${a.detail}`);
    }
    await this.catalog
      .putDrill(record)
      .catch((err: unknown) => log('error', `cannot record the drill: ${errorMessage(err)}`));
    const labels = { environment: env.name, result: record.result };
    this.metrics.drills.inc(labels);
    this.metrics.drillDuration.observe(labels, record.durationSeconds);
    this.metrics.drillLastResult.set({ environment: env.name, status: record.result }, 1);
    this.metrics.drillLastResult.set(
      { environment: env.name, status: record.result === 'pass' ? 'fail' : 'pass' },
      0,
    );
    this.metrics.drillLastRun.set({ environment: env.name, status: record.result }, Date.now() / 1000);
    const summary = `Restore drill of ${backup.id}: ${record.result} (${artifacts.length - bad.length} of ${artifacts.length} artifacts pass or skipped) in ${record.durationSeconds.toFixed(1)} s`;
    log(record.result === 'pass' ? 'info' : 'error', summary);
    await this.finishActivity(
      job,
      record.result === 'pass' ? 'complete' : 'failed',
      record.result === 'pass'
        ? undefined
        : `drill failed: ${bad.map((a) => `${a.name}: ${a.detail}`).join('; ')}`,
    );
    return record;
  }

  /**
   * Runs one drill task per group, all at once, and returns per artifact what its agent reported
   * (undefined when it did not report it), or the error of its task.
   *
   * @throws the job's abort reason when the job was aborted meanwhile.
   */
  private async runDrillTasks(
    job: RunningJob,
    backup: BackupRecord,
    groups: readonly DrillGroup[],
    log: (level: 'info' | 'warn' | 'error', msg: string) => void,
  ): Promise<Map<string, WireDrilledArtifact | string | undefined>> {
    const plan = groups.map((g) => {
      const task = this.addTask(job, g);
      const base = {
        taskId: task.taskId,
        activityId: job.activity.id,
        backupId: backup.id,
        artifactSources: this.artifactSources(
          job,
          g.artifacts.map((a) => a.name),
        ),
      };
      const work: WireTask = g.mnt
        ? { ...base, drillMount: { mount: mountSpec(g.mnt), artifact: toWire(g.artifacts[0]!) } }
        : { ...base, drillService: { service: serviceSpec(g.svc!), artifacts: g.artifacts.map(toWire) } };
      return { g, task, work };
    });
    const outcomes = await Promise.allSettled(
      plan.map(({ task, work }) => {
        log('info', `${task.kind} ${task.name}: drilling on ${task.nodeId}`);
        return this.runTracked(job, task, work);
      }),
    );
    job.abort.signal.throwIfAborted();
    const out = new Map<string, WireDrilledArtifact | string | undefined>();
    for (const [i, o] of outcomes.entries()) {
      const { g } = plan[i]!;
      if (o.status === 'rejected') {
        for (const a of g.artifacts) out.set(a.name, errorMessage(o.reason));
        continue;
      }
      const drilled = new Map((o.value.drilled ?? []).map((d) => [d.name, d]));
      for (const a of g.artifacts) out.set(a.name, drilled.get(a.name));
    }
    return out;
  }

  /**
   * Re-reads one stored artifact and checks its size and SHA-256 against the manifest.
   *
   * @throws ArtifactCorruptError when it is missing or differs.
   */
  async verifyArtifact(
    backupId: string,
    a: ArtifactEntry,
    signal: AbortSignal | undefined,
    storage: StorageBackend,
  ): Promise<void> {
    let stream: Readable;
    try {
      stream = await storage.get(storedArtifactKey(backupId, a));
    } catch (err) {
      if (err instanceof NotFoundError) {
        throw new ArtifactCorruptError(`artifact ${a.name} is missing from storage "${storage.name}"`, {
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
   * The locations holding a copy of an artifact, in the order a restore tries them: the primary,
   * then the complete replicas. Copies retention pruned on purpose are left out (the log says so
   * for the primary), as are replicas in a location no longer configured. Reads nothing.
   */
  private copyCandidates(
    backup: BackupRecord,
    a: ArtifactEntry,
    log: (level: 'info' | 'warn' | 'error', msg: string) => void,
  ): StorageBackend[] {
    const configured = new Map(this.storages.all().map((s) => [s.name, s]));
    const candidates = copyLocations(backup).flatMap((name, i) => {
      const s = configured.get(name);
      return s ? [s] : i === 0 && name === backup.storage ? [this.storages.backend(name)] : [];
    });
    if (backup.pruned?.[backup.storage] && candidates[0])
      log(
        'info',
        `${a.name}: the primary copy was pruned by retention; reading the copy in "${candidates[0].name}"`,
      );
    return candidates;
  }

  /**
   * Picks a good copy of each artifact ({@link pickSource}) into `job.sources`, reading up to
   * {@link VERIFY_CONCURRENCY} artifacts at once (they are independent reads, and hashing one
   * leaves the disk or the network idle between chunks).
   *
   * @param unusable when given (drills), an artifact without a good copy is handed to it and left
   *   out of `job.sources`, and the others are still read; absent (restores), the first one stops all.
   * @throws ArtifactCorruptError for the first artifact without a good copy (without `unusable`).
   */
  private async pickSources(
    backup: BackupRecord,
    artifacts: readonly ArtifactEntry[],
    job: RunningJob,
    log: (level: 'info' | 'warn' | 'error', msg: string) => void,
    unusable?: (a: ArtifactEntry, err: ArtifactCorruptError) => void,
  ): Promise<void> {
    const stop = new AbortController();
    const signal = AbortSignal.any([job.abort.signal, stop.signal]);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < artifacts.length) {
        signal.throwIfAborted();
        const a = artifacts[next++]!;
        try {
          job.sources.set(a.name, await this.pickSource(backup, a, signal, log));
        } catch (err) {
          if (!unusable || !(err instanceof ArtifactCorruptError)) throw err;
          job.sources.delete(a.name);
          unusable(a, err);
        }
      }
    };
    let failure: { err: unknown } | undefined;
    await Promise.all(
      Array.from({ length: Math.min(VERIFY_CONCURRENCY, artifacts.length) }, () =>
        worker().catch((err: unknown) => {
          // The first failure is the one to report; the others are its abort.
          failure ??= { err };
          stop.abort(err);
        }),
      ),
    );
    if (failure) throw failure.err;
  }

  /**
   * The location a restore reads an artifact from: the primary when its copy
   * matches the manifest, else the first replica whose copy does (complete
   * replicas only), saying so in the activity log.
   *
   * @throws ArtifactCorruptError when no location holds a good copy.
   */
  private async pickSource(
    backup: BackupRecord,
    a: ArtifactEntry,
    signal: AbortSignal,
    log: (level: 'info' | 'warn' | 'error', msg: string) => void,
  ): Promise<StorageBackend> {
    const candidates = this.copyCandidates(backup, a, log);
    const problems: string[] = [];
    for (const location of candidates) {
      try {
        await this.verifyArtifact(backup.id, a, signal, location);
        if (problems.length > 0) {
          log('warn', `${a.name}: ${problems.join('; ')}; restoring from replica "${location.name}"`);
        }
        return location;
      } catch (err) {
        if (!(err instanceof ArtifactCorruptError)) throw err;
        problems.push(`copy in "${location.name}" unusable: ${err.message}`);
      }
    }
    throw new ArtifactCorruptError(`no good copy of ${a.name} in any location: ${problems.join('; ')}`, {
      hint: 'nothing was restored; use another backup',
    });
  }

  /**
   * Checks that an upload belongs to a running backup task of that node, and
   * returns where and how to store it, for the artifact transfer handler: the
   * environment's locations (one pass to all), a signal that aborts when the
   * job fails or the task loses its dump lock, and `record`, which refuses a
   * result that arrives after the lease moved on.
   *
   * @param fencingToken the upload header's token; a task under a dump lock must show the current one.
   * @throws StaleFencingTokenError when the task's lease is gone or has another token, or the task
   *   lost its dump lock (also after its job ended).
   * @throws NotFoundError when no running backup has this task.
   */
  uploadTarget(
    backupId: string,
    taskId: string,
    artifactName: string,
    fencingToken = 0,
    /** The local locations the agent sends through the controller (it writes the others itself); empty: all. */
    locations: readonly string[] = [],
  ): {
    signal: AbortSignal;
    storage: ReplicatedStorage;
    /** The key to store the artifact under (the attempt's key when agents also write straight). */
    key: string;
    record(result: ReplicatedPutResult): boolean;
  } {
    const { job, task, key, current } = this.backupTask(backupId, taskId, artifactName, fencingToken);
    const storage = this.storages.controllerSide(job.activity.environment, locations);
    if (!storage) {
      throw new InvalidArgumentError(
        `environment ${job.activity.environment} has no location the controller writes; the agent writes every copy straight`,
      );
    }
    return {
      signal: AbortSignal.any([job.abort.signal, task.abort.signal]),
      storage,
      key,
      record: (result) => {
        if (!current()) return false;
        const copies = this.copiesOf(job, artifactName, key);
        copies.set(storage.primary.name, { ok: true, result });
        for (const [name, outcome] of Object.entries(result.replicas)) copies.set(name, outcome);
        return true;
      },
    };
  }

  /**
   * CommitArtifact: records the copies an agent wrote straight to S3
   * locations, once the task is still running and still holds its dump lock
   * (the fencing token is checked now, at completion: a stale holder's objects
   * are never recorded and stay orphans for `repository:check --repair`).
   * Each direct copy is checked with a HEAD: the object must exist under the
   * attempt's key with the size the agent reported. The SHA-256 is the
   * agent's, computed once as the bytes left it; like every copy's, it is
   * re-read and checked by `backup:verify` and before any restore applies the
   * artifact. A controller-side location the agent reports failed (its
   * UploadArtifact branch broke) is recorded failed unless stored.
   *
   * @returns the copies' size and SHA-256 as recorded.
   * @throws StaleFencingTokenError when the task's lease is gone or has another token.
   * @throws NotFoundError when no running backup has this task.
   * @throws InvalidArgumentError for a copy under another key or an unknown location.
   */
  async commitArtifact(req: {
    backupId: string;
    taskId: string;
    artifact: WireArtifact;
    fencingToken: number;
    copies: WireDirectCopy[];
  }): Promise<{ sizeBytes: number; sha256: string }> {
    const name = req.artifact.name;
    const { job, key, current } = this.backupTask(req.backupId, req.taskId, name, req.fencingToken);
    const locations = new Set(
      this.storages.forEnvironment(job.activity.environment).locations.map((l) => l.name),
    );
    const size = Number(req.artifact.sizeBytes);
    const checked = new Map<string, ReplicaOutcome>();
    for (const c of req.copies) {
      if (!locations.has(c.location)) {
        throw new InvalidArgumentError(
          `storage "${c.location}" is not a location of ${job.activity.environment}`,
        );
      }
      // A local location's ok copy is one the agent wrote straight (it shares the directory); its
      // failures may be either path's. An s3 location's copies are all the agent's.
      if (!c.ok) {
        checked.set(c.location, { ok: false, error: c.error || 'not written' });
        continue;
      }
      if (c.key !== key) {
        throw new InvalidArgumentError(`copy of ${name} in "${c.location}" is under ${c.key}, not ${key}`);
      }
      const st = await this.storages
        .backend(c.location)
        .stat(key)
        .catch((err: unknown) => ({ error: errorMessage(err) }));
      const bad = !st
        ? `object ${key} is not in "${c.location}"`
        : 'error' in st
          ? st.error
          : st.sizeBytes !== size || Number(c.sizeBytes) !== size || c.sha256 !== req.artifact.sha256
            ? `object ${key} in "${c.location}" holds ${st.sizeBytes} bytes (sha256 ${c.sha256}), the artifact ${size} bytes (sha256 ${req.artifact.sha256})`
            : undefined;
      checked.set(
        c.location,
        bad
          ? { ok: false, error: bad }
          : { ok: true, result: { sizeBytes: size, sha256: req.artifact.sha256 } },
      );
    }
    if (!current()) {
      throw new StaleFencingTokenError(
        `backup ${req.backupId} task ${req.taskId} is no longer running or lost its dump lock; copies of ${name} discarded`,
      );
    }
    const copies = this.copiesOf(job, name, key);
    for (const [loc, outcome] of checked) {
      // What the controller stored itself stands.
      if (!outcome.ok && copies.get(loc)?.ok && this.storages.isLocal(loc)) continue;
      copies.set(loc, outcome);
      // Bytes stored per location, whoever wrote them (UploadArtifact counts the controller's own).
      if (outcome.ok) this.metrics.storagePutBytes.inc({ location: loc }, outcome.result.sizeBytes);
    }
    return { sizeBytes: size, sha256: req.artifact.sha256 };
  }

  /**
   * The running backup task an upload or commit is for, the key its artifact
   * is stored under, and `current()`, false once the job or task ended or the
   * task's dump lock moved on.
   *
   * @throws StaleFencingTokenError when the task's lease is gone or has another token.
   * @throws NotFoundError when no running backup has this task.
   * @throws InvalidArgumentError when the artifact is not the task's service's or mount's.
   */
  private backupTask(
    backupId: string,
    taskId: string,
    artifactName: string,
    fencingToken: number,
  ): { job: RunningJob; task: JobTask; key: string; current: () => boolean } {
    const job = [...this.running.values()].find(
      (j) => j.backupId === backupId && j.type === 'backup.create' && j.tasks.has(taskId),
    );
    const task = job?.tasks.get(taskId);
    // A task under a dump lock must show the lease's current fencing token, even a settled one:
    // a stale holder is told why its upload is refused.
    if (task?.lock) this.locks.checkFence(task.lock.key, taskId, fencingToken);
    const fenced = this.fenced.get(taskId);
    if (fenced !== undefined) throw new StaleFencingTokenError(fenced);
    if (!job || !task || task.settled || job.abort.signal.aborted) {
      throw new NotFoundError(`no running backup task ${taskId} for backup ${backupId}`);
    }
    if (!artifactName.startsWith(`${task.name}/`)) {
      throw new InvalidArgumentError(`artifact ${artifactName} does not belong to ${task.kind} ${task.name}`);
    }
    const lock = task.lock;
    // Unique per attempt only when agents write straight: there the controller cannot refuse bytes.
    const token = lock && this.storages.hasDirect(job.activity.environment) ? lock.token : 0;
    return {
      job,
      task,
      key: attemptArtifactKey(backupId, artifactName, token),
      current: () =>
        !job.abort.signal.aborted &&
        !task.settled &&
        !task.abort.signal.aborted &&
        (!lock || this.locks.isCurrent(lock.key, lock.token)),
    };
  }

  /**
   * Where a restore or drill task may read each artifact straight: the
   * location each one's verified copy is in (`job.sources`), s3 or local
   * (the agent reads a local one straight only when it proves it shares the
   * directory, else through DownloadArtifact).
   */
  private artifactSources(
    job: RunningJob,
    names: readonly string[],
  ): Array<{ artifact: string; location: WireStorageTarget }> {
    return names.flatMap((name) => {
      const source = job.sources.get(name);
      return source ? [{ artifact: name, location: this.storages.target(source.name) }] : [];
    });
  }

  /** The per-location copies recorded for an artifact (a new key starts afresh). */
  private copiesOf(job: RunningJob, name: string, key: string): Map<string, ReplicaOutcome> {
    let copies = job.uploads.get(name);
    if (!copies || job.keys.get(name) !== key) {
      copies = new Map();
      job.uploads.set(name, copies);
      job.keys.set(name, key);
    }
    return copies;
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
  ): { environment: string; signal: AbortSignal; storage: StorageBackend; key: string } {
    const job = [...this.running.values()].find(
      (j) =>
        j.backupId === backupId &&
        (j.type === 'backup.restore' || j.type === 'backup.drill') &&
        j.tasks.has(taskId),
    );
    if (!job) throw new NotFoundError(`no running restore task ${taskId} for backup ${backupId}`);
    const task = job.tasks.get(taskId)!;
    if (!artifactName.startsWith(`${task.name}/`)) {
      throw new InvalidArgumentError(`artifact ${artifactName} does not belong to ${task.kind} ${task.name}`);
    }
    const storage = job.sources.get(artifactName);
    if (!storage) throw new NotFoundError(`artifact ${artifactName} was not verified for this restore`);
    const entry = job.entries.get(artifactName);
    return {
      environment: job.activity.environment,
      signal: job.abort.signal,
      storage,
      key: entry ? storedArtifactKey(job.backupId, entry) : artifactKey(job.backupId, artifactName),
    };
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
  const stats = statsFromWire(a.stats, a.kind);
  const redis = redisSourceFromWire(a.redis);
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
    ...(a.encryption === 'age-x25519'
      ? { encryption: 'age-x25519' as const, key_fingerprint: a.keyFingerprint ?? '' }
      : {}),
    ...(a.key ? { key: a.key } : {}),
    ...(stats ? { stats } : {}),
    ...(redis ? { redis } : {}),
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
    encryption: a.encryption ?? '',
    keyFingerprint: a.key_fingerprint ?? '',
    key: a.key ?? '',
    stats: a.stats ?? null,
    redis: a.redis ?? null,
  };
}

/** A controller `put` to every location, as copies by location. */
function putCopies(store: ReplicatedStorage, put: ReplicatedPutResult): Map<string, ReplicaOutcome> {
  return new Map<string, ReplicaOutcome>([
    [store.primary.name, { ok: true, result: put }],
    ...Object.entries(put.replicas),
  ]);
}

/**
 * Each replica's state after a backup's uploads: complete when every artifact
 * and the manifest were stored there intact, else failed with the first error.
 */
function replicaStates(
  store: ReplicatedStorage,
  puts: Array<Map<string, ReplicaOutcome>>,
): Record<string, ReplicaState> {
  const out: Record<string, ReplicaState> = {};
  for (const r of store.replicas) {
    const bad = puts.map((p) => p.get(r.name)).find((o) => !o || !o.ok);
    out[r.name] = bad
      ? { status: 'failed', error: bad.ok ? 'not written' : bad.error, attempts: 0 }
      : { status: 'complete', attempts: 0 };
  }
  return out;
}
