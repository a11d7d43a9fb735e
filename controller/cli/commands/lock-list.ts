import type { Command } from 'commander';
import type { WireLock } from '../../../shared/wire.js';
import type { Runner } from '../runner.js';
import { parseFormat, printList } from '../output.js';

/** `envsnap lock:list`: the dump locks held now (holder, fencing token, expiry, job). */
export function register(program: Command, run: Runner): void {
  program
    .command('lock:list')
    .alias('locks')
    .description('List the dump locks (leases) held now: holder node, fencing token, expiry and job')
    .option('--format <format>', 'table or json', 'table')
    .action((opts: { format: string }) =>
      run(async (client) => {
        const format = parseFormat(opts.format);
        const res = await client.call<{ locks: WireLock[] }>('ListLocks', {});
        const items = res.locks.map((l) => ({
          key: l.key,
          environment: l.environment,
          service: l.service,
          holder: l.holder,
          fencing_token: Number(l.fencingToken),
          expires: l.expires,
          purpose: l.purpose,
          activity_id: l.activityId,
          task_id: l.taskId,
        }));
        printList(format, items, [
          ['Lock', (l) => l.key],
          ['Holder', (l) => l.holder],
          ['Token', (l) => String(l.fencing_token)],
          ['Expires', (l) => l.expires],
          ['Job', (l) => `${l.purpose} ${l.activity_id}`],
        ]);
        return 0;
      }),
    );
}
