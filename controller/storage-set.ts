import { PassThrough, Writable, type Readable } from 'node:stream';
import type { EnvironmentConfig, StorageConfig } from '../shared/config.js';
import { InvalidArgumentError, NotFoundError, errorMessage } from '../shared/errors.js';
import type { PutResult, StorageBackend } from '../shared/storage/backend.js';
import { ensureLocationMarker } from '../shared/storage/local-reachability.js';
import { openStorage, storageTarget } from '../shared/storage/locations.js';
import type { WireStorageTarget } from '../shared/wire.js';

/** What one replica made of a teed `put`. */
export type ReplicaOutcome = { ok: true; result: PutResult } | { ok: false; error: string };

/** A `put` to every location of an environment: the primary's result, and each replica's. */
export interface ReplicatedPutResult extends PutResult {
  replicas: Record<string, ReplicaOutcome>;
}

/**
 * The storage locations of one environment: a primary and any number of
 * replicas, behind the StorageBackend interface (a wrapper, in the manner of
 * restic's backends).
 *
 * `put` writes every location **in one pass**: the source is read once and
 * teed into each location's upload, with backpressure, so the slowest location
 * sets the pace and memory stays bounded (one chunk per location in flight).
 * The primary must succeed; a replica that fails is dropped from the tee (the
 * others go on) and reported in the result, to be retried later from the
 * primary copy. `get`, `stat` and `list` read the primary; `delete` and
 * `deletePrefix` act on every location.
 */
export class ReplicatedStorage implements StorageBackend {
  constructor(
    readonly primary: StorageBackend,
    readonly replicas: readonly StorageBackend[],
  ) {}

  get name(): string {
    return this.primary.name;
  }

  /** Every location, primary first. */
  get locations(): StorageBackend[] {
    return [this.primary, ...this.replicas];
  }

  async put(key: string, data: Readable, opts: { signal?: AbortSignal } = {}): Promise<ReplicatedPutResult> {
    if (this.replicas.length === 0) return { ...(await this.primary.put(key, data, opts)), replicas: {} };
    const branches = this.locations.map((backend) => {
      const pass = new PassThrough({ highWaterMark: 1024 * 1024 });
      const state = { backend, pass, failed: false };
      const done = backend.put(key, pass, opts).catch((err: unknown) => {
        state.failed = true;
        pass.destroy();
        throw err;
      });
      done.catch(() => undefined);
      return {
        ...state,
        done,
        get live() {
          return !state.failed;
        },
      };
    });
    const tee = new Writable({
      highWaterMark: 1024 * 1024,
      write(chunk: Buffer, _enc, cb) {
        const waits: Array<Promise<void>> = [];
        for (const b of branches) {
          if (!b.live || b.pass.destroyed) continue;
          if (!b.pass.write(chunk)) {
            waits.push(
              new Promise<void>((resolve) => {
                const onDone = () => {
                  b.pass.off('drain', onDone);
                  b.pass.off('close', onDone);
                  resolve();
                };
                b.pass.on('drain', onDone);
                b.pass.on('close', onDone);
              }),
            );
          }
        }
        if (waits.length === 0) cb();
        else void Promise.all(waits).then(() => cb());
      },
      final(cb) {
        for (const b of branches) if (!b.pass.destroyed) b.pass.end();
        cb();
      },
      destroy(err, cb) {
        // Called without an error too, by autoDestroy once `final` ended the branches: their buffered
        // bytes are still to be read by backends that start reading late (a local put first creates
        // its temporary directory), so only a failure destroys them.
        if (err) for (const b of branches) b.pass.destroy(err);
        cb(err);
      },
    });
    data.on('error', (err) => tee.destroy(err));
    data.pipe(tee);
    const [primary, ...rest] = branches;
    let primaryResult: PutResult;
    try {
      primaryResult = await primary!.done;
    } catch (err) {
      tee.destroy(err instanceof Error ? err : new Error(String(err)));
      await Promise.allSettled(rest.map((r) => r.done));
      throw err;
    }
    const replicas: Record<string, ReplicaOutcome> = {};
    for (const r of rest) {
      try {
        const result = await r.done;
        replicas[r.backend.name] =
          result.sha256 === primaryResult.sha256 && result.sizeBytes === primaryResult.sizeBytes
            ? { ok: true, result }
            : {
                ok: false,
                error: `stored ${result.sizeBytes} bytes sha256 ${result.sha256}, not the primary's`,
              };
      } catch (err) {
        replicas[r.backend.name] = { ok: false, error: errorMessage(err) };
      }
    }
    return { ...primaryResult, replicas };
  }

  get(key: string): Promise<Readable> {
    return this.primary.get(key);
  }

  stat(key: string): Promise<{ sizeBytes: number } | undefined> {
    return this.primary.stat(key);
  }

  list(prefix: string): Promise<string[]> {
    return this.primary.list(prefix);
  }

  async delete(key: string): Promise<void> {
    await Promise.all(this.locations.map((l) => l.delete(key)));
  }

  async deletePrefix(prefix: string): Promise<void> {
    const results = await Promise.allSettled(this.locations.map((l) => l.deletePrefix(prefix)));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** The backends are owned by the StorageSet. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Every configured storage location, opened once, and each environment's
 * ReplicatedStorage: its `storage:` names (default: every location), the
 * first being the primary.
 */
export class StorageSet {
  /** Each location's config, by name. */
  private readonly configs = new Map<string, StorageConfig>();
  /** Each local location's marker id (`.envsnap-location`), by name: what agents prove they share. */
  private readonly markers = new Map<string, string>();

  private constructor(
    private readonly backends: Map<string, StorageBackend>,
    private readonly byEnv: Map<string, ReplicatedStorage>,
    readonly defaultStorage: ReplicatedStorage,
  ) {}

  static async open(configs: StorageConfig[], environments: EnvironmentConfig[]): Promise<StorageSet> {
    const backends = new Map<string, StorageBackend>();
    const markers = new Map<string, string>();
    try {
      for (const c of configs) {
        backends.set(c.name, await openStorage(c));
        if (c.type === 'local') markers.set(c.name, await ensureLocationMarker(c.path));
      }
    } catch (err) {
      await Promise.allSettled([...backends.values()].map((b) => b.close()));
      throw err;
    }
    const all = configs.map((c) => backends.get(c.name)!);
    const set = new StorageSet(backends, new Map(), new ReplicatedStorage(all[0]!, all.slice(1)));
    for (const c of configs) set.configs.set(c.name, c);
    for (const [name, id] of markers) set.markers.set(name, id);
    set.setEnvironments(environments);
    return set;
  }

  /** Maps each environment to its locations (again, after a configuration reload). */
  setEnvironments(environments: readonly EnvironmentConfig[]): void {
    const names = [...this.backends.keys()];
    this.byEnv.clear();
    for (const env of environments) {
      const use = env.storage?.length ? env.storage : names;
      this.byEnv.set(
        env.name,
        new ReplicatedStorage(
          this.backend(use[0]!),
          use.slice(1).map((n) => this.backend(n)),
        ),
      );
    }
  }

  /** The locations of an environment (the default set for one not configured any more). */
  forEnvironment(name: string): ReplicatedStorage {
    return this.byEnv.get(name) ?? this.defaultStorage;
  }

  /**
   * Whether agents always write a location straight (s3) rather than through
   * the controller's UploadArtifact. Local directories live on the
   * controller: an agent writes one straight only when it proves it shares
   * it (see `isLocal`), else through UploadArtifact.
   */
  isDirect(name: string): boolean {
    return this.configs.get(name)?.type === 's3';
  }

  /** Whether a location is a directory of the controller's (written by the controller, or by an agent that shares it). */
  isLocal(name: string): boolean {
    return this.configs.get(name)?.type === 'local';
  }

  /**
   * Whether agents may write some location of the environment straight:
   * an s3 one, or a local one an agent proves it shares. Then every task is
   * told the locations, and dumps under a dump lock are stored under their
   * attempt's key (a stale holder's bytes cannot be refused).
   */
  hasDirect(envName: string): boolean {
    return this.forEnvironment(envName).locations.some((l) => this.isDirect(l.name) || this.isLocal(l.name));
  }

  /** The environment's locations as a task describes them to an agent, primary first (no credentials). */
  targets(envName: string): WireStorageTarget[] {
    return this.forEnvironment(envName).locations.map((l, i) =>
      storageTarget(this.configs.get(l.name)!, i === 0, this.markers.get(l.name)),
    );
  }

  /**
   * The environment's controller-side locations, as one tee for the
   * UploadArtifact handler: its local locations, or those of them the agent
   * names (`only`: the ones it does not write itself), the environment's
   * primary first when it is one of them; undefined when there is none.
   *
   * @throws InvalidArgumentError when `only` names a location that is not a local one of the environment.
   */
  controllerSide(envName: string, only: readonly string[] = []): ReplicatedStorage | undefined {
    let side = this.forEnvironment(envName).locations.filter((l) => this.isLocal(l.name));
    if (only.length > 0) {
      const unknown = only.find((n) => !side.some((l) => l.name === n));
      if (unknown !== undefined) {
        throw new InvalidArgumentError(`storage "${unknown}" is not a local location of ${envName}`);
      }
      side = side.filter((l) => only.includes(l.name));
    }
    return side.length ? new ReplicatedStorage(side[0]!, side.slice(1)) : undefined;
  }

  /** A location as a task describes it to an agent (restores and drills read it straight when they can). */
  target(name: string): WireStorageTarget {
    const cfg = this.configs.get(name);
    if (!cfg) throw new NotFoundError(`storage "${name}" is not configured`);
    return storageTarget(cfg, false, this.markers.get(name));
  }

  /**
   * A location by name.
   *
   * @throws NotFoundError for an unknown name.
   */
  backend(name: string): StorageBackend {
    const b = this.backends.get(name);
    if (!b) throw new NotFoundError(`storage "${name}" is not configured`);
    return b;
  }

  /** Every location. */
  all(): StorageBackend[] {
    return [...this.backends.values()];
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.all().map((b) => b.close()));
  }
}
