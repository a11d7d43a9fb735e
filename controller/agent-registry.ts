import { EventEmitter } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import { AgentUnavailableError, TaskAbortedError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { VERSION } from '../shared/proto.js';
import type {
  WireDrilledArtifact,
  WireAgentMessage,
  WireArtifact,
  WireControllerMessage,
  WireProgress,
  WireTask,
} from '../shared/wire.js';
import type { Catalog } from './catalog.js';

/** How many cancelled tasks' reasons the registry keeps for agents that report them late. */
export const CANCELLED_REASONS_KEPT = 1000;

/** What an agent reported when a task ended successfully. */
export interface TaskOutcome {
  artifacts: WireArtifact[];
  /** db-dump: the files written on the node. */
  files?: string[];
  /** Restore drills: one per artifact. */
  drilled?: WireDrilledArtifact[];
}

/** Callbacks for what an agent reports while a task runs. */
export interface TaskHooks {
  onProgress?(p: WireProgress): void;
  onLog?(level: 'info' | 'warn' | 'error', message: string): void;
}

interface PendingTask {
  task: WireTask;
  hooks: TaskHooks;
  resolve(outcome: TaskOutcome): void;
  reject(err: Error): void;
}

type AgentCall = grpc.ServerDuplexStream<WireAgentMessage, WireControllerMessage>;

/** One connected agent: its stream and the tasks it runs. */
class AgentSession {
  readonly tasks = new Map<string, PendingTask>();
  lastSeen = Date.now();
  closed = false;
  constructor(
    readonly nodeId: string,
    readonly version: string,
    readonly hostname: string,
    /** The agent declared `Hello.checks_artifact_stream` (see AgentRegistry.checksArtifactStream). */
    readonly checksArtifactStream: boolean,
    readonly call: AgentCall,
  ) {}

  send(msg: WireControllerMessage): void {
    if (!this.closed) this.call.write(msg);
  }
}

export interface AgentStatus {
  nodeId: string;
  connected: boolean;
  lastSeen: string;
  version: string;
  hostname: string;
  runningTasks: number;
}

/**
 * The agents connected to this controller, and the tasks handed to them.
 *
 * Agents connect to the controller (never the other way), send `hello` with
 * their node id, then heartbeats. A session ends when the stream ends or
 * errors, or when no message came for three heartbeat intervals; its tasks
 * then fail with AgentUnavailableError. A node that reconnects replaces its
 * old session, and tasks it reports as still running move to the new one.
 *
 * A task the agent reports as running (in `hello` after a reconnect) that no
 * job of this controller waits for any more is cancelled on the agent, so that
 * no dump of a failed or reassigned job goes on.
 *
 * Events: `connected(nodeId)`, `disconnected(nodeId)`, `heartbeat(nodeId,
 * runningTaskIds)` (the lock manager renews leases on it).
 */
export class AgentRegistry extends EventEmitter<{
  connected: [string];
  disconnected: [string];
  heartbeat: [string, string[]];
}> {
  private readonly sessions = new Map<string, AgentSession>();
  private readonly known = new Map<string, AgentStatus>();
  /** Why recently cancelled tasks were cancelled, by task id, oldest first. */
  private readonly cancelled = new Map<string, string>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly catalog: Catalog,
    private readonly logger: Logger,
    private readonly heartbeatIntervalMs: number,
  ) {
    super();
    this.timer = setInterval(() => this.reapSilent(), heartbeatIntervalMs);
    this.timer.unref();
  }

  /** Loads the agents seen before a restart (shown as disconnected until they reconnect). */
  async load(): Promise<void> {
    for (const a of await this.catalog.listAgents()) {
      this.known.set(a.nodeId, { ...a, connected: false, runningTasks: 0 });
    }
  }

  /** The `Connect` RPC handler. */
  handleConnect(call: AgentCall): void {
    let session: AgentSession | undefined;
    call.on('data', (msg: WireAgentMessage) => {
      if (!session) {
        if (msg.msg !== 'hello' || !('hello' in msg)) {
          call.destroy(new Error('first message must be hello'));
          return;
        }
        session = this.open(call, msg.hello);
        return;
      }
      session.lastSeen = Date.now();
      this.onMessage(session, msg);
    });
    const end = (why: string) => {
      if (session) this.close(session, why);
    };
    call.on('end', () => {
      end('stream ended');
      call.end();
    });
    call.on('error', (err) => end(err.message));
    call.on('cancelled', () => end('stream cancelled'));
  }

  private open(call: AgentCall, hello: Extract<WireAgentMessage, { hello: unknown }>['hello']): AgentSession {
    const session = new AgentSession(
      hello.nodeId,
      hello.version,
      hello.hostname,
      hello.checksArtifactStream === true,
      call,
    );
    const previous = this.sessions.get(hello.nodeId);
    if (previous) {
      // The agent reconnected before we noticed the old stream was gone: keep
      // the tasks it says still run, fail the others.
      const still = new Set(hello.runningTaskIds);
      for (const [id, t] of previous.tasks) {
        if (still.has(id)) session.tasks.set(id, t);
      }
      for (const id of session.tasks.keys()) previous.tasks.delete(id);
      this.close(previous, 'replaced by a new connection');
    }
    for (const id of hello.runningTaskIds) {
      if (session.tasks.has(id)) continue;
      session.send({
        msg: 'cancel',
        cancel: {
          taskId: id,
          reason:
            this.cancelled.get(id) ??
            'the controller no longer runs this task (restarted, or the job moved on)',
        },
      });
      this.logger.warn({ node: hello.nodeId, task: id }, 'orphaned task on a reconnecting agent cancelled');
    }
    this.sessions.set(hello.nodeId, session);
    const status: AgentStatus = {
      nodeId: hello.nodeId,
      connected: true,
      lastSeen: new Date().toISOString(),
      version: hello.version,
      hostname: hello.hostname,
      runningTasks: session.tasks.size,
    };
    this.known.set(hello.nodeId, status);
    this.catalog
      .putAgent({
        nodeId: status.nodeId,
        lastSeen: status.lastSeen,
        version: status.version,
        hostname: status.hostname,
      })
      .catch((err: unknown) => this.logger.error({ err }, 'cannot record agent'));
    session.send({
      msg: 'welcome',
      welcome: { controllerVersion: VERSION, heartbeatIntervalMs: this.heartbeatIntervalMs },
    });
    this.logger.info({ node: hello.nodeId, version: hello.version }, 'agent connected');
    if (!session.checksArtifactStream) {
      this.logger.warn(
        { node: hello.nodeId, version: hello.version },
        'agent does not declare that it checks artifacts as it restores them: the controller reads every artifact of its restores and drills first (upgrade the agent to the controller release)',
      );
    }
    this.emit('connected', hello.nodeId);
    return session;
  }

  private onMessage(session: AgentSession, msg: WireAgentMessage): void {
    switch (msg.msg) {
      case 'heartbeat':
        this.emit('heartbeat', session.nodeId, msg.heartbeat.runningTaskIds ?? []);
        return;
      case 'progress': {
        const p = msg.progress;
        session.tasks.get(p.taskId)?.hooks.onProgress?.(p);
        return;
      }
      case 'log': {
        const l = msg.log;
        const level = l.level === 'warn' || l.level === 'error' ? l.level : 'info';
        session.tasks.get(l.taskId)?.hooks.onLog?.(level, l.message);
        return;
      }
      case 'result': {
        const r = msg.result;
        const t = session.tasks.get(r.taskId);
        if (!t) return;
        session.tasks.delete(r.taskId);
        if (r.ok) t.resolve({ artifacts: r.artifacts, files: r.files ?? [], drilled: r.drilled ?? [] });
        else t.reject(new Error(r.error || 'task failed'));
        return;
      }
      default:
        this.logger.warn({ node: session.nodeId }, 'unexpected message from agent');
    }
  }

  private close(session: AgentSession, why: string): void {
    if (session.closed) return;
    session.closed = true;
    if (this.sessions.get(session.nodeId) === session) {
      this.sessions.delete(session.nodeId);
      const k = this.known.get(session.nodeId);
      if (k) {
        k.connected = false;
        k.lastSeen = new Date(session.lastSeen).toISOString();
        this.catalog
          .putAgent({ nodeId: k.nodeId, lastSeen: k.lastSeen, version: k.version, hostname: k.hostname })
          .catch(() => undefined);
      }
      this.logger.warn({ node: session.nodeId, reason: why }, 'agent disconnected');
      this.emit('disconnected', session.nodeId);
    }
    for (const t of session.tasks.values()) {
      t.reject(new AgentUnavailableError(`agent ${session.nodeId} disconnected during the task (${why})`));
    }
    session.tasks.clear();
    try {
      session.call.end();
    } catch {
      // the stream is already gone
    }
  }

  private reapSilent(): void {
    const limit = Date.now() - 3 * this.heartbeatIntervalMs;
    for (const s of this.sessions.values()) {
      if (s.lastSeen < limit) this.close(s, 'no heartbeat for three intervals');
    }
  }

  /** True when the node's agent has a live session. */
  isConnected(nodeId: string): boolean {
    return this.sessions.has(nodeId);
  }

  /**
   * True when the node's agent is connected and declared in its `hello` that the stream a restore
   * or drill reads ends only after the artifact matched its size and SHA-256 (proto
   * `Hello.checks_artifact_stream`, agent/artifact-pipelines.ts `keepOutput`). An older agent
   * may apply input before its check, so the controller reads the artifact first for it.
   */
  checksArtifactStream(nodeId: string): boolean {
    return this.sessions.get(nodeId)?.checksArtifactStream ?? false;
  }

  /** Number of connected agents. */
  get connectedCount(): number {
    return this.sessions.size;
  }

  /**
   * Sends a task to a node's agent and resolves with its outcome.
   *
   * @throws AgentUnavailableError when the agent is not connected or disconnects before the result.
   * @throws Error with the agent's message when the task failed there.
   */
  runTask(nodeId: string, task: WireTask, hooks: TaskHooks): Promise<TaskOutcome> {
    const session = this.sessions.get(nodeId);
    if (!session) {
      return Promise.reject(new AgentUnavailableError(`no agent connected for node ${nodeId}`));
    }
    return new Promise<TaskOutcome>((resolve, reject) => {
      session.tasks.set(task.taskId, { task, hooks, resolve, reject });
      session.send({ msg: 'task', task });
    });
  }

  /**
   * Asks the agent running a task to abort it; the task's promise rejects with TaskAbortedError.
   * The reason is also kept (the last {@link CANCELLED_REASONS_KEPT} tasks), so that an agent that
   * was unreachable meanwhile (frozen, cut off) and reports the task when it reconnects is told
   * this reason rather than a generic one.
   */
  cancelTask(taskId: string, reason: string): void {
    this.cancelled.delete(taskId);
    this.cancelled.set(taskId, reason);
    for (const oldest of this.cancelled.keys()) {
      if (this.cancelled.size <= CANCELLED_REASONS_KEPT) break;
      this.cancelled.delete(oldest);
    }
    for (const s of this.sessions.values()) {
      const t = s.tasks.get(taskId);
      if (!t) continue;
      s.send({ msg: 'cancel', cancel: { taskId, reason } });
      s.tasks.delete(taskId);
      t.reject(new TaskAbortedError(reason));
    }
  }

  /** Every agent seen, connected or not. */
  list(): AgentStatus[] {
    return [...this.known.values()]
      .map((k) => {
        const s = this.sessions.get(k.nodeId);
        return s
          ? {
              ...k,
              connected: true,
              lastSeen: new Date(s.lastSeen).toISOString(),
              runningTasks: s.tasks.size,
            }
          : { ...k, connected: false, runningTasks: 0 };
      })
      .sort((a, b) => a.nodeId.localeCompare(b.nodeId));
  }

  /** Ends every session (shutdown). Safe to call twice. */
  closeAll(): void {
    clearInterval(this.timer);
    for (const s of [...this.sessions.values()]) this.close(s, 'controller shutting down');
  }
}
