import cliProgress from 'cli-progress';
import type { WireActivity } from '../../shared/wire.js';
import type { ControllerClient } from './client.js';
import { humanBytes, info } from './output.js';

/**
 * Follows an activity: prints its log lines, and per-artifact progress bars
 * (bytes, rate) on a TTY, plain log lines otherwise. Resolves with the
 * finished activity.
 */
export async function followActivity(
  client: ControllerClient,
  activityId: string,
  quiet?: boolean,
): Promise<WireActivity> {
  const tty = Boolean(process.stderr.isTTY) && !quiet;
  const bars = tty
    ? new cliProgress.MultiBar(
        {
          format: ' {artifact} | {done} | {rate}/s',
          hideCursor: true,
          clearOnComplete: false,
          stream: process.stderr,
        },
        cliProgress.Presets.shades_classic,
      )
    : undefined;
  const byArtifact = new Map<string, { bar: cliProgress.SingleBar; started: number }>();
  let finished: WireActivity | undefined;
  try {
    for await (const e of client.watch(activityId)) {
      if (e.event === 'log') {
        const line = `${e.log.level === 'info' ? '' : `${e.log.level.toUpperCase()}: `}${e.log.message}`;
        if (bars) bars.log(line + '\n');
        else info(quiet, line);
      } else if (e.event === 'progress' && bars) {
        let entry = byArtifact.get(e.progress.artifact);
        if (!entry) {
          entry = {
            bar: bars.create(1, 0, { artifact: e.progress.artifact, done: '0 B', rate: '0 B' }),
            started: Date.now(),
          };
          byArtifact.set(e.progress.artifact, entry);
        }
        const secs = Math.max(0.001, (Date.now() - entry.started) / 1000);
        entry.bar.update(e.progress.done ? 1 : 0, {
          artifact: e.progress.artifact,
          done: humanBytes(Number(e.progress.bytes)),
          rate: humanBytes(Math.round(Number(e.progress.bytes) / secs)),
        });
      } else if (e.event === 'finished') {
        finished = e.finished;
      }
    }
  } finally {
    bars?.stop();
  }
  if (!finished)
    throw new Error(
      `lost the activity ${activityId} stream before it finished; see envsnap activity:log ${activityId}`,
    );
  return finished;
}
