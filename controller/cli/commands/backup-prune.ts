import type { Command } from 'commander';
import type { Runner } from '../runner.js';
import type { WirePruneDecision } from '../../../shared/wire.js';
import { parseFormat, printList } from '../output.js';

/**
 * `envsnap backup:prune [-e ENV] [--dry-run]`: applies retention now. Every
 * backup is listed with the rules that keep it or the reason it goes.
 */
export function register(program: Command, run: Runner): void {
  program
    .command('backup:prune')
    .description('Apply retention now; --dry-run shows what would go and which rule keeps each survivor')
    .option('-e, --environment <env>', 'only this environment (default: every environment)')
    .option('--dry-run', 'change nothing, only show the decisions')
    .option('--format <format>', 'table or json', 'table')
    .action((opts: { environment?: string; dryRun?: boolean; format: string }) =>
      run(async (client) => {
        const format = parseFormat(opts.format);
        const res = await client.call<{ decisions: WirePruneDecision[]; dryRun: boolean }>('PruneBackups', {
          environment: opts.environment ?? '',
          dryRun: Boolean(opts.dryRun),
        });
        const items = res.decisions.map((d) => ({
          id: d.backupId,
          environment: d.environment,
          created: d.created,
          tag: d.tag,
          action: d.keep ? 'keep' : opts.dryRun ? 'would delete' : 'deleted',
          reasons: d.reasons,
        }));
        printList(format, items, [
          ['Created', (d) => d.created],
          ['Backup ID', (d) => d.id],
          ['Environment', (d) => d.environment],
          ['Tag', (d) => d.tag],
          ['Action', (d) => d.action],
          ['Why', (d) => d.reasons.join(', ')],
        ]);
        return 0;
      }),
    );
}
