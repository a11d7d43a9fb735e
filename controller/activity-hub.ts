import { EventEmitter } from 'node:events';
import type { Logger } from '../shared/logger.js';
import type { ActivityRecord, Catalog, LogRecord } from './catalog.js';

/** Events of one activity, as sent to `WatchActivity` callers. */
export type ActivityEvent =
  | { type: 'log'; line: LogRecord }
  | { type: 'progress'; taskId: string; artifact: string; bytes: number; totalBytes: number; done: boolean }
  | { type: 'finished'; activity: ActivityRecord };

interface LiveActivity {
  lines: LogRecord[];
  emitter: EventEmitter<{ event: [ActivityEvent] }>;
}

/**
 * Fan-out of activity logs and progress to watchers, with the log persisted in
 * the catalog. While an activity runs its log is also held in memory so that a
 * watcher can replay it and subscribe without a gap.
 */
export class ActivityHub {
  private readonly live = new Map<string, LiveActivity>();
  private pending: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly catalog: Catalog,
    private readonly logger: Logger,
  ) {}

  /** Marks an activity as running, so that watchers get live events. */
  start(activityId: string): void {
    this.live.set(activityId, { lines: [], emitter: new EventEmitter() });
  }

  /** Appends a line to the activity log (persisted) and to the process log. Never pass secrets. */
  log(activityId: string, level: LogRecord['level'], message: string): void {
    const line: LogRecord = { time: new Date().toISOString(), level, message };
    this.logger[level]({ activity: activityId }, message);
    const live = this.live.get(activityId);
    if (live) {
      live.lines.push(line);
      live.emitter.emit('event', { type: 'log', line });
    }
    this.pending = this.pending
      .then(() => this.catalog.appendLog(activityId, line))
      .catch((err: unknown) =>
        this.logger.error({ err, activity: activityId }, 'cannot persist activity log line'),
      );
  }

  progress(activityId: string, p: Omit<Extract<ActivityEvent, { type: 'progress' }>, 'type'>): void {
    this.live.get(activityId)?.emitter.emit('event', { type: 'progress', ...p });
  }

  /** Ends the live stream of an activity: watchers get `finished` and are detached. */
  finish(activity: ActivityRecord): void {
    const live = this.live.get(activity.id);
    if (!live) return;
    live.emitter.emit('event', { type: 'finished', activity });
    live.emitter.removeAllListeners();
    this.live.delete(activity.id);
  }

  /**
   * Replays the log of a running activity and subscribes to its events.
   * Returns undefined when the activity is not running (read the catalog instead).
   */
  watch(
    activityId: string,
    listener: (e: ActivityEvent) => void,
  ): { replay: LogRecord[]; unsubscribe(): void } | undefined {
    const live = this.live.get(activityId);
    if (!live) return undefined;
    live.emitter.on('event', listener);
    return { replay: [...live.lines], unsubscribe: () => live.emitter.off('event', listener) };
  }

  /** Waits for every log line handed over so far to be persisted. */
  async flush(): Promise<void> {
    await this.pending;
  }
}
