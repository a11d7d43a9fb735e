import type { Command } from 'commander';
import type { WireActivity } from '../../../shared/wire.js';
import type { Runner } from '../runner.js';
import { parseFormat, printList } from '../output.js';

/** `envsnap activity:list`: recent backups and restores, newest first. */
export function register(program: Command, run: Runner): void {
  program
    .command('activity:list')
    .alias('activities')
    .description('List recent activities (backups, restores), newest first')
    .option('-e, --environment <env>', 'only this environment')
    .option('--limit <n>', 'how many', '50')
    .option('--format <format>', 'table or json', 'table')
    .action((opts: { environment?: string; limit: string; format: string }) =>
      run(async (client) => {
        const format = parseFormat(opts.format);
        const res = await client.call<{ activities: WireActivity[] }>('ListActivities', {
          environment: opts.environment ?? '',
          limit: Math.max(1, Number.parseInt(opts.limit, 10) || 50),
        });
        const items = res.activities.map((a) => ({
          id: a.id,
          type: a.type,
          environment: a.environment,
          state: a.state,
          created: a.created,
          finished: a.finished || null,
          backup_id: a.backupId || null,
          description: a.description,
          error: a.error || null,
        }));
        printList(format, items, [
          ['ID', (a) => a.id],
          ['Created', (a) => a.created],
          ['Description', (a) => a.description],
          ['State', (a) => a.state],
          ['Result', (a) => a.error ?? ''],
        ]);
        return 0;
      }),
    );
}
