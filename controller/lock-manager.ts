import { EventEmitter } from 'node:events';
import { LockHeldError, StaleFencingTokenError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Catalog, LockRecord } from './catalog.js';
import type { ControllerMetrics } from './metrics.js';

/** How often expired leases are looked for, ms. */
const SWEEP_MS = 250;

/** The key of a service's dump lock. */
export function lockKey(environment: string, service: string): string {
  return `${environment}/${service}`;
}

/**
 * The dump locks of database services: the cluster-wide replacement for the
 * reference platforms' `var/dbdump.lock` file, which only works on one host.
 *
 * A lock is a **lease** held by one node for one task, for `ttlMs`
 * milliseconds, renewed by the holder's heartbeats while the task runs
 * (`renew`). Each grant carries a **fencing token**: a number taken from the
 * catalog that only grows, across restarts. The controller accepts an
 * artifact only from the current holder with the current token (`checkFence`),
 * so a holder that froze or was cut off past its lease cannot write into a
 * backup (Kleppmann, "How to do distributed locking", 2016).
 *
 * Leases are stored in the catalog: after a controller restart, the ones still
 * live are honoured until they expire. A lease that ends without a release is
 * announced with the `lost` event (the job reassigns the dump).
 *
 * Events: `lost(lock, reason)`.
 */
export class LockManager extends EventEmitter<{ lost: [LockRecord, string] }> {
  private readonly leases = new Map<string, LockRecord>();
  /** Keys a running job will lease (between its start and its dump): nobody else may take them. */
  private readonly reservations = new Map<string, Reservation>();
  private chain: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly catalog: Catalog,
    readonly ttlMs: number,
    private readonly metrics: ControllerMetrics,
    private readonly logger: Logger,
  ) {
    super();
  }

  /** Loads the leases a previous controller process left; expired ones are dropped. Starts the sweeper. */
  async load(): Promise<void> {
    const now = Date.now();
    for (const l of await this.catalog.listLocks()) {
      if (Date.parse(l.expires) <= now) {
        await this.catalog.deleteLock(l.key);
        this.logger.info(
          { lock: l.key, holder: l.holder, token: l.token },
          'expired dump lock dropped at start-up',
        );
      } else {
        this.leases.set(l.key, l);
        this.logger.info(
          { lock: l.key, holder: l.holder, token: l.token, expires: l.expires },
          'dump lock still leased after a restart: honoured until it expires',
        );
      }
    }
    this.updateMetrics();
    this.timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.timer.unref();
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** The live lease of a key, if any. */
  holder(key: string): LockRecord | undefined {
    const l = this.leases.get(key);
    return l && Date.parse(l.expires) > Date.now() ? l : undefined;
  }

  /**
   * Reserves keys for one job, synchronously, so that a second backup or
   * db-dump of the same services is refused at once, before anything (such as
   * quiescing the site) happens. The job's own leases are granted later.
   *
   * @returns a handle whose `release()` drops the reservations (safe to call twice).
   * @throws LockHeldError naming the holder (a live lease, or another job's reservation).
   */
  reserveAll(
    entries: ReadonlyArray<{ key: string; node: string }>,
    owner: { activityId: string; purpose: LockRecord['purpose'] },
  ): { release(): void } {
    for (const { key } of entries) {
      const l = this.holder(key);
      if (l && l.activityId !== owner.activityId) throw heldError(l);
      const r = this.reservations.get(key);
      if (r && r.activityId !== owner.activityId) throw reservedError(key, r);
    }
    for (const { key, node } of entries) this.reservations.set(key, { ...owner, node });
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        for (const { key } of entries) {
          if (this.reservations.get(key)?.activityId === owner.activityId) this.reservations.delete(key);
        }
      },
    };
  }

  /**
   * Grants the lease of `key` to `holder` for one task.
   *
   * @throws LockHeldError when another live lease holds the key.
   */
  acquire(req: Omit<LockRecord, 'token' | 'expires'>): Promise<LockRecord> {
    return this.serial(async () => {
      const current = this.holder(req.key);
      if (current) throw heldError(current);
      const r = this.reservations.get(req.key);
      if (r && r.activityId !== req.activityId) throw reservedError(req.key, r);
      const token = await this.catalog.nextFencingToken();
      const lease: LockRecord = { ...req, token, expires: new Date(Date.now() + this.ttlMs).toISOString() };
      await this.catalog.putLock(lease);
      this.leases.set(req.key, lease);
      this.updateMetrics();
      this.logger.info(
        { lock: req.key, holder: req.holder, token, purpose: req.purpose, activity: req.activityId },
        'dump lock granted',
      );
      return lease;
    });
  }

  /** Extends the leases held by `nodeId` for the tasks it says still run (its heartbeat). */
  renew(nodeId: string, runningTaskIds: readonly string[]): void {
    if (runningTaskIds.length === 0) return;
    const running = new Set(runningTaskIds);
    const now = Date.now();
    for (const l of this.leases.values()) {
      if (l.holder !== nodeId || !running.has(l.taskId) || Date.parse(l.expires) <= now) continue;
      l.expires = new Date(now + this.ttlMs).toISOString();
      this.catalog
        .putLock(l)
        .catch((err: unknown) => this.logger.error({ err }, 'cannot record lease renewal'));
    }
    this.updateMetrics();
  }

  /**
   * Checks that an upload comes from the current holder of its lock with the
   * current token.
   *
   * @throws StaleFencingTokenError otherwise (the upload must be discarded).
   */
  checkFence(key: string, taskId: string, token: number): void {
    const l = this.holder(key);
    if (!l || l.taskId !== taskId || l.token !== token) {
      throw new StaleFencingTokenError(
        `upload with fencing token ${token} rejected: ${
          l
            ? `the dump lock of ${key} is held by ${l.holder} with token ${l.token}`
            : `no live lease on ${key}`
        }`,
        { hint: 'the lease of this dump was lost (node frozen or cut off) and the dump was reassigned' },
      );
    }
  }

  /** Whether `token` is still the live lease of `key` (for uploads in flight). */
  isCurrent(key: string, token: number): boolean {
    return this.holder(key)?.token === token;
  }

  /** Ends a lease (the task finished). A lease already replaced or gone is left alone. */
  release(key: string, token: number): Promise<void> {
    return this.serial(async () => {
      const l = this.leases.get(key);
      if (!l || l.token !== token) return;
      this.leases.delete(key);
      await this.catalog.deleteLock(key);
      this.updateMetrics();
      this.logger.info({ lock: key, holder: l.holder, token }, 'dump lock released');
    });
  }

  /** Resolves once the lease with `token` is gone (released or expired). */
  async waitGone(key: string, token: number, signal?: AbortSignal): Promise<void> {
    while (this.leases.get(key)?.token === token) {
      signal?.throwIfAborted();
      await new Promise((r) => setTimeout(r, SWEEP_MS));
    }
  }

  /** Every live lease, by key. */
  list(): LockRecord[] {
    const now = Date.now();
    return [...this.leases.values()]
      .filter((l) => Date.parse(l.expires) > now)
      .sort((a, b) => a.key.localeCompare(b.key));
  }

  private sweep(): void {
    const now = Date.now();
    for (const l of [...this.leases.values()]) {
      if (Date.parse(l.expires) > now) continue;
      this.leases.delete(l.key);
      this.catalog.deleteLock(l.key).catch(() => undefined);
      const reason = `the lease of ${l.holder} on ${l.key} (fencing token ${l.token}) expired: no heartbeat for ${this.ttlMs / 1000} s`;
      this.logger.warn({ lock: l.key, holder: l.holder, token: l.token }, 'dump lock lease expired');
      this.metrics.leaseExpirations.inc();
      this.updateMetrics();
      this.emit('lost', l, reason);
    }
  }

  private updateMetrics(): void {
    const live = this.list();
    this.metrics.locksHeld.set(live.length);
    this.metrics.leaseExpiry.reset();
    for (const l of live) {
      this.metrics.leaseExpiry.set(
        { environment: l.environment, service: l.service, node: l.holder },
        Date.parse(l.expires) / 1000,
      );
    }
  }

  /** Stops the sweeper. Safe to call twice. */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** A job's claim on a lock between its start and its lease. */
interface Reservation {
  activityId: string;
  purpose: LockRecord['purpose'];
  /** The node the job chose to dump on. */
  node: string;
}

function reservedError(key: string, r: Reservation): LockHeldError {
  return new LockHeldError(
    `the dump lock of ${key} is held for ${r.node} by a running ${r.purpose} (activity ${r.activityId})`,
    { hint: 'a dump already runs in this group; wait for it to finish (envsnap activity:log shows it)' },
  );
}

function heldError(l: LockRecord): LockHeldError {
  return new LockHeldError(
    `the dump lock of ${l.key} is held by ${l.holder} (${l.purpose}, activity ${l.activityId}, fencing token ${l.token}) until ${l.expires}`,
    { hint: 'a dump already runs in this group; wait for it to finish (envsnap lock:list shows the holder)' },
  );
}
