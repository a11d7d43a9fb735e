import type { Command } from 'commander';
import { InvalidArgumentError } from '../../../shared/errors.js';
import type { WireActivity } from '../../../shared/wire.js';
import type { Runner } from '../runner.js';
import { followActivity } from '../follow.js';
import { info } from '../output.js';

/** `envsnap backup:create`: backs up every service and mount of an environment. */
export function register(program: Command, run: Runner): void {
  program
    .command('backup:create')
    .description('Make a backup of an environment: every database, cache and mount')
    .requiredOption('-e, --environment <env>', 'the environment to back up')
    .option('--live', 'live backup: no quiesce of the site; services are dumped while it runs')
    .option('-y, --yes', 'answer yes to any question')
    .option('--no-wait', 'do not wait for the backup to finish; print the activity ID')
    .option('--compression <name>', 'zstd (default, every core) or gzip')
    .option(
      '--replace-oldest',
      'at the manual backup limit, delete the oldest manual backup once this one is complete',
    )
    .action(
      (opts: {
        environment: string;
        live?: boolean;
        wait: boolean;
        compression?: string;
        replaceOldest?: boolean;
      }) =>
        run(async (client, globals) => {
          if (opts.compression && opts.compression !== 'zstd' && opts.compression !== 'gzip') {
            throw new InvalidArgumentError(`unknown compression "${opts.compression}"`, {
              hint: 'use zstd or gzip',
            });
          }
          info(globals.quiet, `Creating backup of ${opts.environment}`);
          const ref = await client.call<{ activityId: string; backupId: string }>('CreateBackup', {
            environment: opts.environment,
            live: Boolean(opts.live),
            compression: opts.compression ?? '',
            replaceOldest: Boolean(opts.replaceOldest),
          });
          if (!opts.wait) {
            process.stdout.write(`Activity ID: ${ref.activityId}\nBackup ID: ${ref.backupId}\n`);
            return 0;
          }
          const done: WireActivity = await followActivity(client, ref.activityId, globals.quiet);
          if (done.state !== 'complete') {
            process.stderr.write(`error: backup ${ref.backupId} failed: ${done.error}\n`);
            return 1;
          }
          process.stdout.write(`Backup ID: ${ref.backupId}\n`);
          return 0;
        }),
    );
}
