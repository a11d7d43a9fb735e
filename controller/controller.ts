import type { Server as HttpServer } from 'node:http';
import { mkdir } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { formatAddress, type ControllerConfig } from '../shared/config.js';
import { errorMessage } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { startMetricsServer } from '../shared/metrics-server.js';
import { CHANNEL_OPTIONS, controllerService } from '../shared/proto.js';
import { LocalBackend } from '../shared/storage/local-backend.js';
import { ActivityHub } from './activity-hub.js';
import { AgentRegistry } from './agent-registry.js';
import { Catalog } from './catalog.js';
import { createControllerHandlers } from './grpc-service.js';
import { JobManager } from './jobs.js';
import { ControllerMetrics } from './metrics.js';
import { RetentionManager } from './retention-manager.js';
import { Scheduler } from './scheduler.js';

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
  private stopping: Promise<void> | undefined;
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
  }

  async start(): Promise<void> {
    const cfg = this.config;
    await mkdir(cfg.stateDir, { recursive: true, mode: 0o700 });
    this.catalog = await Catalog.open(cfg.stateDir);
    const primary = cfg.storage[0]!;
    const storage = await LocalBackend.open(primary.name, primary.path);
    const hub = new ActivityHub(this.catalog, this.logger);
    this.agents = new AgentRegistry(this.catalog, this.logger, cfg.heartbeatIntervalMs);
    await this.agents.load();
    const setConnected = () => this.metrics.agentsConnected.set(this.agents!.connectedCount);
    this.agents.on('connected', setConnected);
    this.agents.on('disconnected', setConnected);
    const retention = new RetentionManager(
      cfg.environments,
      this.catalog,
      storage,
      this.metrics,
      this.logger,
    );
    this.jobs = new JobManager(
      cfg.environments,
      cfg.defaultCompression,
      this.catalog,
      this.agents,
      hub,
      storage,
      this.metrics,
      this.logger,
      retention,
    );
    await this.jobs.recover();
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
        agents: this.agents,
        hub,
        metrics: this.metrics,
        logger: this.logger,
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
      { listen: `${cfg.listen.host}:${this.port}`, metricsPort: this.metricsPort, storage: primary.path },
      'listening',
    );
    // Schedules start last: a catch-up run needs the agents, which connect
    // once the gRPC server listens (a run that finds none fails and says so).
    await this.scheduler.start();
    this.setState('RUNNING');
  }

  /** Drains and stops. Safe to call twice; every step runs even if one fails. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.setState('DRAINING');
    const steps: Array<[string, () => Promise<void> | void]> = [
      ['stop schedules', () => this.scheduler?.stop()],
      ['drain jobs', () => this.jobs?.drain(this.config.shutdownTimeoutMs)],
      ['disconnect agents', () => this.agents?.closeAll()],
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
      [
        'stop metrics server',
        () =>
          new Promise<void>((resolve) =>
            this.metricsServer ? this.metricsServer.close(() => resolve()) : resolve(),
          ),
      ],
      ['close catalog', () => this.catalog?.close()],
    ];
    for (const [name, step] of steps) {
      try {
        await step();
      } catch (err) {
        this.logger.error({ step: name, err: errorMessage(err) }, 'shutdown step failed');
      }
    }
    this.setState('STOPPED');
  }
}
