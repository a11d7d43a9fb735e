import type { Command } from 'commander';
import type { Runner } from '../runner.js';
import type { WirePruneDecision } from '../../../shared/wire.js';
import { parseFormat, printList } from '../output.js';

/**
 * `envsnap backup:prune [-e ENV] [--dry-run]`: applies retention now. Every
 * backup is listed with the rules that keep it or the reason it goes, and,
 * when its locations decide differently (each location may have its own
 * retention), which copies go: `keep in offsite, would delete from local`,
 * the reasons prefixed with the location. JSON adds `locations: [{ location,
 * action, reasons }]`.
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
        const deleted = opts.dryRun ? 'would delete' : 'deleted';
        const items = res.decisions.map((d) => {
          const locations = (d.locations ?? []).map((l) => ({
            location: l.location,
            action: l.keep ? 'keep' : deleted,
            reasons: l.reasons,
          }));
          const gone = locations.filter((l) => l.action !== 'keep').map((l) => l.location);
          const kept = locations.filter((l) => l.action === 'keep').map((l) => l.location);
          return {
            id: d.backupId,
            environment: d.environment,
            created: d.created,
            tag: d.tag,
            action: !d.keep
              ? deleted
              : gone.length > 0
                ? `keep in ${kept.join(', ')}, ${deleted} from ${gone.join(', ')}`
                : 'keep',
            reasons: d.reasons,
            locations,
          };
        });
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
