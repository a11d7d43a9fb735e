import type { Command } from 'commander';
import { checkId } from '../../../shared/ids.js';
import type { WireBackup } from '../../../shared/wire.js';
import type { Runner } from '../runner.js';
import { confirm } from '../confirm.js';
import { followActivity } from '../follow.js';
import { info } from '../output.js';

/** `envsnap backup:restore ID [--target ENV]`: restores every service and mount of a backup. */
export function register(program: Command, run: Runner): void {
  program
    .command('backup:restore')
    .description('Restore a backup into its environment, or into --target')
    .argument('<id>', 'backup ID')
    .option('--target <env>', 'restore into this environment instead of the one the backup came from')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--no-wait', 'do not wait for the restore to finish; print the activity ID')
    .action((id: string, opts: { target?: string; yes?: boolean; wait: boolean }) =>
      run(async (client, globals) => {
        const backupId = checkId(id, 'backup');
        if (!opts.yes) {
          // The question names the backup's environment and time; with --yes nothing needs them
          // before the restore starts (the controller reads the backup itself, with the same
          // errors), so the CLI's first round trip is the restore's own.
          const backup = await client.call<WireBackup>('GetBackup', { backupId });
          const target = opts.target ?? backup.environment;
          const question = `Restoring backup ${backupId} (${backup.environment}, ${backup.created}) replaces the data of every service and mount of environment ${target}. Continue?`;
          if (!(await confirm(question, 'restore'))) {
            info(globals.quiet, 'Restore cancelled.');
            return 1;
          }
        }
        const ref = await client.call<{ activityId: string }>('RestoreBackup', {
          backupId,
          targetEnvironment: opts.target ?? '',
        });
        if (!opts.wait) {
          process.stdout.write(`Activity ID: ${ref.activityId}\n`);
          return 0;
        }
        const done = await followActivity(client, ref.activityId, globals.quiet);
        if (done.state !== 'complete') {
          process.stderr.write(`error: restore of ${backupId} failed: ${done.error}\n`);
          return 1;
        }
        // A restore's activity is of its target environment (jobs.ts, restoreBackup).
        process.stdout.write(`Restored backup ${backupId} into ${opts.target ?? done.environment}\n`);
        return 0;
      }),
    );
}
