import type { Command } from 'commander';
import { checkId } from '../../../shared/ids.js';
import type { WireBackup } from '../../../shared/wire.js';
import { confirm } from '../confirm.js';
import { humanBytes, info } from '../output.js';
import type { Runner } from '../runner.js';

/** `envsnap backup:delete ID [--yes]`: deletes a backup's artifacts, then its catalog entry. */
export function register(program: Command, run: Runner): void {
  program
    .command('backup:delete')
    .description('Delete a backup: its artifacts in storage, then its catalog entry')
    .argument('<id>', 'backup ID')
    .option('-y, --yes', 'do not ask for confirmation')
    .action((id: string, opts: { yes?: boolean }) =>
      run(async (client, globals) => {
        const backupId = checkId(id, 'backup');
        const backup = await client.call<WireBackup>('GetBackup', { backupId });
        if (!opts.yes) {
          const question = `Delete backup ${backupId} of ${backup.environment} (${backup.created}, ${humanBytes(Number(backup.sizeBytes))})? It cannot be restored afterwards.`;
          if (!(await confirm(question, 'delete'))) {
            info(globals.quiet, 'Nothing deleted.');
            return 1;
          }
        }
        await client.call<WireBackup>('DeleteBackup', { backupId });
        process.stdout.write(`Deleted backup ${backupId}\n`);
        return 0;
      }),
    );
}
