import { hostname } from 'node:os';
import { closeHttpServer, runShutdownSteps, type ShutdownStep } from '../shared/shutdown.js';
import type { Server as HttpServer } from 'node:http';
import { mkdir } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { changedOptions, formatAddress, loadAgentConfig, type AgentConfig } from '../shared/config.js';
import { errorMessage } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { startMetricsServer } from '../shared/metrics-server.js';
import { SystemdNotifier, lifecycleNotice } from '../shared/systemd-notify.js';
import { CHANNEL_OPTIONS, VERSION, controllerService } from '../shared/proto.js';
import type { WireAgentMessage, WireControllerMessage } from '../shared/wire.js';
import { AgentMetrics } from './metrics.js';
import { loadEncryptionKey, type EncryptionKey } from './encryption.js';
import { TaskRunner } from './task-runner.js';

/** Lifecycle states, logged on every change. */
export type AgentState = 'STARTING' | 'CONNECTING' | 'RUNNING' | 'DRAINING' | 'STOPPED';

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 10_000;

/**
 * The envsnap agent: one per node. It connects to the controller (never the
 * other way round, so a node behind NAT or a firewall works), says `hello`
 * with its node id, and keeps one long-lived stream on which it receives
 * tasks and reports progress, logs and results. When the stream breaks it
 * reconnects with exponential backoff (250 ms doubling to 10 s, with jitter);
 * task results produced while disconnected are sent after reconnecting.
 */
export class Agent {
  state: AgentState = 'STARTING';
  readonly logger: Logger;
  readonly metrics = new AgentMetrics();
  private client: grpc.Client | undefined;
  private call: grpc.ClientDuplexStream<WireAgentMessage, WireControllerMessage> | undefined;
  private runner: TaskRunner | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** Self-fencing: fires when the controller stayed away as long as a running task's lease. */
  private fenceTimer: NodeJS.Timeout | undefined;
  private backoffMs = BACKOFF_MIN_MS;
  private readonly outbox: WireAgentMessage[] = [];
  private metricsServer: HttpServer | undefined;
  private stopping: Promise<void> | undefined;
  /**
   * sd_notify when run as a systemd `Type=notify` unit: READY=1 once it starts trying to reach the
   * controller (not once connected: a controller outage must not fail the agent's start), then the
   * connection state as STATUS (README "systemd").
   */
  private systemd: SystemdNotifier | undefined;
  metricsPort = 0;

  constructor(
    readonly config: AgentConfig,
    logger?: Logger,
  ) {
    this.logger = logger ?? createLogger('agent').child({ node: config.nodeId });
  }

  private setState(state: AgentState): void {
    if (this.state === state) return;
    this.state = state;
    this.logger.info({ state }, `agent ${state}`);
    this.systemd?.notify(lifecycleNotice(state, `controller ${formatAddress(this.config.controller)}`));
  }

  async start(): Promise<void> {
    this.systemd = SystemdNotifier.fromEnv(this.logger);
    await mkdir(this.config.workDir, { recursive: true, mode: 0o700 });
    const Client = controllerService();
    this.client = new Client(
      formatAddress(this.config.controller),
      grpc.credentials.createInsecure(),
      CHANNEL_OPTIONS,
    );
    this.runner = new TaskRunner(
      this.config.nodeId,
      this.config.workDir,
      this.config.concurrency,
      { zstdLevel: this.config.zstdLevel, zstdThreads: this.config.zstdThreads },
      () => this.client!,
      {
        progress: (p) => this.send({ msg: 'progress', progress: p }, false),
        log: (taskId, level, message) => this.send({ msg: 'log', log: { taskId, level, message } }, false),
        result: (taskId, ok, error, artifacts, files, drilled) =>
          this.send(
            {
              msg: 'result',
              result: { taskId, ok, error, artifacts, files: files ?? [], drilled: drilled ?? [] },
            },
            true,
          ),
      },
      this.metrics,
      this.logger,
      this.config.encryptionKeyFile ? await loadEncryptionKey(this.config.encryptionKeyFile) : undefined,
      this.config.storage,
      this.config.directLocalStorage,
    );
    if (this.config.metricsListen) {
      this.metricsServer = await startMetricsServer(this.metrics.registry, this.config.metricsListen);
      const addr = this.metricsServer.address();
      this.metricsPort = typeof addr === 'object' && addr ? addr.port : 0;
    }
    this.connect();
  }

  /** Sends a message on the session; `keep` queues it for after a reconnect when there is none. */
  private send(msg: WireAgentMessage, keep: boolean): void {
    if (this.call && this.state === 'RUNNING') {
      this.call.write(msg);
    } else if (keep) {
      this.outbox.push(msg);
    }
  }

  private connect(): void {
    if (this.state === 'DRAINING' || this.state === 'STOPPED') return;
    this.setState('CONNECTING');
    const fn = (
      this.client as unknown as Record<
        string,
        () => grpc.ClientDuplexStream<WireAgentMessage, WireControllerMessage>
      >
    ).Connect!.bind(this.client);
    const call = fn();
    this.call = call;
    call.write({
      msg: 'hello',
      hello: {
        nodeId: this.config.nodeId,
        version: VERSION,
        hostname: hostname(),
        runningTaskIds: this.runner!.runningIds(),
        // downloadAndApply ends the stream a restore or drill reads only after its SHA-256 matched.
        checksArtifactStream: true,
      },
    });
    call.on('data', (msg: WireControllerMessage) => this.onMessage(call, msg));
    let ended = false;
    const onEnd = (why: string) => {
      if (ended) return;
      ended = true;
      if (this.call === call) this.call = undefined;
      clearInterval(this.heartbeat);
      this.metrics.connected.set(0);
      if (this.state === 'DRAINING' || this.state === 'STOPPED') return;
      const delay = Math.round(this.backoffMs * (0.5 + Math.random() / 2));
      this.logger.warn({ reason: why, retryInMs: delay }, 'controller connection lost');
      this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
      this.setState('CONNECTING');
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
      const leaseMs = this.runner!.shortestLeaseMs();
      if (leaseMs !== undefined && !this.fenceTimer) {
        // The controller cannot renew our dump locks now; once a lease has
        // surely expired there, another node may dump: stop ours.
        this.fenceTimer = setTimeout(() => {
          this.fenceTimer = undefined;
          this.logger.warn(
            { leaseMs },
            'controller unreachable for a whole lease: aborting dumps under a dump lock',
          );
          this.runner!.cancelLeased(
            'the controller was unreachable for a whole lease; the dump lock is lost',
          );
        }, leaseMs);
      }
    };
    call.on('error', (err) => onEnd(err.message));
    call.on('end', () => onEnd('stream ended by the controller'));
  }

  private onMessage(
    call: grpc.ClientDuplexStream<WireAgentMessage, WireControllerMessage>,
    msg: WireControllerMessage,
  ): void {
    if (msg.msg === 'welcome' && 'welcome' in msg) {
      this.backoffMs = BACKOFF_MIN_MS;
      clearTimeout(this.fenceTimer);
      this.fenceTimer = undefined;
      this.setState('RUNNING');
      this.metrics.connected.set(1);
      this.logger.info(
        {
          controller: formatAddress(this.config.controller),
          controllerVersion: msg.welcome.controllerVersion,
        },
        'connected',
      );
      clearInterval(this.heartbeat);
      this.heartbeat = setInterval(
        () =>
          call.write({
            msg: 'heartbeat',
            heartbeat: { runningTasks: this.runner!.size, runningTaskIds: this.runner!.runningIds() },
          }),
        msg.welcome.heartbeatIntervalMs || 5000,
      );
      for (const m of this.outbox.splice(0)) call.write(m);
    } else if (msg.msg === 'task' && 'task' in msg) {
      this.logger.info(
        { task: msg.task.taskId, backup: msg.task.backupId, work: msg.task.work },
        'task received',
      );
      this.runner!.start(msg.task);
    } else if (msg.msg === 'cancel' && 'cancel' in msg) {
      this.logger.warn(
        { task: msg.cancel.taskId, reason: msg.cancel.reason },
        'task cancelled by the controller',
      );
      this.runner!.cancel(msg.cancel.taskId, msg.cancel.reason);
    }
  }

  /**
   * Reloads the configuration file (SIGHUP, `systemctl reload`) without
   * dropping tasks: concurrency, zstd settings and the encryption key apply to
   * tasks that start from now on. node_id, controller, work_dir and
   * metrics_listen need a restart: if one changed, or the file is invalid, the
   * reload is refused as a whole and the reason logged.
   *
   * @returns true when the new configuration is in effect.
   */
  async reload(): Promise<boolean> {
    let next: AgentConfig;
    let key: EncryptionKey | undefined;
    try {
      next = await loadAgentConfig(this.config.file);
      key = next.encryptionKeyFile ? await loadEncryptionKey(next.encryptionKeyFile) : undefined;
    } catch (err) {
      this.logger.error(
        { err: errorMessage(err) },
        'reload refused: the configuration is invalid; the running one stays',
      );
      return false;
    }
    const cur = this.config;
    const changed = changedOptions([
      ['agent.node_id', cur.nodeId, next.nodeId],
      ['agent.controller', cur.controller, next.controller],
      ['agent.work_dir', cur.workDir, next.workDir],
      ['agent.metrics_listen', cur.metricsListen, next.metricsListen],
    ]);
    if (changed.length > 0) {
      this.logger.error(
        { changed },
        `reload refused: ${changed.join(', ')} changed, which needs a restart (systemctl restart envsnap-agent)`,
      );
      return false;
    }
    this.runner?.reconfigure({
      concurrency: next.concurrency,
      compression: { zstdLevel: next.zstdLevel, zstdThreads: next.zstdThreads },
      encryption: key,
      storage: next.storage,
      directLocalStorage: next.directLocalStorage,
    });
    this.logger.info({ concurrency: next.concurrency, encrypted: Boolean(key) }, 'configuration reloaded');
    return true;
  }

  /**
   * Stops: running tasks are aborted (tools killed, partial files removed, the
   * controller told), the session closed. Safe to call twice; every step runs.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.setState('DRAINING');
    const steps: ShutdownStep[] = [
      ['cancel reconnect', () => clearTimeout(this.reconnectTimer)],
      ['abort tasks', () => this.runner?.abortAll('the agent is shutting down')],
      ['resume quiesced sites', () => this.runner?.watchdog.close()],
      ['cancel self-fencing', () => clearTimeout(this.fenceTimer)],
      ['stop heartbeat', () => clearInterval(this.heartbeat)],
      [
        'flush results',
        () => {
          for (const m of this.outbox.splice(0)) this.call?.write(m);
        },
      ],
      ['close session', () => this.call?.end()],
      ['close client', () => this.client?.close()],
      ['stop metrics server', () => closeHttpServer(this.metricsServer)],
    ];
    await runShutdownSteps(steps, this.logger);
    this.setState('STOPPED');
    // main() exits the process next: let the queued STOPPING=1 and STATUS reach systemd first
    // (each systemd-notify run is bounded, see shared/systemd-notify.ts).
    await this.systemd?.flush();
  }
}
