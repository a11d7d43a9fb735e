import type { Command } from 'commander';
import type { WireRepositoryReport } from '../../../shared/wire.js';
import { info, parseFormat, printList } from '../output.js';
import type { Runner } from '../runner.js';

/** How long the CLI waits for a check: it lists and stats every object in storage (ms). */
const CHECK_DEADLINE_MS = 6 * 3600 * 1000;

/**
 * `envsnap repository:check [--repair] [--format table|json]`: objects the
 * catalog does not know (orphans) and catalog entries whose objects are gone
 * or have the wrong size. `--repair` deletes the orphans and marks broken
 * backups not restorable (a failed verification). Exits 1 when an issue is
 * found and not repaired.
 */
export function register(program: Command, run: Runner): void {
  program
    .command('repository:check')
    .description('Find orphan objects in storage and backups whose objects are gone or the wrong size')
    .option('--repair', 'delete orphans and mark broken backups not restorable')
    .option('--format <format>', 'table or json', 'table')
    .action((opts: { repair?: boolean; format: string }) =>
      run(async (client, globals) => {
        const format = parseFormat(opts.format);
        const r = await client.call<WireRepositoryReport>(
          'CheckRepository',
          { repair: Boolean(opts.repair) },
          CHECK_DEADLINE_MS,
        );
        const issues = r.issues.map((i) => ({
          location: i.location,
          kind: i.kind,
          backup_id: i.backupId,
          key: i.key,
          detail: i.detail,
          action: i.action || null,
        }));
        if (format === 'json') {
          const out = {
            repair: r.repair,
            locations: r.locations.map((l) => ({
              location: l.location,
              objects: Number(l.objects),
              backups: Number(l.backups),
            })),
            issues,
          };
          process.stdout.write(JSON.stringify(out, null, 2) + '\n');
        } else if (issues.length) {
          const columns: Array<[string, (i: (typeof issues)[number]) => string]> = [
            ['Location', (i) => i.location],
            ['Kind', (i) => i.kind],
            ['Backup ID', (i) => i.backup_id],
            ['Object', (i) => i.key],
            ['Detail', (i) => i.detail],
          ];
          if (opts.repair) columns.push(['Action', (i) => i.action ?? '']);
          printList('table', issues, columns);
        }
        for (const l of r.locations) {
          info(globals.quiet, `${l.location}: ${Number(l.objects)} objects of ${Number(l.backups)} backups`);
        }
        const unrepaired = issues.filter((i) => i.action === null || i.action.startsWith('failed'));
        const orphans = issues.filter((i) => i.kind === 'orphan').length;
        const broken = new Set(issues.filter((i) => i.kind !== 'orphan').map((i) => i.backup_id)).size;
        info(
          globals.quiet,
          issues.length === 0
            ? 'No issues found.'
            : `${orphans} orphan objects, ${broken} broken backups${opts.repair ? `; ${issues.length - unrepaired.length} of ${issues.length} issues repaired` : '; run with --repair to delete the orphans and mark the broken backups not restorable'}`,
        );
        return unrepaired.length ? 1 : 0;
      }),
    );
}
