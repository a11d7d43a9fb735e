import type { Command } from 'commander';
import type { WireBackup } from '../../../shared/wire.js';
import type { Runner } from '../runner.js';
import { humanBytes, parseFormat, printList } from '../output.js';

/** `envsnap backup:list` (alias `backups`): an environment's backups, newest first. */
export function register(program: Command, run: Runner): void {
  program
    .command('backup:list')
    .alias('backups')
    .description("List an environment's backups, newest first")
    .option('-e, --environment <env>', 'the environment (default: every environment)')
    .option('--format <format>', 'table or json', 'table')
    .action((opts: { environment?: string; format: string }) =>
      run(async (client) => {
        const format = parseFormat(opts.format);
        const res = await client.call<{ backups: WireBackup[] }>('ListBackups', {
          environment: opts.environment ?? '',
        });
        const items = res.backups.map((b) => ({
          id: b.id,
          environment: b.environment,
          created: b.created,
          finished: b.finished || null,
          status: b.status.toLowerCase(),
          restorable: b.restorable,
          live: b.live,
          tag: b.tag,
          size_bytes: Number(b.sizeBytes),
          error: b.error || null,
        }));
        printList(format, items, [
          ['Created', (b) => b.created],
          ['Backup ID', (b) => b.id],
          ['Restorable', (b) => (b.restorable ? 'true' : 'false')],
          ['Status', (b) => b.status],
          ['Live', (b) => (b.live ? 'live' : 'consistent')],
          ['Tag', (b) => b.tag],
          ['Size', (b) => humanBytes(b.size_bytes)],
        ]);
        return 0;
      }),
    );
}
