import type { Command } from 'commander';
import type { WireActivity } from '../../../shared/wire.js';
import type { Runner } from '../runner.js';
import { followActivity } from '../follow.js';
import { info } from '../output.js';

/**
 * `envsnap db-dump [-e ENV] [DB...] [--dump-directory DIR] [--live]`, after
 * `ece-tools db-dump`: dumps databases to `dump-<db>-<unix seconds>.sql.gz`
 * on the node holding each service's dump lock.
 */
export function register(program: Command, run: Runner): void {
  program
    .command('db-dump')
    .description(
      'Dump databases to DIR/dump-<db>-<timestamp>.sql.gz on the node that holds the dump lock (ece-tools db-dump)',
    )
    .argument('[databases...]', 'databases to dump (default: every configured database)')
    .option('-e, --environment <env>', 'the environment (default: the only one configured)')
    .option('--dump-directory <dir>', 'absolute directory on the node (default: <agent work_dir>/dumps)')
    .option(
      '--live',
      'skip quiesce and resume (no pause; dumps of different services are not taken at one instant)',
    )
    .option('--no-wait', 'do not wait for the dump to finish; print the activity ID')
    .action(
      (
        databases: string[],
        opts: { environment?: string; dumpDirectory?: string; live?: boolean; wait: boolean },
      ) =>
        run(async (client, globals) => {
          info(
            globals.quiet,
            `Dumping ${databases.length ? databases.join(', ') : 'every configured database'}`,
          );
          const ref = await client.call<{ activityId: string }>('DbDump', {
            environment: opts.environment ?? '',
            databases,
            dumpDirectory: opts.dumpDirectory ?? '',
            live: Boolean(opts.live),
          });
          if (!opts.wait) {
            process.stdout.write(`Activity ID: ${ref.activityId}\n`);
            return 0;
          }
          const done: WireActivity = await followActivity(client, ref.activityId, globals.quiet);
          if (done.state !== 'complete') {
            process.stderr.write(`error: db-dump failed: ${done.error}\n`);
            return 1;
          }
          // The files, from the finished activity's log (replayed by WatchActivity).
          for await (const e of client.watch(ref.activityId)) {
            const m = e.event === 'log' ? /^dump written on (\S+): (.+)$/.exec(e.log.message) : null;
            if (m) process.stdout.write(`${m[1]}:${m[2]}\n`);
          }
          return 0;
        }),
    );
}
