import { hostname } from 'node:os';
import type { Server as HttpServer } from 'node:http';
import { mkdir } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { formatAddress, type AgentConfig } from '../shared/config.js';
import { errorMessage } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { startMetricsServer } from '../shared/metrics-server.js';
import { CHANNEL_OPTIONS, VERSION, controllerService } from '../shared/proto.js';
import type { WireAgentMessage, WireControllerMessage } from '../shared/wire.js';
import { AgentMetrics } from './metrics.js';
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
  private backoffMs = BACKOFF_MIN_MS;
  private readonly outbox: WireAgentMessage[] = [];
  private metricsServer: HttpServer | undefined;
  private stopping: Promise<void> | undefined;
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
  }

  async start(): Promise<void> {
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
        result: (taskId, ok, error, artifacts) =>
          this.send({ msg: 'result', result: { taskId, ok, error, artifacts } }, true),
      },
      this.metrics,
      this.logger,
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
        () => call.write({ msg: 'heartbeat', heartbeat: { runningTasks: this.runner!.size } }),
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
   * Stops: running tasks are aborted (tools killed, partial files removed, the
   * controller told), the session closed. Safe to call twice; every step runs.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.setState('DRAINING');
    const steps: Array<[string, () => Promise<void> | void]> = [
      ['cancel reconnect', () => clearTimeout(this.reconnectTimer)],
      ['abort tasks', () => this.runner?.abortAll('the agent is shutting down')],
      ['stop heartbeat', () => clearInterval(this.heartbeat)],
      [
        'flush results',
        () => {
          for (const m of this.outbox.splice(0)) this.call?.write(m);
        },
      ],
      ['close session', () => this.call?.end()],
      ['close client', () => this.client?.close()],
      [
        'stop metrics server',
        () =>
          new Promise<void>((resolve) =>
            this.metricsServer ? this.metricsServer.close(() => resolve()) : resolve(),
          ),
      ],
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
