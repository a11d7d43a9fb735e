/**
 * systemd readiness for `Type=notify` units, through the `systemd-notify` tool.
 *
 * The protocol (sd_notify(3)): newline-separated `KEY=VALUE` datagrams (`READY=1`, `STATUS=...`,
 * `STOPPING=1`) sent to the AF_UNIX socket named by `$NOTIFY_SOCKET`. Node cannot send on a Unix
 * datagram socket without a native addon, so the message is sent by the `systemd-notify` tool
 * (Debian package `systemd`, always present where systemd runs the unit). The unit needs
 * `NotifyAccess=all`, because the sender is a child of the main process, not the main process.
 *
 * Without `--no-block`, systemd-notify (systemd 246 and later) waits on a barrier until the service
 * manager has processed the message. That closes the race systemd-notify(1) warns about: an
 * auxiliary process that sends and exits at once may not be attributed to the unit, even with
 * `NotifyAccess=all`. Each call therefore takes a few milliseconds; calls run one after another in
 * the background, and never delay or fail the caller.
 *
 * `$NOTIFY_SOCKET` is read once and removed from the process environment, as sd_notify's
 * `unset_environment` does, so that the tools envsnap starts (dump tools, a temporary
 * redis-server) cannot send notifications as the unit. When the variable is unset (not run by
 * systemd, or `Type=exec`), every call does nothing: no process is started.
 */
import { spawn } from 'node:child_process';
import { errorMessage } from './errors.js';
import type { Logger } from './logger.js';

/** What one notification says; at least one field should be set. */
export interface SystemdNotice {
  /** `READY=1`: start-up is complete (sent more than once is harmless: systemd ignores repeats). */
  ready?: boolean;
  /** `STOPPING=1`: the service is shutting down. */
  stopping?: boolean;
  /** `STATUS=...`: one line shown by `systemctl status` (newlines are replaced by spaces). */
  status?: string;
}

/** Longest a systemd-notify run may take before it is killed, milliseconds (its barrier waits 5 s). */
const NOTIFY_TIMEOUT_MS = 10_000;

/** Sends sd_notify messages when run by systemd; does nothing otherwise (see the file comment). */
export class SystemdNotifier {
  private queue: Promise<void> = Promise.resolve();

  private constructor(
    /** The socket from `$NOTIFY_SOCKET`, or undefined when not run as a `Type=notify` unit. */
    readonly socket: string | undefined,
    private readonly logger: Logger | undefined,
    private readonly command: string,
  ) {}

  /**
   * Takes `NOTIFY_SOCKET` out of `env` (default: `process.env`) and returns a notifier for it.
   * Call it once, before starting child processes. `command` is the tool to run (tests).
   */
  static fromEnv(
    logger?: Logger,
    env: NodeJS.ProcessEnv = process.env,
    command = 'systemd-notify',
  ): SystemdNotifier {
    const socket = env.NOTIFY_SOCKET || undefined;
    delete env.NOTIFY_SOCKET;
    return new SystemdNotifier(socket, logger, command);
  }

  /** True when notifications go somewhere. */
  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /**
   * Queues one notification. Never throws; a failure (tool missing, no listener) is logged as a
   * warning, because a `Type=notify` unit that never hears READY=1 fails its start by timeout.
   */
  notify(notice: SystemdNotice): void {
    if (!this.socket) return;
    const args: string[] = [];
    if (notice.ready) args.push('--ready');
    if (notice.status !== undefined) args.push(`--status=${notice.status.replace(/[\r\n]+/g, ' ')}`);
    if (notice.stopping) args.push('STOPPING=1');
    if (args.length === 0) return;
    const socket = this.socket;
    this.queue = this.queue.then(() =>
      run(this.command, args, socket).catch((err: unknown) =>
        this.logger?.warn({ err: errorMessage(err), args }, 'systemd notification failed'),
      ),
    );
  }

  /** Resolves when every queued notification has been sent (or has failed). */
  flush(): Promise<void> {
    return this.queue;
  }
}

/**
 * The notice for a lifecycle state change of the controller or agent: `READY=1` from the first
 * state in which the process does its work (controller RUNNING; agent CONNECTING, see README
 * "systemd"), `STOPPING=1` when it drains, and `STATUS=<state>: <detail>` always.
 */
export function lifecycleNotice(state: string, detail: string): SystemdNotice {
  return {
    ready: state === 'RUNNING' || state === 'CONNECTING',
    stopping: state === 'DRAINING',
    status: `${state.toLowerCase()}${detail ? `: ${detail}` : ''}`,
  };
}

function run(command: string, args: string[], socket: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, NOTIFY_SOCKET: socket },
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: NOTIFY_TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => {
      if (stderr.length < 2000) stderr += b.toString();
    });
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'ENOENT'
          ? new Error(`${command} not found on PATH (install the Debian package systemd)`)
          : err,
      ),
    );
    child.once('close', (code, signal) =>
      code === 0
        ? resolve()
        : reject(
            new Error(`${command} ${signal ? `killed by ${signal}` : `exited ${code}`}: ${stderr.trim()}`),
          ),
    );
  });
}
