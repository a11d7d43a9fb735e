import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import type * as grpc from '@grpc/grpc-js';
import { ArtifactCorruptError, InvalidArgumentError, errorMessage } from '../shared/errors.js';
import { toServiceError } from '../shared/grpc-errors.js';
import { checkId } from '../shared/ids.js';
import type { Logger } from '../shared/logger.js';
import type {
  BackupStatus,
  WireActivity,
  WireActivityEvent,
  WireAgentMessage,
  WireBackup,
  WireBackupPage,
  WireBackupVerification,
  WireControllerMessage,
  WireUploadMessage,
  WireArtifact,
  WireDirectCopy,
} from '../shared/wire.js';
import type { ActivityEvent, ActivityHub } from './activity-hub.js';
import type { AgentRegistry } from './agent-registry.js';
import { copyLocations } from './backup-copies.js';
import type { ActivityRecord, BackupRecord, Catalog } from './catalog.js';
import { toWire, type JobManager } from './jobs.js';
import type { ControllerMetrics } from './metrics.js';
import type { RetentionManager } from './retention-manager.js';
import type { Scheduler } from './scheduler.js';
import type { BackupVerification, Verifier } from './verifier.js';
import type { LockManager } from './lock-manager.js';
import type { WireControllerInfo } from '../shared/wire.js';

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

/** Wraps an async unary handler: its result or error goes to the callback. */
function unary<Req, Res>(fn: (req: Req) => Promise<Res>): Unary<Req, Res> {
  return (call, cb) => {
    fn(call.request).then(
      (res) => cb(null, res),
      (err: unknown) => cb(toServiceError(err)),
    );
  };
}

const STATUS: Record<BackupRecord['status'], BackupStatus> = {
  pending: 'PENDING',
  in_progress: 'IN_PROGRESS',
  complete: 'COMPLETE',
  failed: 'FAILED',
  expiring: 'EXPIRING',
};

function wireBackup(b: BackupRecord, isRestorable: (b: BackupRecord) => boolean): WireBackup {
  return {
    id: b.id,
    environment: b.environment,
    created: b.created,
    status: STATUS[b.status],
    restorable: isRestorable(b),
    sizeBytes: b.sizeBytes,
    live: b.live,
    finished: b.finished ?? '',
    error: b.error ?? '',
    artifacts: b.artifacts.map(toWire),
    activityId: b.activityId,
    tag: b.tag,
    consistency: b.consistency,
    storage: b.storage,
    replicas: Object.entries(b.replicas ?? {}).map(([location, r]) => ({
      location,
      status: r.status,
      error: r.error ?? '',
      attempts: r.attempts,
      nextAttempt: r.nextAttempt ?? '',
    })),
    copies: copyLocations(b),
    pruned: Object.entries(b.pruned ?? {}).map(([location, p]) => ({ location, ...p })),
  };
}

/** `backup:list`'s page when the request names no limit. */
export const DEFAULT_LIST_LIMIT = 50;
/**
 * The most backups one ListBackups response holds, whatever its limit: a reply is built whole in
 * memory (10,000 backups in one reply took the controller from 158 MB to 721 MB), so longer lists
 * are pages followed with `next_before`.
 */
export const MAX_LIST_PAGE = 1000;

function wireVerification(v: BackupVerification, restorable: boolean): WireBackupVerification {
  return {
    backupId: v.backupId,
    environment: v.environment,
    created: v.created,
    time: v.time,
    result: v.result,
    restorable,
    locations: v.locations.map((l) => ({
      location: l.location,
      result: l.result,
      time: l.time,
      detail: l.detail,
      objects: l.objects,
      conclusiveResult: l.conclusive?.result ?? '',
      conclusiveTime: l.conclusive?.time ?? '',
    })),
  };
}

function wireActivity(a: ActivityRecord): WireActivity {
  return {
    id: a.id,
    type: a.type,
    environment: a.environment,
    state: a.state,
    created: a.created,
    finished: a.finished ?? '',
    backupId: a.backupId,
    error: a.error ?? '',
    description: a.description,
  };
}

function wireEvent(e: ActivityEvent): WireActivityEvent {
  switch (e.type) {
    case 'log':
      return { event: 'log', log: e.line };
    case 'progress':
      return {
        event: 'progress',
        progress: {
          taskId: e.taskId,
          artifact: e.artifact,
          bytes: e.bytes,
          totalBytes: e.totalBytes,
          done: e.done,
        },
      };
    case 'finished':
      return { event: 'finished', finished: wireActivity(e.activity) };
  }
}

/**
 * The handlers of the `envsnap.v1.Controller` gRPC service.
 */
export function createControllerHandlers(deps: {
  catalog: Catalog;
  jobs: JobManager;
  retention: RetentionManager;
  scheduler: Scheduler;
  verifier: Verifier;
  locks: LockManager;
  agents: AgentRegistry;
  hub: ActivityHub;
  metrics: ControllerMetrics;
  logger: Logger;
  /** `GetInfo`: version, clock and the services and mounts of a node (doctor). */
  info: (nodeId: string) => WireControllerInfo;
}): grpc.UntypedServiceImplementation {
  const { catalog, jobs, retention, scheduler, locks, agents, hub, metrics, logger } = deps;
  const restorable = (b: BackupRecord) => retention.isRestorable(b);
  const { verifier } = deps;
  const withVerification = (b: BackupRecord): WireBackup => {
    const v = verifier.lastVerification(b);
    return { ...wireBackup(b, restorable), verification: v ? wireVerification(v, restorable(b)) : null };
  };
  /** Restorable after a verification: re-read, the backup may have changed meanwhile. */
  const verified = async (v: BackupVerification) =>
    wireVerification(v, await catalog.getBackup(v.backupId).then(restorable, () => false));

  return {
    CreateBackup: unary(
      async (req: { environment: string; live: boolean; compression: string; replaceOldest: boolean }) => {
        const { activityId, backupId } = await jobs.createBackup(req.environment, {
          live: req.live,
          compression: req.compression,
          replaceOldest: req.replaceOldest,
        });
        return { activityId, backupId };
      },
    ),
    RestoreBackup: unary(async (req: { backupId: string; targetEnvironment: string }) =>
      jobs.restoreBackup(checkId(req.backupId, 'backup'), req.targetEnvironment || undefined),
    ),
    ListBackups: unary(
      async (req: {
        environment: string;
        limit: number;
        before: string;
        all: boolean;
      }): Promise<WireBackupPage> => {
        const limit = Math.min(req.all ? Infinity : req.limit || DEFAULT_LIST_LIMIT, MAX_LIST_PAGE);
        const page = await catalog.listBackupsPage({
          limit,
          ...(req.environment ? { environment: req.environment } : {}),
          ...(req.before ? { before: checkId(req.before, 'backup') } : {}),
        });
        return {
          backups: page.backups.map(withVerification),
          more: page.more,
          nextBefore: page.more > 0 ? (page.backups[page.backups.length - 1]?.id ?? '') : '',
        };
      },
    ),
    GetBackup: unary(async (req: { backupId: string }) => {
      const b = await catalog.getBackup(checkId(req.backupId, 'backup'));
      // DrillRecord's fields are already the wire's (camelCase).
      return { ...withVerification(b), drill: (await catalog.getDrill(b.id)) ?? null };
    }),
    DeleteBackup: unary(async (req: { backupId: string }) =>
      wireBackup(await retention.delete(checkId(req.backupId, 'backup')), () => false),
    ),
    PruneBackups: unary(async (req: { environment: string; dryRun: boolean }) => ({
      decisions: await retention.prune(req.environment || undefined, req.dryRun),
      dryRun: req.dryRun,
    })),
    ListSchedules: unary(async (req: { environment: string }) => ({
      schedules: await scheduler.list(req.environment || undefined),
    })),
    ListLocks: unary(() =>
      Promise.resolve({
        locks: locks.list().map((l) => ({
          key: l.key,
          environment: l.environment,
          service: l.service,
          holder: l.holder,
          fencingToken: l.token,
          expires: l.expires,
          activityId: l.activityId,
          purpose: l.purpose,
          taskId: l.taskId,
        })),
      }),
    ),
    DbDump: unary(
      async (req: { environment: string; databases: string[]; dumpDirectory: string; live: boolean }) =>
        jobs.dbDump({
          environment: req.environment || undefined,
          databases: req.databases,
          dumpDirectory: req.dumpDirectory,
          live: req.live,
        }),
    ),
    VerifyBackup: unary(async (req: { backupId: string; location: string }) =>
      verified(
        await verifier.verifyBackup(checkId(req.backupId, 'backup'), {
          ...(req.location ? { location: req.location } : {}),
        }),
      ),
    ),
    VerifyBackups: unary(async (req: { environment: string; location: string }) => {
      const all = await verifier.verifyAll({
        ...(req.environment ? { environment: req.environment } : {}),
        ...(req.location ? { location: req.location } : {}),
      });
      return { verifications: await Promise.all(all.map(verified)) };
    }),
    DrillBackup: unary(async (req: { backupId: string; environment: string; latest: boolean }) => {
      if (Boolean(req.backupId) === req.latest) {
        throw new InvalidArgumentError('name one backup ID or latest', {
          hint: 'envsnap backup:drill ID, or envsnap backup:drill --latest -e ENV',
        });
      }
      if (req.latest && !req.environment) {
        throw new InvalidArgumentError('--latest needs an environment', { hint: 'pass -e ENV' });
      }
      return jobs.drillBackup({
        ...(req.backupId ? { backupId: checkId(req.backupId, 'backup') } : { latest: true }),
        ...(req.environment ? { environment: req.environment } : {}),
        source: 'drill',
      });
    }),
    // RepositoryReport's fields are already the wire's (camelCase).
    CheckRepository: unary((req: { repair: boolean }) => verifier.checkRepository(req.repair)),
    ListActivities: unary(async (req: { environment: string; limit: number }) => ({
      activities: (await catalog.listActivities(req.environment || undefined, req.limit || 50)).map(
        wireActivity,
      ),
    })),
    GetActivity: unary(async (req: { activityId: string }) =>
      wireActivity(await catalog.getActivity(checkId(req.activityId, 'activity'))),
    ),
    ListAgents: unary(() => Promise.resolve({ agents: agents.list() })),

    WatchActivity: (call: grpc.ServerWritableStream<{ activityId: string }, WireActivityEvent>) => {
      const run = async () => {
        const id = checkId(call.request.activityId, 'activity');
        const activity = await catalog.getActivity(id);
        const watch = hub.watch(id, (e) => {
          call.write(wireEvent(e));
          if (e.type === 'finished') call.end();
        });
        if (watch) {
          call.on('cancelled', () => watch.unsubscribe());
          for (const line of watch.replay) call.write({ event: 'log', log: line });
          return;
        }
        for (const line of await catalog.readLog(id)) call.write({ event: 'log', log: line });
        call.write({ event: 'finished', finished: wireActivity(await catalog.getActivity(activity.id)) });
        call.end();
      };
      run().catch((err: unknown) => call.emit('error', toServiceError(err)));
    },

    Connect: (call: grpc.ServerDuplexStream<WireAgentMessage, WireControllerMessage>) => {
      agents.handleConnect(call);
    },

    UploadArtifact: (
      call: grpc.ServerReadableStream<WireUploadMessage, unknown>,
      cb: grpc.sendUnaryData<unknown>,
    ) => {
      let trailer: Extract<WireUploadMessage, { trailer: unknown }>['trailer'] | undefined;
      let started = false;
      const data = new PassThrough({ highWaterMark: 4 * 1024 * 1024 });
      // Errors reach the agent through cb; before storage.put reads `data` (a refused header),
      // destroying it with an error must not be an unhandled 'error' event that ends the process.
      data.on('error', () => {});
      const fail = (err: unknown) => {
        data.destroy(err instanceof Error ? err : new Error(String(err)));
      };
      call.on('data', (msg: WireUploadMessage) => {
        try {
          if (!started) {
            if (msg.msg !== 'header' || !('header' in msg))
              throw new InvalidArgumentError('upload must start with a header');
            started = true;
            const h = msg.header;
            const name = h.artifact.name ?? '';
            const target = jobs.uploadTarget(
              h.backupId,
              h.taskId,
              name,
              Number(h.fencingToken ?? 0),
              h.locations ?? [],
            );
            const key = target.key;
            const storage = target.storage;
            storage
              .put(key, data, { signal: target.signal })
              .then(async (result) => {
                if (!trailer) throw new InvalidArgumentError(`upload of ${name} ended without a trailer`);
                if (trailer.sha256 !== result.sha256 || Number(trailer.sizeBytes) !== result.sizeBytes) {
                  await storage.delete(key);
                  throw new ArtifactCorruptError(
                    `upload of ${name}: controller stored ${result.sizeBytes} bytes sha256 ${result.sha256}, agent sent ${trailer.sizeBytes} bytes sha256 ${trailer.sha256}`,
                  );
                }
                if (!target.record(result)) {
                  await storage.delete(key);
                  throw new InvalidArgumentError(
                    `backup ${h.backupId} is no longer running; upload of ${name} discarded`,
                  );
                }
                // Artifact bytes the controller itself wrote, per location (direct copies count at CommitArtifact).
                metrics.storagePutBytes.inc({ location: storage.primary.name }, result.sizeBytes);
                for (const [loc, r] of Object.entries(result.replicas)) {
                  if (r.ok) metrics.storagePutBytes.inc({ location: loc }, r.result.sizeBytes);
                }
                cb(null, { sizeBytes: result.sizeBytes, sha256: result.sha256 });
              })
              .catch((caught: unknown) => {
                // An aborted put says only "the operation was aborted": the signal's reason says
                // why (e.g. the task's fencing token is stale), which the agent should be told.
                const err: unknown = target.signal.aborted ? (target.signal.reason as unknown) : caught;
                logger.warn(
                  { backup: h.backupId, artifact: name, err: errorMessage(err) },
                  'artifact upload failed',
                );
                cb(toServiceError(err));
              });
            return;
          }
          if (msg.msg === 'data' && 'data' in msg) {
            metrics.uploadReceivedBytes.inc(msg.data.length);
            if (!data.write(msg.data)) {
              call.pause();
              data.once('drain', () => call.resume());
            }
          } else if (msg.msg === 'trailer' && 'trailer' in msg) {
            trailer = msg.trailer;
            data.end();
          }
        } catch (err) {
          fail(err);
          cb(toServiceError(err));
          call.destroy();
        }
      });
      call.on('end', () => {
        if (!trailer) fail(new Error('upload stream ended before its trailer'));
      });
      call.on('error', fail);
      call.on('cancelled', () => fail(new Error('upload cancelled by the agent')));
    },

    DownloadArtifact: (
      call: grpc.ServerWritableStream<
        { backupId: string; artifact: string; taskId: string },
        { data: Buffer }
      >,
    ) => {
      const run = async () => {
        const { backupId, artifact, taskId } = call.request;
        const src = jobs.downloadSource(checkId(backupId, 'backup'), taskId, artifact);
        const stream = await src.storage.get(src.key);
        let cancelled = false;
        call.on('cancelled', () => {
          cancelled = true;
          stream.destroy();
        });
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          if (cancelled || src.signal.aborted) break;
          metrics.bytesRead.inc({ environment: src.environment }, chunk.length);
          if (!call.write({ data: chunk })) await once(call, 'drain');
        }
        stream.destroy();
        if (src.signal.aborted) throw src.signal.reason;
        call.end();
      };
      run().catch((err: unknown) => call.emit('error', toServiceError(err)));
    },

    CommitArtifact: unary(
      (req: {
        backupId: string;
        taskId: string;
        artifact: WireArtifact;
        fencingToken: number;
        copies: WireDirectCopy[];
      }) =>
        jobs.commitArtifact({ ...req, backupId: checkId(req.backupId, 'backup') }).catch((err: unknown) => {
          logger.warn(
            { backup: req.backupId, artifact: req.artifact?.name, err: errorMessage(err) },
            'artifact commit refused',
          );
          throw err;
        }),
    ),

    GetInfo: unary((req: { nodeId: string }) => Promise.resolve(deps.info(req.nodeId))),
  };
}
