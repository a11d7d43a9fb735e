import type { Server as HttpServer } from 'node:http';
import { closeHttpServer, runShutdownSteps, type ShutdownStep } from '../shared/shutdown.js';
import { mkdir } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import {
  changedOptions,
  formatAddress,
  loadControllerConfig,
  type ControllerConfig,
} from '../shared/config.js';
import { errorMessage } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { startMetricsServer } from '../shared/metrics-server.js';
import { CHANNEL_OPTIONS, controllerService } from '../shared/proto.js';
import { SystemdNotifier, lifecycleNotice } from '../shared/systemd-notify.js';
import { ActivityHub } from './activity-hub.js';
import { AgentRegistry } from './agent-registry.js';
import { Catalog } from './catalog.js';
import { controllerInfo } from './node-assignments.js';
import { createControllerHandlers } from './grpc-service.js';
import { JobManager } from './jobs.js';
import { LockManager } from './lock-manager.js';
import { ControllerMetrics } from './metrics.js';
import { RetentionManager } from './retention-manager.js';
import { Replicator } from './replicator.js';
import { Scheduler } from './scheduler.js';
import { StorageSet } from './storage-set.js';
import { Verifier } from './verifier.js';

/** Lifecycle states, logged on every change. */
export type ControllerState = 'STARTING' | 'RUNNING' | 'DRAINING' | 'STOPPED';

/**
 * The envsnap controller: gRPC server, catalog, agents' sessions, jobs and metrics.
 *
 * `start()` opens the catalog, recovers jobs a previous process left running,
 * and binds the gRPC and metrics listeners. `stop()` drains: no new jobs, the
 * running ones finish or are aborted after `shutdown_timeout` (their partial
 * artifacts removed), then agents are disconnected and LevelDB closed. `stop()`
 * is safe to call twice and runs every step even if one fails.
 */
export class Controller {
  state: ControllerState = 'STARTING';
  readonly logger: Logger;
  readonly metrics = new ControllerMetrics();
  private server: grpc.Server | undefined;
  private metricsServer: HttpServer | undefined;
  private catalog: Catalog | undefined;
  private agents: AgentRegistry | undefined;
  private jobs: JobManager | undefined;
  private scheduler: Scheduler | undefined;
  private verifier: Verifier | undefined;
  private locks: LockManager | undefined;
  private storages: StorageSet | undefined;
  private replicator: Replicator | undefined;
  private stopping: Promise<void> | undefined;
  /** sd_notify readiness and status when run as a systemd `Type=notify` unit (README "systemd"). */
  private systemd: SystemdNotifier | undefined;
  /** The bound gRPC port (useful with port 0). */
  port = 0;
  /** The bound metrics port, 0 when metrics are off. */
  metricsPort = 0;

  constructor(
    readonly config: ControllerConfig,
    logger?: Logger,
  ) {
    this.logger = logger ?? createLogger('controller');
  }

  private setState(state: ControllerState): void {
    this.state = state;
    this.logger.info({ state }, `controller ${state}`);
    this.systemd?.notify(
      lifecycleNotice(state, `gRPC ${formatAddress({ ...this.config.listen, port: this.port })}`),
    );
  }

  async start(): Promise<void> {
    const cfg = this.config;
    this.systemd = SystemdNotifier.fromEnv(this.logger);
    await mkdir(cfg.stateDir, { recursive: true, mode: 0o700 });
    this.catalog = await Catalog.open(cfg.stateDir);
    const storages = await StorageSet.open(cfg.storage, cfg.environments);
    this.storages = storages;
    const hub = new ActivityHub(this.catalog, this.logger);
    this.agents = new AgentRegistry(this.catalog, this.logger, cfg.heartbeatIntervalMs);
    await this.agents.load();
    const setConnected = () => this.metrics.agentsConnected.set(this.agents!.connectedCount);
    this.agents.on('connected', setConnected);
    this.agents.on('disconnected', setConnected);
    const locks = new LockManager(this.catalog, cfg.leaseTtlMs, this.metrics, this.logger);
    this.locks = locks;
    await locks.load();
    this.agents.on('heartbeat', (node, taskIds) => locks.renew(node, taskIds));
    const retention = new RetentionManager(
      cfg.environments,
      this.catalog,
      storages,
      this.metrics,
      this.logger,
    );
    retention.setLocationRetention(cfg.storage);
    this.jobs = new JobManager(
      cfg.environments,
      cfg.defaultCompression,
      this.catalog,
      this.agents,
      hub,
      storages,
      this.metrics,
      this.logger,
      retention,
      locks,
      cfg.dumpAttempts,
    );
    await this.jobs.recover();
    this.verifier = new Verifier(
      this.catalog,
      storages.all(),
      cfg.environments.map((e) => e.name),
      this.metrics,
      this.logger,
      cfg.verifySchedule,
    );
    await this.verifier.load();
    retention.setVerificationGate(this.verifier);
    this.scheduler = new Scheduler(
      cfg.environments,
      cfg.pruneSchedule,
      this.jobs,
      retention,
      this.catalog,
      this.metrics,
      this.logger,
    );

    this.server = new grpc.Server(CHANNEL_OPTIONS);
    this.server.addService(
      controllerService().service,
      createControllerHandlers({
        catalog: this.catalog,
        jobs: this.jobs,
        retention,
        scheduler: this.scheduler,
        verifier: this.verifier,
        locks,
        agents: this.agents,
        hub,
        metrics: this.metrics,
        logger: this.logger,
        info: (nodeId) => controllerInfo(cfg.environments, cfg.defaultCompression, nodeId),
      }),
    );
    this.port = await new Promise<number>((resolve, reject) => {
      this.server!.bindAsync(
        formatAddress(cfg.listen),
        grpc.ServerCredentials.createInsecure(),
        (err, port) =>
          err
            ? reject(
                new Error(`cannot listen on ${formatAddress(cfg.listen)}: ${err.message}`, { cause: err }),
              )
            : resolve(port),
      );
    });
    if (cfg.metricsListen) {
      this.metricsServer = await startMetricsServer(this.metrics.registry, cfg.metricsListen);
      const addr = this.metricsServer.address();
      this.metricsPort = typeof addr === 'object' && addr ? addr.port : 0;
    }
    this.logger.info(
      {
        listen: `${cfg.listen.host}:${this.port}`,
        metricsPort: this.metricsPort,
        storage: storages.all().map((b) => b.name),
      },
      'listening',
    );
    // Schedules start last: a catch-up run needs the agents, which connect
    // once the gRPC server listens (a run that finds none fails and says so).
    await this.scheduler.start();
    this.replicator = new Replicator(
      this.catalog,
      storages,
      this.metrics,
      this.logger,
      cfg.replicaRetryIntervalMs,
    );
    this.replicator.start();
    await this.verifier.start();
    this.setState('RUNNING');
  }

  /**
   * Reloads the configuration file (SIGHUP, `systemctl reload`) without
   * dropping jobs: environments (services, mounts, hooks, schedules,
   * retention) are replaced for new jobs, and the schedules restart. Running
   * jobs keep the configuration they started with. Options that need a new
   * process (listen addresses, state_dir, storage, timeouts) make the reload
   * refuse as a whole, as does an invalid file; the running configuration
   * stays and the reason is logged.
   *
   * @returns true when the new configuration is in effect.
   */
  async reload(): Promise<boolean> {
    if (this.state !== 'RUNNING') return false;
    let next: ControllerConfig;
    try {
      next = await loadControllerConfig(this.config.file);
    } catch (err) {
      this.logger.error(
        { err: errorMessage(err) },
        'reload refused: the configuration is invalid; the running one stays',
      );
      return false;
    }
    const cur = this.config;
    const restartOnly: Array<[string, unknown, unknown]> = [
      ['controller.listen', cur.listen, next.listen],
      ['controller.metrics_listen', cur.metricsListen, next.metricsListen],
      ['controller.state_dir', cur.stateDir, next.stateDir],
      ['storage', cur.storage, next.storage],
      ['controller.lease_ttl', cur.leaseTtlMs, next.leaseTtlMs],
      ['controller.heartbeat_interval', cur.heartbeatIntervalMs, next.heartbeatIntervalMs],
      ['controller.prune_schedule', cur.pruneSchedule, next.pruneSchedule],
      ['controller.verify_schedule', cur.verifySchedule, next.verifySchedule],
    ];
    const changed = changedOptions(restartOnly);
    if (changed.length > 0) {
      this.logger.error(
        { changed },
        `reload refused: ${changed.join(', ')} changed, which needs a restart (systemctl restart envsnap-controller); the running configuration stays`,
      );
      return false;
    }
    // Every component holds this same array: replace its content in place.
    cur.environments.splice(0, cur.environments.length, ...next.environments);
    this.storages?.setEnvironments(cur.environments);
    await this.scheduler?.stop();
    await this.scheduler?.start();
    this.logger.info({ environments: cur.environments.length }, 'configuration reloaded');
    return true;
  }

  /** Drains and stops. Safe to call twice; every step runs even if one fails. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.setState('DRAINING');
    const steps: ShutdownStep[] = [
      ['stop schedules', () => this.scheduler?.stop()],
      ['stop replication retries', () => this.replicator?.stop()],
      ['stop verification', () => this.verifier?.stop()],
      ['drain jobs', () => this.jobs?.drain(this.config.shutdownTimeoutMs)],
      ['disconnect agents', () => this.agents?.closeAll()],
      ['stop lease sweeper', () => this.locks?.close()],
      [
        'stop gRPC server',
        () =>
          new Promise<void>((resolve) => {
            if (!this.server) return resolve();
            const t = setTimeout(() => {
              this.server!.forceShutdown();
              resolve();
            }, 2000);
            this.server.tryShutdown(() => {
              clearTimeout(t);
              resolve();
            });
          }),
      ],
      ['stop metrics server', () => closeHttpServer(this.metricsServer)],
      ['close catalog', () => this.catalog?.close()],
      ['close storage', () => this.storages?.close()],
    ];
    await runShutdownSteps(steps, this.logger);
    this.setState('STOPPED');
    // main() exits the process next: let the queued STOPPING=1 and STATUS reach systemd first
    // (each systemd-notify run is bounded, see shared/systemd-notify.ts).
    await this.systemd?.flush();
  }
}
