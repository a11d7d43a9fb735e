import { createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { InvalidArgumentError, TaskAbortedError, errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { redisSourceFromWire, restoreOrder } from '../shared/manifest.js';
import type {
  WireArtifact,
  WireDrilledArtifact,
  WireProgress,
  WireServiceSpec,
  WireStorageTarget,
  WireTask,
} from '../shared/wire.js';
import { allOrFirstError, compressAndUpload, downloadAndApply } from './artifact-pipelines.js';
import { drillStatsLevel, startStats } from './backup-stats.js';
import { SUFFIX, startCompressor, type CompressionName, type CompressionOptions } from './compression.js';
import type { DumpRun, DumpUnit, EngineContext, ServiceTarget } from './engines/engine.js';
import { checkKeyFor, type EncryptionKey } from './encryption.js';
import { engineFor } from './engines/index.js';
import { QuiesceWatchdog, runHookCommands } from './hooks.js';
import type { AgentMetrics } from './metrics.js';
import { extractMountArchive, writeMountArchive, type MountArchiveResult } from './mount-archive.js';
import { drillMountArtifact, drillServiceArtifacts, type DrillDeps } from './restore-drill.js';
import { resolveConnection } from './secrets.js';
import type { StorageConfig } from '../shared/config.js';
import type { StorageBackend } from '../shared/storage/backend.js';
import { storedArtifactKey } from '../shared/storage/keys.js';
import { openDirectTarget } from '../shared/storage/locations.js';
import { proveSharedLocation } from '../shared/storage/local-reachability.js';
import { ArtifactSinks } from './artifact-sinks.js';

/** How the runner talks back to the controller. */
export interface TaskReporter {
  progress(p: WireProgress): void;
  log(taskId: string, level: 'info' | 'warn' | 'error', message: string): void;
  result(
    taskId: string,
    ok: boolean,
    error: string,
    artifacts: WireArtifact[],
    files?: string[],
    drilled?: WireDrilledArtifact[],
  ): void;
}

/** A counting semaphore: at most `limit` holders at once. */
class Semaphore {
  private active = 0;
  private readonly waiters: Array<() => void> = [];
  constructor(private max: number) {}

  /** Changes the limit (reload); a raised one lets waiters in at once. */
  set limit(n: number) {
    this.max = n;
    this.wake();
  }

  async use<T>(fn: () => Promise<T>): Promise<T> {
    // A woken waiter's slot was taken for it by wake().
    if (this.active >= this.max) await new Promise<void>((r) => this.waiters.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.wake();
    }
  }

  private wake(): void {
    while (this.waiters.length > 0 && this.active < this.max) {
      this.active++;
      this.waiters.shift()!();
    }
  }
}

interface RunningTask {
  task: WireTask;
  abort: AbortController;
  done: Promise<void>;
}

/** An engine's context plus a warning line for the activity log. */
interface TaskContext extends EngineContext {
  warn(message: string): void;
}

/** Progress is sent at most this often per artifact, milliseconds. */
const PROGRESS_EVERY_MS = 500;

/**
 * Runs the tasks the controller sends: dumps and archives that are compressed
 * and uploaded, and restores that are downloaded, checked and applied.
 *
 * At most `concurrency` artifacts are produced at once on this node, so that
 * independent services are dumped concurrently without overloading it.
 * A cancelled task kills its tools and removes its scratch directory.
 */
export class TaskRunner {
  private readonly running = new Map<string, RunningTask>();
  private readonly slots: Semaphore;
  /** Resumes a quiesced site by itself when no resume comes within max_pause. */
  readonly watchdog: QuiesceWatchdog;

  constructor(
    private readonly nodeId: string,
    private readonly workDir: string,
    concurrency: number,
    private compression: CompressionOptions,
    private readonly client: () => grpc.Client,
    private readonly reporter: TaskReporter,
    private readonly metrics: AgentMetrics,
    private readonly logger: Logger,
    /** The agent's age key: artifacts are encrypted when set. */
    private encryption?: EncryptionKey,
    /** The agent config's `storage:` entries: credentials for s3 locations written or read straight. */
    private ownStorage: readonly StorageConfig[] = [],
    /** `agent.direct_local_storage`: local locations this node shares are written and read straight. */
    private directLocal = true,
  ) {
    this.slots = new Semaphore(concurrency);
    this.watchdog = new QuiesceWatchdog(logger, nodeId);
  }

  /**
   * Applies a reloaded configuration to the tasks that start from now on
   * (running ones keep theirs): concurrency, zstd settings, encryption key.
   */
  reconfigure(opts: {
    concurrency: number;
    compression: CompressionOptions;
    encryption?: EncryptionKey;
    storage?: readonly StorageConfig[];
    directLocalStorage?: boolean;
  }): void {
    this.slots.limit = opts.concurrency;
    this.compression = opts.compression;
    this.encryption = opts.encryption;
    if (opts.storage) this.ownStorage = opts.storage;
    if (opts.directLocalStorage !== undefined) this.directLocal = opts.directLocalStorage;
  }

  /** Messages already logged by `noteOnce`. */
  private readonly noted = new Set<string>();

  /** Logs a message (info) the first time only: e.g. why a local location goes through the controller. */
  private noteOnce(message: string): void {
    if (this.noted.has(message)) return;
    this.noted.add(message);
    this.logger.info(message);
  }

  /**
   * A local location of the controller's, opened for writing and reading
   * straight when this node proves it shares the directory
   * (`proveSharedLocation`); undefined, with the reason logged once, when it
   * does not or `agent.direct_local_storage` is off: its bytes then go
   * through the controller, as for any other node.
   */
  private async openLocal(target: WireStorageTarget): Promise<StorageBackend | undefined> {
    if (target.kind !== 'local' || !target.local) return undefined;
    if (!this.directLocal) {
      this.noteOnce(
        `storage "${target.name}": agent.direct_local_storage is off; its bytes go through the controller`,
      );
      return undefined;
    }
    try {
      return await proveSharedLocation(target, this.nodeId);
    } catch (err) {
      this.noteOnce(`${errorMessage(err)}; its bytes go through the controller`);
      return undefined;
    }
  }

  /**
   * A backup task's locations, when some are written straight (s3): opened at
   * task start, so that a node without credentials for the primary fails
   * before it dumps anything. Undefined when everything goes through the controller.
   */
  private async openSinks(task: WireTask, ctx: TaskContext): Promise<ArtifactSinks | undefined> {
    if (!ArtifactSinks.needed(task.storageTargets)) return undefined;
    return ArtifactSinks.open({
      client: this.client(),
      backupId: task.backupId,
      taskId: task.taskId,
      fencingToken: task.fencingToken ?? 0,
      targets: task.storageTargets!,
      own: this.ownStorage,
      nodeId: this.nodeId,
      warn: (m) => ctx.warn(m),
      openLocal: (t) => this.openLocal(t),
    });
  }

  /**
   * Where a restore or drill task reads each artifact straight (the s3
   * locations the controller picked, and the local ones this node proves it
   * shares), opened once per location. An s3 location this node cannot open
   * is read through the controller instead, and the log says so; a local one
   * it does not share is read through the controller (its reason logged once).
   */
  private async directSources(
    task: WireTask,
    artifacts: readonly WireArtifact[],
    ctx: TaskContext,
    opened: Map<string, StorageBackend>,
  ): Promise<Map<string, { storage: StorageBackend; key: string }>> {
    const out = new Map<string, { storage: StorageBackend; key: string }>();
    for (const src of task.artifactSources ?? []) {
      const a = artifacts.find((x) => x.name === src.artifact);
      if (!a || !src.location) continue;
      let storage = opened.get(src.location.name);
      if (!storage && src.location.kind === 'local') {
        storage = await this.openLocal(src.location);
        if (!storage) continue;
        opened.set(src.location.name, storage);
      }
      if (!storage) {
        if (src.location.kind !== 's3') continue;
        try {
          storage = await openDirectTarget(src.location, this.ownStorage, this.nodeId);
          opened.set(src.location.name, storage);
        } catch (err) {
          ctx.warn(`${errorMessage(err)}; reading ${a.name} through the controller instead`);
          continue;
        }
      }
      ctx.log(`${a.name}: reading straight from storage "${src.location.name}"`);
      out.set(a.name, {
        storage,
        key: storedArtifactKey(task.backupId, { name: a.name, key: a.key || undefined }),
      });
    }
    return out;
  }

  /** The shortest lease among running tasks that hold a dump lock, ms; undefined when none does. */
  shortestLeaseMs(): number | undefined {
    const ttls = [...this.running.values()].flatMap((t) => (t.task.leaseTtlMs ? [t.task.leaseTtlMs] : []));
    return ttls.length ? Math.min(...ttls) : undefined;
  }

  /**
   * Self-fencing: aborts every task that runs under a dump lock. Called when
   * the controller has been unreachable for as long as the lease, which has
   * then expired there and may be granted to another node.
   */
  cancelLeased(reason: string): void {
    for (const t of this.running.values()) {
      if (t.task.fencingToken)
        t.abort.abort(new TaskAbortedError(`${reason} (fencing token ${t.task.fencingToken})`));
    }
  }

  /** IDs of the tasks running now (sent in `hello` after a reconnect). */
  runningIds(): string[] {
    return [...this.running.keys()];
  }

  get size(): number {
    return this.running.size;
  }

  /** Starts a task; its result goes to the reporter. A task id already running is ignored. */
  start(task: WireTask): void {
    if (this.running.has(task.taskId)) return;
    const abort = new AbortController();
    const entry: RunningTask = { task, abort, done: Promise.resolve() };
    this.running.set(task.taskId, entry);
    this.metrics.runningTasks.set(this.running.size);
    entry.done = this.run(task, abort.signal).finally(() => {
      this.running.delete(task.taskId);
      this.metrics.runningTasks.set(this.running.size);
    });
  }

  /** Aborts a task (its tools are killed, its scratch files removed). */
  cancel(taskId: string, reason: string): void {
    this.running.get(taskId)?.abort.abort(new TaskAbortedError(reason));
  }

  /** Aborts every task and waits for them to clean up. */
  async abortAll(reason: string): Promise<void> {
    for (const t of this.running.values()) t.abort.abort(new TaskAbortedError(reason));
    await Promise.all([...this.running.values()].map((t) => t.done));
  }

  private async run(task: WireTask, signal: AbortSignal): Promise<void> {
    const type = task.preRestoreCleanup
      ? 'cleanup'
      : task.hook
        ? 'hook'
        : task.dbDump
          ? 'db-dump'
          : task.backupService || task.backupMount
            ? 'backup'
            : task.drillService || task.drillMount
              ? 'drill'
              : 'restore';
    const kind = task.hook
      ? 'hook'
      : (task.backupService?.service.kind ??
        task.restoreService?.service.kind ??
        task.dbDump?.service.kind ??
        task.drillService?.service.kind ??
        'mount');
    // Dump intervals under a dump lock are logged, so that overlaps can be checked.
    const dumped = task.backupService?.service.name ?? task.dbDump?.service.name;
    if (dumped && task.fencingToken) {
      this.logger.info(
        { interval: 'start', service: dumped, task: task.taskId, fencingToken: task.fencingToken },
        `dump of ${dumped} started`,
      );
    }
    const started = Date.now();
    const scratch = join(this.workDir, 'tasks', task.taskId);
    const log = (level: 'info' | 'warn' | 'error', message: string) => {
      this.logger[level]({ task: task.taskId, kind }, message);
      this.reporter.log(task.taskId, level, message);
    };
    try {
      await mkdir(scratch, { recursive: true, mode: 0o700 });
      const ctx: TaskContext = {
        signal,
        workDir: scratch,
        log: (m) => log('info', m),
        warn: (m) => log('warn', m),
      };
      let artifacts: WireArtifact[] = [];
      let files: string[] = [];
      let drilled: WireDrilledArtifact[] = [];
      if (task.hook) await this.hook(task, ctx);
      else if (task.preRestoreCleanup) {
        const spec = task.preRestoreCleanup.service;
        const dropped = await engineFor(spec.kind as ServiceTarget['kind']).dropPreRestoreCopies(
          await this.target(spec),
          ctx,
        );
        if (dropped.length) ctx.log(`pre-restore copies dropped: ${dropped.join(', ')}`);
      } else if (task.dbDump) files = await this.dbDump(task, ctx);
      else if (task.backupService)
        artifacts = await this.backupService(
          task,
          task.backupService.service,
          task.backupService.compression,
          ctx,
        );
      else if (task.backupMount) artifacts = [await this.backupMount(task, ctx)];
      else if (task.restoreService) await this.restoreService(task, ctx);
      else if (task.restoreMount) await this.restoreMount(task, ctx);
      else if (task.drillService) {
        const { service, artifacts: drilling } = task.drillService;
        drilled = await this.withDirectSources(task, drilling, ctx, async (direct) =>
          drillServiceArtifacts(this.drillDeps(task, direct), await this.target(service), drilling, ctx),
        );
      } else if (task.drillMount) {
        const { mount, artifact } = task.drillMount;
        drilled = [
          await this.withDirectSources(task, [artifact], ctx, (direct) =>
            this.slots.use(() => drillMountArtifact(this.drillDeps(task, direct), mount, artifact, ctx)),
          ),
        ];
      } else throw new InvalidArgumentError('task has no work this agent understands; upgrade the agent');
      signal.throwIfAborted();
      this.metrics.tasks.inc({ type, kind, status: 'ok' });
      this.reporter.result(task.taskId, true, '', artifacts, files, drilled);
    } catch (err) {
      const reason = signal.aborted ? errorMessage(signal.reason) : errorMessage(err);
      log('error', reason);
      this.metrics.tasks.inc({ type, kind, status: 'failed' });
      this.reporter.result(task.taskId, false, reason, []);
    } finally {
      if (dumped && task.fencingToken) {
        this.logger.info(
          { interval: 'end', service: dumped, task: task.taskId, fencingToken: task.fencingToken },
          `dump of ${dumped} ended`,
        );
      }
      this.metrics.taskDuration.observe({ type, kind }, (Date.now() - started) / 1000);
      await rm(scratch, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  private progress(task: WireTask, artifact: string) {
    let last = 0;
    return (bytes: number, done = false) => {
      const now = Date.now();
      if (!done && now - last < PROGRESS_EVERY_MS) return;
      last = now;
      this.reporter.progress({ taskId: task.taskId, artifact, bytes, totalBytes: 0, done });
    };
  }

  /** Runs `fn` with the task's direct sources (`directSources`) open, and closes them after. */
  private async withDirectSources<T>(
    task: WireTask,
    artifacts: readonly WireArtifact[],
    ctx: TaskContext,
    fn: (direct: Map<string, { storage: StorageBackend; key: string }>) => Promise<T>,
  ): Promise<T> {
    const opened = new Map<string, StorageBackend>();
    try {
      return await fn(await this.directSources(task, artifacts, ctx, opened));
    } finally {
      await Promise.allSettled([...opened.values()].map((o) => o.close()));
    }
  }

  private drillDeps(task: WireTask, direct?: DrillDeps['direct']): DrillDeps {
    return {
      direct,
      client: this.client,
      encryption: this.encryption,
      backupId: task.backupId,
      taskId: task.taskId,
      progress: (artifact) => this.progress(task, artifact),
    };
  }

  private async target(spec: WireServiceSpec): Promise<ServiceTarget> {
    return {
      name: spec.name,
      kind: spec.kind as ServiceTarget['kind'],
      connection: await resolveConnection(spec.connection),
      databases: spec.databases,
    };
  }

  private async backupService(
    task: WireTask,
    spec: WireServiceSpec,
    compression: string,
    ctx: TaskContext,
  ): Promise<WireArtifact[]> {
    const engine = engineFor(spec.kind as ServiceTarget['kind']);
    const service = await this.target(spec);
    const units = await engine.plan(service, ctx);
    ctx.log(`${units.length} artifact(s) to dump: ${units.map((u) => u.fileName).join(', ')}`);
    const out: WireArtifact[] = [];
    // One failed artifact stops its siblings, with the first error as the task's reason.
    const siblings = new AbortController();
    ctx = { ...ctx, signal: AbortSignal.any([ctx.signal, siblings.signal]) };
    const sinks = await this.openSinks(task, ctx);
    try {
      await allOrFirstError(
        units.map((unit) =>
          this.slots.use(async () => {
            ctx.signal.throwIfAborted();
            const name = `${spec.name}/${unit.fileName}${SUFFIX[compression as CompressionName]}`;
            const report = this.progress(task, name);
            // Drill stats: next to the dump, or (PostgreSQL) in the snapshot the dump is given. They
            // start while the compressor does; the dump tool starts once they have (PostgreSQL's
            // snapshot is exported, Redis's key counts read). startStats never rejects.
            const collecting = startStats(
              service,
              unit,
              {
                level: drillStatsLevel(task.backupService?.drillStats),
                quiesced: Boolean(task.backupService?.quiesced),
              },
              ctx,
            );
            const endStats = async (err: unknown): Promise<never> => {
              await (await collecting).finish();
              throw err;
            };
            const artifact = await compressAndUpload({
              client: this.client(),
              backupId: task.backupId,
              taskId: task.taskId,
              fencingToken: task.fencingToken ?? 0,
              artifact: {
                name,
                service: spec.name,
                kind: spec.kind,
                node: this.nodeId,
                database: unit.database,
                format: unit.format,
                compression,
                ...(unit.redis ? { redis: unit.redis } : {}),
              },
              source: { start: async (into) => engine.dump(service, (await collecting).unit, ctx, into) },
              compression: this.compression,
              encryption: this.encryption,
              signal: ctx.signal,
              onBytes: (n) => report(n),
              sinks,
            }).catch(endStats);
            const stats = await (await collecting).finish();
            if (stats) artifact.stats = stats;
            report(artifact.sizeBytes, true);
            this.metrics.bytesWritten.inc({ kind: spec.kind }, artifact.sizeBytes);
            const dumped = artifact.rawBytes ? `${artifact.rawBytes} bytes` : 'size not known (gzip)';
            ctx.log(`${name}: ${dumped} dumped, ${artifact.sizeBytes} stored`);
            out.push(artifact);
          }),
        ),
        () => siblings.abort(new TaskAbortedError('another artifact of this service failed')),
      );
    } finally {
      await sinks?.close();
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * A quiesce or resume hook. A quiesce arms the watchdog first (a controller
   * that vanishes during a slow quiesce still gets the site resumed); a resume
   * disarms it, and is skipped when the watchdog already resumed the site.
   * Resume commands ignore cancellation: a site is never left half-resumed.
   */
  private async hook(task: WireTask, ctx: EngineContext): Promise<void> {
    const h = task.hook!;
    const opts = {
      environment: h.environment,
      phase: h.phase,
      node: this.nodeId,
      log: (line: string) => ctx.log(line),
    };
    if (h.phase === 'quiesce') {
      this.watchdog.arm(h.environment, h.maxPauseMs, h.resumeCommands);
      await runHookCommands(h.commands, { ...opts, signal: ctx.signal });
      return;
    }
    if (h.phase === 'post_restore') {
      await runHookCommands(h.commands, { ...opts, signal: ctx.signal });
      return;
    }
    if (this.watchdog.disarm(h.environment)) {
      ctx.log('the watchdog already resumed the site (max_pause passed); resume hooks not run again');
      return;
    }
    await runHookCommands(h.commands, opts);
  }

  /**
   * db-dump: each database to `<dir>/dump-<db>-<unix seconds>.sql.gz` (plain
   * SQL, gzip format through pigz when installed), one after another as
   * ece-tools does. A failed dump's file is deleted.
   *
   * @returns the files written.
   */
  private async dbDump(task: WireTask, ctx: EngineContext): Promise<string[]> {
    const { service: spec, dumpDirectory } = task.dbDump!;
    const engine = engineFor(spec.kind as ServiceTarget['kind']);
    const service = await this.target(spec);
    const dir = dumpDirectory || join(this.workDir, 'dumps');
    await mkdir(dir, { recursive: true, mode: 0o750 });
    const units = (await engine.plan(service, ctx))
      .filter((u) => u.database !== '')
      .map((u) => ({ ...u, format: 'sql' as const }));
    const stamp = Math.floor(Date.now() / 1000);
    const files: string[] = [];
    for (const unit of units) {
      ctx.signal.throwIfAborted();
      const file = join(dir, `dump-${unit.database}-${stamp}.sql.gz`);
      ctx.log(`dumping database ${unit.database} to ${file}`);
      try {
        await this.slots.use(async () => {
          const gz = await startCompressor('gzip', this.compression, ctx.signal);
          let dump: DumpRun;
          try {
            dump = await engine.dump(service, unit, ctx, gz.child.stdin!);
          } catch (err) {
            gz.kill();
            throw err;
          }
          await allOrFirstError(
            [
              dump.wait(),
              gz.wait(),
              pipeline(gz.child.stdout!, createWriteStream(file, { flags: 'wx', mode: 0o640 })),
            ],
            () => {
              dump.kill();
              gz.kill();
            },
          );
        });
      } catch (err) {
        await rm(file, { force: true });
        ctx.log(`dump of ${unit.database} failed; ${file} deleted`);
        throw err;
      }
      const size = (await stat(file)).size;
      ctx.log(`${file}: ${size} bytes`);
      files.push(file);
    }
    return files;
  }

  private async backupMount(task: WireTask, ctx: TaskContext): Promise<WireArtifact> {
    const { mount, compression } = task.backupMount!;
    const st = await stat(mount.path).catch(() => undefined);
    if (!st?.isDirectory())
      throw new InvalidArgumentError(
        `mount ${mount.name}: ${mount.path} is not a directory on ${this.nodeId}`,
      );
    const sinks = await this.openSinks(task, ctx);
    try {
      return await this.slots.use(async () => {
        const name = `${mount.name}/files.tar${SUFFIX[compression as CompressionName]}`;
        const report = this.progress(task, name);
        const level = drillStatsLevel(task.backupMount?.drillStats);
        let archived: Promise<MountArchiveResult> | undefined;
        const artifact = await compressAndUpload({
          client: this.client(),
          backupId: task.backupId,
          taskId: task.taskId,
          artifact: {
            name,
            service: mount.name,
            kind: 'mount',
            node: this.nodeId,
            database: '',
            format: 'tar',
            compression,
          },
          source: {
            write: (into) => {
              const archive = writeMountArchive(mount.path, into, {
                exclude: mount.exclude,
                signal: ctx.signal,
                treeStats: level === 'checksums' ? 'hash' : level === 'counts' ? 'counts' : 'off',
              });
              archived = archive.done;
              return {
                ...archive,
                done: archive.done.then((d) => ctx.log(`${name}: ${d.entries} entries archived`)),
              };
            },
          },
          compression: this.compression,
          encryption: this.encryption,
          signal: ctx.signal,
          onBytes: (n) => report(n),
          sinks,
        });
        report(artifact.sizeBytes, true);
        this.metrics.bytesWritten.inc({ kind: 'mount' }, artifact.sizeBytes);
        // The tree digest describes exactly the bytes archived: basis snapshot.
        const tree = (await archived!).tree;
        return level !== 'off' && tree
          ? { ...artifact, stats: { basis: 'snapshot', level, tree } }
          : artifact;
      });
    } finally {
      await sinks?.close();
    }
  }

  private async restoreService(task: WireTask, ctx: TaskContext): Promise<void> {
    const { service: spec, artifacts } = task.restoreService!;
    const engine = engineFor(spec.kind as ServiceTarget['kind']);
    const service = await this.target(spec);
    // Globals (roles) first, then databases in manifest order.
    const ordered = restoreOrder(artifacts);
    // Every artifact's key is checked before the first one touches the service.
    for (const a of ordered) checkKeyFor(a, this.encryption);
    const opened = new Map<string, StorageBackend>();
    try {
      const direct = await this.directSources(task, ordered, ctx, opened);
      for (const a of ordered) {
        ctx.signal.throwIfAborted();
        const unit = unitOf(a);
        const report = this.progress(task, a.name);
        ctx.log(`${a.name}: restoring${unit.database ? ` database ${unit.database}` : ''}`);
        await this.slots.use(() =>
          downloadAndApply({
            client: this.client(),
            backupId: task.backupId,
            taskId: task.taskId,
            artifact: a,
            apply: (raw) => engine.restore(service, unit, raw, ctx),
            applyCompressed: engine.restoreCompressed
              ? (stream) =>
                  engine.restoreCompressed!(service, unit, { stream, compression: a.compression }, ctx)
              : undefined,
            encryption: this.encryption,
            signal: ctx.signal,
            onBytes: (n) => report(n),
            direct: direct.get(a.name),
          }),
        );
        report(Number(a.sizeBytes), true);
        this.metrics.bytesRead.inc({ kind: spec.kind }, Number(a.sizeBytes));
      }
    } finally {
      await Promise.allSettled([...opened.values()].map((o) => o.close()));
    }
  }

  private async restoreMount(task: WireTask, ctx: TaskContext): Promise<void> {
    const { mount, artifact } = task.restoreMount!;
    checkKeyFor(artifact, this.encryption);
    await mkdir(mount.path, { recursive: true });
    const report = this.progress(task, artifact.name);
    let entries = 0;
    const opened = new Map<string, StorageBackend>();
    const direct = await this.directSources(task, [artifact], ctx, opened);
    await this.slots
      .use(() =>
        downloadAndApply({
          client: this.client(),
          backupId: task.backupId,
          taskId: task.taskId,
          artifact,
          // tar reads the archive from the artifact's own decompressor: it never enters the agent.
          applyCompressed: async (stream) => {
            const input = { stream, compression: artifact.compression };
            entries = (await extractMountArchive(input, mount.path, { signal: ctx.signal })).entries;
          },
          encryption: this.encryption,
          signal: ctx.signal,
          onBytes: (n) => report(n),
          direct: direct.get(artifact.name),
        }),
      )
      .finally(() => Promise.allSettled([...opened.values()].map((o) => o.close())));
    report(Number(artifact.sizeBytes), true);
    this.metrics.bytesRead.inc({ kind: 'mount' }, Number(artifact.sizeBytes));
    ctx.log(`${artifact.name}: ${entries} entries restored into ${mount.path}`);
  }
}

/** The engine unit an artifact was made from. */
function unitOf(a: WireArtifact): DumpUnit {
  const file = a.name.slice(a.name.indexOf('/') + 1).replace(/\.(zst|gz)$/, '');
  const redis = redisSourceFromWire(a.redis);
  return {
    database: a.database,
    format: a.format as DumpUnit['format'],
    fileName: file,
    rawBytes: Number(a.rawBytes) || 0,
    ...(redis ? { redis } : {}),
  };
}
