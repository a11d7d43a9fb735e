import type { EnvironmentConfig } from '../shared/config.js';
import { HookFailedError, errorMessage } from '../shared/errors.js';
import type { WireHookCommand, WireHookTask } from '../shared/wire.js';
import type { ControllerMetrics } from './metrics.js';

/** Runs one hook task on one node's agent; rejects when it fails there. */
export type HookRunner = (node: string, hook: WireHookTask) => Promise<void>;

type Log = (level: 'info' | 'warn' | 'error', message: string) => void;

/** Hook commands of one phase, grouped by node, in config order. */
export function byNode(hooks: EnvironmentConfig['hooks']['quiesce']): Map<string, WireHookCommand[]> {
  const out = new Map<string, WireHookCommand[]>();
  for (const h of hooks) {
    for (const node of h.nodes) {
      const list = out.get(node) ?? [];
      list.push({ command: h.command, timeoutMs: Math.round(h.timeout * 1000) });
      out.set(node, list);
    }
  }
  return out;
}

/**
 * A quiesced site: what `resume()` must undo, and when the pause started.
 *
 * The reference platforms' consistent backups pause the site ("requests are
 * held, not dropped, usually 15 to 30 seconds"); envsnap runs the
 * environment's configured `quiesce` hooks (maintenance mode on, cron and
 * queue consumers stopped) on every node that has them, and the `resume`
 * hooks afterwards, always. Each quiesced agent also arms a watchdog: if it is
 * not told to resume within `max_pause` seconds (the controller died or lost
 * it), it runs its resume hooks by itself.
 */
export class QuiescedSite {
  private resumed = false;

  private constructor(
    private readonly env: EnvironmentConfig,
    private readonly run: HookRunner,
    private readonly metrics: ControllerMetrics,
    private readonly log: Log,
    /** Date.now() when the first quiesce started. */
    readonly started: number,
  ) {}

  /** True when the environment has quiesce hooks (a consistent backup pauses the site). */
  static needed(env: EnvironmentConfig): boolean {
    return env.hooks.quiesce.length > 0;
  }

  /**
   * Runs the quiesce hooks on every node that has them, in parallel, and
   * resolves once all succeeded. If one fails, the resume hooks run (on every
   * node: a node whose quiesce failed half-way may be partly paused) and the
   * returned promise rejects.
   *
   * @throws HookFailedError naming the nodes whose quiesce failed and why.
   */
  static async quiesce(
    env: EnvironmentConfig,
    run: HookRunner,
    metrics: ControllerMetrics,
    log: Log,
  ): Promise<QuiescedSite> {
    const site = new QuiescedSite(env, run, metrics, log, Date.now());
    const quiesce = byNode(env.hooks.quiesce);
    const resume = byNode(env.hooks.resume);
    log('info', `quiescing ${env.name} on ${[...quiesce.keys()].join(', ')}`);
    const results = await Promise.allSettled(
      [...quiesce].map(([node, commands]) =>
        run(node, {
          environment: env.name,
          phase: 'quiesce',
          commands,
          maxPauseMs: Math.round(env.max_pause * 1000),
          resumeCommands: resume.get(node) ?? [],
        }).catch((err: unknown) => Promise.reject(new Error(`${node}: ${errorMessage(err)}`))),
      ),
    );
    const failed = results.flatMap((r) => (r.status === 'rejected' ? [errorMessage(r.reason)] : []));
    if (failed.length > 0) {
      metrics.hookFailures.inc({ environment: env.name, phase: 'quiesce' }, failed.length);
      log('error', `quiesce failed: ${failed.join('; ')}; resuming`);
      await site.resume();
      throw new HookFailedError(`quiesce of ${env.name} failed: ${failed.join('; ')}`, {
        hint: 'the site was resumed; check the hook commands and their output in the activity log',
      });
    }
    log('info', `${env.name} quiesced in ${((Date.now() - site.started) / 1000).toFixed(1)} s`);
    return site;
  }

  /**
   * Runs the resume hooks on every node that has them, in parallel. Never
   * throws: failures are logged and counted. Safe to call twice (runs once).
   *
   * @returns the pause, seconds: first quiesce start to last resume end.
   */
  async resume(): Promise<number> {
    if (this.resumed) return 0;
    this.resumed = true;
    const resume = byNode(this.env.hooks.resume);
    const results = await Promise.allSettled(
      [...resume].map(([node, commands]) =>
        this.run(node, {
          environment: this.env.name,
          phase: 'resume',
          commands,
          maxPauseMs: 0,
          resumeCommands: [],
        }).catch((err: unknown) => Promise.reject(new Error(`${node}: ${errorMessage(err)}`))),
      ),
    );
    const failed = results.flatMap((r) => (r.status === 'rejected' ? [errorMessage(r.reason)] : []));
    if (failed.length > 0) {
      this.metrics.hookFailures.inc({ environment: this.env.name, phase: 'resume' }, failed.length);
      this.log(
        'error',
        `resume failed: ${failed.join('; ')}; the agents' watchdogs resume after max_pause (${this.env.max_pause} s)`,
      );
    }
    const pause = (Date.now() - this.started) / 1000;
    this.metrics.quiescePause.observe({ environment: this.env.name }, pause);
    this.metrics.lastPause.set({ environment: this.env.name }, pause);
    this.log('info', `site paused for ${pause.toFixed(1)} s (first quiesce start to last resume end)`);
    return pause;
  }
}
