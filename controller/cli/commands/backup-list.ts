import type { Command } from 'commander';
import { InvalidArgumentError } from '../../../shared/errors.js';
import { checkId } from '../../../shared/ids.js';
import type { WireBackup, WireBackupPage } from '../../../shared/wire.js';
import type { Runner } from '../runner.js';
import { humanBytes, parseFormat, printList } from '../output.js';

/** What `backup:list` shows of a backup. */
type BackupSummary = ReturnType<typeof summary>;

function summary(b: WireBackup) {
  return {
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
    copies: b.copies ?? [],
  };
}

/**
 * `envsnap backup:list` (alias `backups`): an environment's backups, newest first, a page at a time:
 * the 50 newest by default, `--limit N`, `--before ID` for the next page, `--all` for every one. When
 * older backups were left out, says how many on stderr (the JSON on stdout stays an array).
 */
export function register(program: Command, run: Runner): void {
  program
    .command('backup:list')
    .alias('backups')
    .description("List an environment's backups, newest first (the 50 newest unless --limit or --all)")
    .option('-e, --environment <env>', 'the environment (default: every environment)')
    .option('--limit <n>', 'show at most N backups', '50')
    .option('--before <id>', 'only backups older than this backup ID (the next page)')
    .option('--all', 'show every backup')
    .option('--format <format>', 'table or json', 'table')
    .action((opts: { environment?: string; limit: string; before?: string; all?: boolean; format: string }) =>
      run(async (client) => {
        const format = parseFormat(opts.format);
        const limit = Number(opts.limit);
        if (!Number.isSafeInteger(limit) || limit < 1)
          throw new InvalidArgumentError(`--limit must be a positive integer, got "${opts.limit}"`, {
            hint: 'use --all to list every backup',
          });
        // The controller answers at most MAX_LIST_PAGE (1,000) backups per call: follow next_before.
        // Only the listed fields are kept here, so a long --all holds summaries, not whole records.
        const items: BackupSummary[] = [];
        let before = opts.before ? checkId(opts.before, 'backup') : '';
        let res: WireBackupPage;
        do {
          res = await client.call<WireBackupPage>('ListBackups', {
            environment: opts.environment ?? '',
            limit: opts.all ? 0 : limit - items.length,
            before,
            all: Boolean(opts.all),
          });
          items.push(...res.backups.map(summary));
          before = res.nextBefore;
        } while (Number(res.more ?? 0) > 0 && before && (opts.all || items.length < limit));
        printList(format, items, [
          ['Created', (b) => b.created],
          ['Backup ID', (b) => b.id],
          ['Restorable', (b) => (b.restorable ? 'true' : 'false')],
          ['Status', (b) => b.status],
          ['Live', (b) => (b.live ? 'live' : 'consistent')],
          ['Tag', (b) => b.tag],
          ['Size', (b) => humanBytes(b.size_bytes)],
          ['Copies', (b) => b.copies.join(', ')],
        ]);
        const more = Number(res.more ?? 0);
        if (more > 0 && !opts.all) {
          process.stderr.write(
            `${more} more, use --limit ${items.length + more} or --all (next page: --before ${res.nextBefore})\n`,
          );
        }
        return 0;
      }),
    );
}
