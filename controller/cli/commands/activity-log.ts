import type { Command } from 'commander';
import { checkId } from '../../../shared/ids.js';
import type { Runner } from '../runner.js';

/** `envsnap activity:log ID`: an activity's log; follows it while it runs. */
export function register(program: Command, run: Runner): void {
  program
    .command('activity:log')
    .description("Print an activity's log (follows a running activity)")
    .argument('<id>', 'activity ID')
    .action((id: string) =>
      run(async (client) => {
        let state = '';
        for await (const e of client.watch(checkId(id, 'activity'))) {
          if (e.event === 'log')
            process.stdout.write(`[${e.log.time}] ${e.log.level.padEnd(5)} ${e.log.message}\n`);
          else if (e.event === 'finished') state = e.finished.state;
        }
        return state === 'failed' ? 1 : 0;
      }),
    );
}
