import { createRequire } from 'node:module';
import type cliProgress from 'cli-progress';
import type { WireActivity, WireBackup } from '../../shared/wire.js';
import type { ControllerClient } from './client.js';
import { humanBytes, info } from './output.js';
import { ProgressTracker, humanDuration, type ExpectedSizes, type ProgressView } from './progress-tracker.js';

/** Default seconds between the plain progress lines written when stderr is not a terminal. */
export const PLAIN_PROGRESS_INTERVAL_S = 10;

/** Loads packages on use: cli-progress only when bars are drawn (not for cron, CI or a pipe). */
const require = createRequire(import.meta.url);

/** How often bars are redrawn without a new event (rates fall when a transfer stalls), ms. */
const TTY_REFRESH_MS = 1_000;

/**
 * Follows an activity until it finishes and resolves with the finished activity.
 *
 * - On a terminal (stderr is a TTY): the log lines, and live bars: one per artifact and a total,
 *   each with bytes done, expected bytes, rate and ETA (see progress-tracker.ts for how they are
 *   measured).
 * - Otherwise (cron, CI, a pipe): the log lines as plain lines, one line per finished artifact
 *   (size, time, rate), a total line every `ENVSNAP_PROGRESS_INTERVAL` seconds (default
 *   {@link PLAIN_PROGRESS_INTERVAL_S}; 0 turns them off) while something runs, and a summary.
 * - `quiet`: nothing but the result the command prints itself.
 *
 * Expected sizes, for the ETA: a restore's come from its backup's manifest (exact); a backup's
 * from the previous complete backup of the same environment, artifact by artifact (an estimate,
 * shown with "~"; artifacts new since then have none). All progress is in stored (compressed)
 * bytes, the unit both sides share.
 */
export async function followActivity(
  client: ControllerClient,
  activityId: string,
  quiet?: boolean,
): Promise<WireActivity> {
  const tty = Boolean(process.stderr.isTTY) && !quiet;
  // The expected sizes' round trips overlap the stream's start (its events wait); never rejects.
  const sizes = quiet ? undefined : expectedSizes(client, activityId);
  let tracker: ProgressTracker | undefined;
  let view: ProgressViewer | undefined;
  let finished: WireActivity | undefined;
  try {
    for await (const e of client.watch(activityId)) {
      if (!tracker || !view) {
        tracker = new ProgressTracker(await sizes);
        view = quiet
          ? { log: () => undefined, progress: () => undefined, stop: () => undefined }
          : tty
            ? new BarsView(tracker)
            : new PlainView(tracker);
      }
      if (e.event === 'log') {
        view.log(`${e.log.level === 'info' ? '' : `${e.log.level.toUpperCase()}: `}${e.log.message}`);
      } else if (e.event === 'progress') {
        view.progress(tracker.update(e.progress));
      } else if (e.event === 'finished') {
        finished = e.finished;
      }
    }
  } finally {
    view?.stop(finished !== undefined);
  }
  if (!finished)
    throw new Error(
      `lost the activity ${activityId} stream before it finished; see envsnap activity:log ${activityId}`,
    );
  return finished;
}

/**
 * The expected artifact sizes of an activity (see {@link followActivity}); empty when there is
 * nothing to go by or the controller cannot say (progress is shown without totals then).
 */
export async function expectedSizes(client: ControllerClient, activityId: string): Promise<ExpectedSizes> {
  const none: ExpectedSizes = { sizes: new Map(), estimated: false };
  try {
    const activity = await client.call<WireActivity>('GetActivity', { activityId }, 10_000);
    if (activity.type === 'backup.restore' && activity.backupId) {
      const backup = await client.call<WireBackup>('GetBackup', { backupId: activity.backupId }, 10_000);
      return { sizes: sizesOf(backup), estimated: false };
    }
    if (activity.type === 'backup.create') {
      const { backups } = await client.call<{ backups: WireBackup[] }>(
        'ListBackups',
        { environment: activity.environment },
        10_000,
      );
      const previous = backups
        .filter((b) => b.status === 'COMPLETE' && b.id !== activity.backupId && b.created < activity.created)
        .sort((a, b) => b.created.localeCompare(a.created))[0];
      if (previous) return { sizes: sizesOf(previous), estimated: true };
    }
  } catch {
    // Totals are a nicety: follow the activity without them.
  }
  return none;
}

function sizesOf(backup: WireBackup): Map<string, number> {
  return new Map(backup.artifacts.map((a) => [a.name, Number(a.sizeBytes)]));
}

interface ProgressViewer {
  log(line: string): void;
  progress(v: ProgressView): void;
  /** `complete`: the activity finished (print a summary); false when the stream was lost. */
  stop(complete: boolean): void;
}

/** "1.2 MiB", "1.2 MiB / ~3.4 MiB". */
function amount(v: ProgressView): string {
  if (v.total === undefined || v.done) return humanBytes(v.bytes);
  return `${humanBytes(v.bytes)} / ${v.estimated ? '~' : ''}${humanBytes(v.total)}`;
}

function rateText(v: ProgressView): string {
  return v.rate === undefined ? '-' : `${humanBytes(Math.round(v.rate))}/s`;
}

function etaText(v: ProgressView): string {
  if (v.done) return `done in ${humanDuration(v.elapsedMs / 1000)}`;
  return `ETA ${v.etaSeconds === undefined ? '?' : humanDuration(v.etaSeconds)}`;
}

function percentText(v: ProgressView): string {
  return v.fraction === undefined ? '  ?%' : `${String(Math.floor(v.fraction * 100)).padStart(3)}%`;
}

/** Live bars on a terminal: a total line first, then one line per artifact. */
class BarsView implements ProgressViewer {
  private readonly bars: cliProgress.MultiBar;
  private readonly rows = new Map<string, cliProgress.SingleBar>();
  private total: cliProgress.SingleBar | undefined;
  private readonly timer: NodeJS.Timeout;
  private width = 0;

  constructor(private readonly tracker: ProgressTracker) {
    const bars = require('cli-progress') as typeof cliProgress;
    this.bars = new bars.MultiBar(
      {
        stream: process.stderr,
        hideCursor: true,
        clearOnComplete: false,
        barsize: 20,
        format: (options, _params, payload: { view?: ProgressView; width?: number }) => {
          const v = payload.view;
          if (!v) return '';
          const bar = bars.Format.BarFormat(v.fraction ?? 0, options);
          return `${v.name.padEnd(payload.width ?? 0)}  ${bar} ${percentText(v)} | ${amount(v)} | ${rateText(v)} | ${etaText(v)}`;
        },
      },
      bars.Presets.shades_classic,
    );
    this.timer = setInterval(() => this.redraw(), TTY_REFRESH_MS);
    this.timer.unref();
  }

  log(line: string): void {
    // MultiBar buffers log lines until its next redraw, which only runs once a bar exists.
    if (this.total) this.bars.log(line + '\n');
    else process.stderr.write(line + '\n');
  }

  progress(v: ProgressView): void {
    if (!this.total) this.total = this.bars.create(1, 0, {});
    if (!this.rows.has(v.name)) {
      this.width = Math.max(this.width, v.name.length, 'total'.length);
      this.rows.set(v.name, this.bars.create(1, 0, {}));
    }
    this.redraw();
  }

  private redraw(): void {
    if (!this.total) return;
    const now = Date.now();
    const overall = this.tracker.overall(now);
    this.total.update(overall.fraction ?? 0, { view: overall, width: this.width });
    for (const [name, bar] of this.rows) {
      const v = this.tracker.view(name, now);
      bar.update(v.fraction ?? 0, { view: v, width: this.width });
    }
  }

  stop(): void {
    clearInterval(this.timer);
    if (!this.total) return;
    this.redraw();
    this.bars.update(); // flushes the buffered log lines
    this.bars.stop();
  }
}

/** Plain lines for logs: finished artifacts, a periodic total line, a summary. */
class PlainView implements ProgressViewer {
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly reported = new Set<string>();

  constructor(private readonly tracker: ProgressTracker) {
    const raw = process.env.ENVSNAP_PROGRESS_INTERVAL;
    const seconds = raw === undefined || raw === '' ? PLAIN_PROGRESS_INTERVAL_S : Number(raw);
    if (Number.isFinite(seconds) && seconds > 0) {
      this.timer = setInterval(() => this.totalLine(), seconds * 1000);
      this.timer.unref();
    }
  }

  log(line: string): void {
    info(false, line);
  }

  progress(v: ProgressView): void {
    if (!v.done || this.reported.has(v.name)) return;
    this.reported.add(v.name);
    info(false, `${v.name}: ${humanBytes(v.bytes)} in ${humanDuration(v.elapsedMs / 1000)} (${rateText(v)})`);
  }

  private totalLine(): void {
    if (!this.tracker.started) return;
    const v = this.tracker.overall();
    if (v.done) return;
    const of =
      v.total === undefined
        ? ''
        : ` of ${v.estimated ? '~' : ''}${humanBytes(v.total)} (${Math.floor((v.fraction ?? 0) * 100)}%)`;
    info(false, `progress: ${humanBytes(v.bytes)}${of}, ${rateText(v)}, ${etaText(v)}`);
  }

  stop(complete: boolean): void {
    clearInterval(this.timer);
    if (!complete || !this.tracker.started) return;
    const names = this.tracker.names();
    const v = this.tracker.overall();
    const seconds = v.elapsedMs / 1000;
    const rate = seconds > 0 ? `${humanBytes(Math.round(v.bytes / seconds))}/s` : '-';
    info(
      false,
      `transferred ${humanBytes(v.bytes)} in ${names.length} artifact${names.length === 1 ? '' : 's'} in ${humanDuration(seconds)} (${rate})`,
    );
  }
}
