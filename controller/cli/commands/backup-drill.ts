import type { Command } from 'commander';
import { InvalidArgumentError } from '../../../shared/errors.js';
import { checkId } from '../../../shared/ids.js';
import type { WireBackupDrill } from '../../../shared/wire.js';
import { info, parseFormat, printList } from '../output.js';
import type { Runner } from '../runner.js';

/** How long the CLI waits for a drill: it restores every artifact into scratch targets (ms). */
const DRILL_DEADLINE_MS = 24 * 3600 * 1000;

/** A drill as `--format json` (and `backup:get --format json`) prints it (snake_case). */
export function drillToJson(d: WireBackupDrill) {
  return {
    backup_id: d.backupId,
    environment: d.environment,
    time: d.time,
    result: d.result,
    duration_seconds: Math.round(Number(d.durationSeconds) * 1000) / 1000,
    activity_id: d.activityId,
    source: d.source,
    artifacts: d.artifacts.map((a) => ({
      name: a.name,
      result: a.result,
      informational: a.informational,
      detail: a.detail,
      differences: a.differences,
    })),
  };
}

/**
 * `envsnap backup:drill ID|--latest -e ENV [--format table|json]`: the environment's nodes restore
 * the backup into throwaway targets (scratch databases, a throwaway redis-server, a scratch
 * directory), compare what they find with the stats the manifest recorded at backup time, and
 * remove the targets. Prints one row per artifact, then every difference. Exits 1 when the drill
 * fails.
 */
export function register(program: Command, run: Runner): void {
  program
    .command('backup:drill')
    .description(
      'Restore a backup into throwaway targets and check the data against the stats recorded at backup time',
    )
    .argument('[id]', 'backup ID')
    .option('--latest', 'the newest complete backup of -e ENV')
    .option('-e, --environment <env>', "the backup's environment (required with --latest)")
    .option('--format <format>', 'table or json', 'table')
    .action((id: string | undefined, opts: { latest?: boolean; environment?: string; format: string }) =>
      run(async (client, globals) => {
        const format = parseFormat(opts.format);
        if (Boolean(id) === Boolean(opts.latest)) {
          throw new InvalidArgumentError('name one backup ID or --latest', {
            hint: 'envsnap backup:drill ID, or envsnap backup:drill --latest -e ENV',
          });
        }
        if (opts.latest && !opts.environment) {
          throw new InvalidArgumentError('--latest needs an environment', { hint: 'pass -e ENV' });
        }
        info(
          globals.quiet,
          id ? `Drilling backup ${id}…` : `Drilling the newest complete backup of ${opts.environment}…`,
        );
        const d = await client.call<WireBackupDrill>(
          'DrillBackup',
          {
            backupId: id ? checkId(id, 'backup') : '',
            environment: opts.environment ?? '',
            latest: Boolean(opts.latest),
          },
          DRILL_DEADLINE_MS,
        );
        if (format === 'json') {
          process.stdout.write(JSON.stringify(drillToJson(d), null, 2) + '\n');
        } else {
          printList('table', d.artifacts, [
            ['Artifact', (a) => a.name],
            [
              'Result',
              (a) => (a.informational && a.differences.length ? `${a.result} (informational)` : a.result),
            ],
            ['Detail', (a) => a.detail],
          ]);
          const diffs = d.artifacts.flatMap((a) => a.differences.map((x) => ({ a, x })));
          if (diffs.length && d.result !== 'pass') {
            printList('table', diffs, [
              ['Artifact', ({ a }) => a.name],
              ['Difference', ({ x }) => x],
            ]);
          }
          info(
            globals.quiet,
            `Drill of backup ${d.backupId} (${d.environment}): ${d.result} in ${Number(d.durationSeconds).toFixed(1)} s (activity ${d.activityId})`,
          );
        }
        return d.result === 'pass' ? 0 : 1;
      }),
    );
}
