import type { Command } from 'commander';
import type { Runner } from '../runner.js';
import type { WireSchedule } from '../../../shared/wire.js';
import { parseFormat, printList } from '../output.js';

/** `envsnap schedule:list`: each environment's schedules, next runs and last result. */
export function register(program: Command, run: Runner): void {
  program
    .command('schedule:list')
    .alias('schedules')
    .description("List the automated backup schedules, their next runs and the last run's result")
    .option('-e, --environment <env>', 'only this environment')
    .option('--format <format>', 'table or json', 'table')
    .action((opts: { environment?: string; format: string }) =>
      run(async (client) => {
        const format = parseFormat(opts.format);
        const res = await client.call<{ schedules: WireSchedule[] }>('ListSchedules', {
          environment: opts.environment ?? '',
        });
        const items = res.schedules.map((s) => ({
          environment: s.environment,
          cron: s.cron,
          timezone: s.timezone,
          live: s.live,
          next_runs: s.nextRuns,
          last_run: s.lastRun || null,
          last_result: s.lastResult || null,
          last_backup_id: s.lastBackupId || null,
          last_error: s.lastError || null,
        }));
        printList(format, items, [
          ['Environment', (s) => s.environment],
          ['Schedule', (s) => `${s.cron} (${s.timezone})`],
          ['Type', (s) => (s.live ? 'live' : 'consistent')],
          ['Next runs', (s) => s.next_runs.join('\n')],
          ['Last run', (s) => s.last_run ?? 'never'],
          [
            'Last result',
            (s) => [s.last_result, s.last_backup_id, s.last_error].filter(Boolean).join(' ') || '-',
          ],
        ]);
        return 0;
      }),
    );
}
