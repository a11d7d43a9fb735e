import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { HookFailedError, TaskAbortedError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { WireHookCommand } from '../shared/wire.js';

/** How hook commands run. */
export interface HookRunOptions {
  environment: string;
  phase: string;
  /** This agent's node id, given to the commands as ENVSNAP_NODE. */
  node: string;
  /** Aborts the running command (SIGKILL to its process group). */
  signal?: AbortSignal;
  /** Receives each output line and the command lines. */
  log: (line: string) => void;
}

/** Lines of a failed command's output quoted in its error. */
const TAIL_LINES = 5;

/**
 * Runs hook commands one after another with `/bin/sh -c`, each with its own
 * timeout (then SIGKILL to its process group), its output lines passed to
 * `log`. The environment gets `ENVSNAP_ENVIRONMENT`, `ENVSNAP_PHASE` and `ENVSNAP_NODE`.
 *
 * @throws HookFailedError naming the command, its exit status or timeout, and the last lines it printed.
 * @throws TaskAbortedError when `signal` aborts (the running command is killed).
 */
export async function runHookCommands(
  commands: readonly WireHookCommand[],
  opts: HookRunOptions,
): Promise<void> {
  for (const c of commands) {
    opts.signal?.throwIfAborted();
    await runOne(c, opts);
  }
}

function runOne(c: WireHookCommand, opts: HookRunOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    opts.log(`${opts.phase}: $ ${c.command}`);
    const child = spawn('/bin/sh', ['-c', c.command], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, so that a timeout kills what it started too
      env: {
        ...process.env,
        ENVSNAP_ENVIRONMENT: opts.environment,
        ENVSNAP_PHASE: opts.phase,
        ENVSNAP_NODE: opts.node,
      },
    });
    const tail: string[] = [];
    const onLine = (line: string) => {
      opts.log(`${opts.phase}: ${line}`);
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
    };
    createInterface({ input: child.stdout }).on('line', onLine);
    createInterface({ input: child.stderr }).on('line', onLine);
    let why: Error | undefined;
    const kill = (err: Error) => {
      why ??= err;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const timeoutMs = c.timeoutMs || 60_000;
    const timer = setTimeout(
      () =>
        kill(new HookFailedError(`${opts.phase} hook "${c.command}" timed out after ${timeoutMs / 1000} s`)),
      timeoutMs,
    );
    const onAbort = () => kill(new TaskAbortedError(`${opts.phase} hook "${c.command}" cancelled`));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new HookFailedError(`${opts.phase} hook "${c.command}" could not start: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (why) return reject(why);
      if (code === 0) {
        opts.log(`${opts.phase}: ok in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        return resolve();
      }
      const status = code === null ? `was killed by ${signal}` : `exited ${code}`;
      reject(
        new HookFailedError(
          `${opts.phase} hook "${c.command}" ${status}${tail.length ? `: ${tail.join(' | ')}` : ''}`,
        ),
      );
    });
  });
}

/**
 * The agent's quiesce watchdog, one per environment.
 *
 * A quiesce arms it with `max_pause` and the node's resume commands. A resume
 * from the controller disarms it. If neither a resume nor anything else comes
 * before it fires (the controller died, hung, or lost this node), the agent
 * runs the resume commands by itself, so the site is never left paused
 * longer than `max_pause`.
 */
export class QuiesceWatchdog {
  private readonly armed = new Map<string, { timer: NodeJS.Timeout; resume: readonly WireHookCommand[] }>();
  /** Environments the watchdog resumed since their last quiesce. */
  private readonly fired = new Set<string>();

  constructor(
    private readonly logger: Logger,
    private readonly node: string,
  ) {}

  arm(environment: string, maxPauseMs: number, resume: readonly WireHookCommand[]): void {
    this.disarm(environment);
    this.fired.delete(environment);
    if (maxPauseMs <= 0 || resume.length === 0) return;
    const timer = setTimeout(() => {
      void this.fire(environment, 'no resume within max_pause');
    }, maxPauseMs);
    timer.unref();
    this.armed.set(environment, { timer, resume });
  }

  private async fire(environment: string, why: string): Promise<void> {
    const entry = this.armed.get(environment);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.armed.delete(environment);
    this.fired.add(environment);
    this.logger.warn({ environment }, `watchdog: ${why}; running the resume hooks`);
    try {
      await runHookCommands(entry.resume, {
        environment,
        phase: 'resume',
        node: this.node,
        log: (line) => this.logger.info({ environment, watchdog: true }, line),
      });
      this.logger.info({ environment }, 'watchdog: site resumed');
    } catch (err) {
      this.logger.error({ environment, err: String(err) }, 'watchdog: resume failed');
    }
  }

  /**
   * Called by a resume: stops the timer.
   *
   * @returns true when the watchdog already ran the resume hooks (they need not run again).
   */
  disarm(environment: string): boolean {
    const t = this.armed.get(environment);
    if (t) clearTimeout(t.timer);
    this.armed.delete(environment);
    const fired = this.fired.has(environment);
    this.fired.delete(environment);
    return fired;
  }

  /** Shutdown: resumes every environment still quiesced now, rather than leave it paused. */
  async close(): Promise<void> {
    await Promise.all([...this.armed.keys()].map((env) => this.fire(env, 'the agent is stopping')));
  }
}
