import type { Command } from 'commander';
import { InvalidArgumentError } from '../../../shared/errors.js';
import { checkId } from '../../../shared/ids.js';
import type { WireBackupVerification } from '../../../shared/wire.js';
import { info, parseFormat, printList } from '../output.js';
import type { Runner } from '../runner.js';

/** How long the CLI waits for a verification: it reads every artifact back from storage (ms). */
const VERIFY_DEADLINE_MS = 24 * 3600 * 1000;

/** A verification as `--format json` prints it (snake_case, like the other commands). */
function toJson(v: WireBackupVerification) {
  return {
    backup_id: v.backupId,
    environment: v.environment,
    created: v.created,
    time: v.time,
    result: v.result,
    restorable: v.restorable,
    locations: v.locations.map((l) => ({
      location: l.location,
      result: l.result,
      time: l.time,
      detail: l.detail,
      conclusive_result: l.conclusiveResult || null,
      objects: l.objects.map((o) => ({ name: o.name, status: o.status, detail: o.detail || null })),
    })),
  };
}

/**
 * `envsnap backup:verify ID|--all [-e ENV] [--location NAME] [--format table|json]`:
 * the controller re-reads every artifact and the manifest from storage and
 * checks size and SHA-256 against the catalog. Prints one row per backup and
 * location, then every object that is not ok. Exits 1 when any result is not ok.
 */
export function register(program: Command, run: Runner): void {
  program
    .command('backup:verify')
    .description('Re-read backups from storage and check every artifact against its size and SHA-256')
    .argument('[id]', 'backup ID')
    .option('--all', 'every complete backup (of -e ENV, or of every environment)')
    .option('-e, --environment <env>', 'with --all: only this environment')
    .option('--location <name>', 'only this storage location')
    .option('--format <format>', 'table or json', 'table')
    .action(
      (
        id: string | undefined,
        opts: { all?: boolean; environment?: string; location?: string; format: string },
      ) =>
        run(async (client, globals) => {
          const format = parseFormat(opts.format);
          if (Boolean(id) === Boolean(opts.all)) {
            throw new InvalidArgumentError('name one backup ID or --all', {
              hint: 'envsnap backup:verify ID, or envsnap backup:verify --all [-e ENV]',
            });
          }
          if (id && opts.environment) {
            throw new InvalidArgumentError('-e ENV goes with --all', {
              hint: 'a backup ID already names its environment',
            });
          }
          let results: WireBackupVerification[];
          if (id) {
            const backupId = checkId(id, 'backup');
            info(globals.quiet, `Verifying backup ${backupId}…`);
            results = [
              await client.call<WireBackupVerification>(
                'VerifyBackup',
                { backupId, location: opts.location ?? '' },
                VERIFY_DEADLINE_MS,
              ),
            ];
          } else {
            info(
              globals.quiet,
              `Verifying every complete backup${opts.environment ? ` of ${opts.environment}` : ''}…`,
            );
            const res = await client.call<{ verifications: WireBackupVerification[] }>(
              'VerifyBackups',
              { environment: opts.environment ?? '', location: opts.location ?? '' },
              VERIFY_DEADLINE_MS,
            );
            results = res.verifications;
          }
          const notOk = results.filter((v) => v.result !== 'ok');
          if (format === 'json') {
            const out = id ? toJson(results[0]!) : results.map(toJson);
            process.stdout.write(JSON.stringify(out, null, 2) + '\n');
          } else {
            const rows = results.flatMap((v) => v.locations.map((l) => ({ v, l })));
            printList('table', rows, [
              ['Backup ID', ({ v }) => v.backupId],
              ['Environment', ({ v }) => v.environment],
              ['Location', ({ l }) => l.location],
              ['Result', ({ l }) => l.result],
              ['Restorable', ({ v }) => String(v.restorable)],
              ['Detail', ({ l }) => l.detail],
            ]);
            const bad = rows.flatMap(({ v, l }) =>
              l.objects.filter((o) => o.status !== 'ok').map((o) => ({ v, l, o })),
            );
            if (bad.length) {
              printList('table', bad, [
                ['Backup ID', ({ v }) => v.backupId],
                ['Location', ({ l }) => l.location],
                ['Object', ({ o }) => o.name],
                ['Status', ({ o }) => o.status],
                ['Detail', ({ o }) => o.detail],
              ]);
            }
          }
          if (!id) {
            info(
              globals.quiet,
              `${results.length} backups verified: ${results.length - notOk.length} ok, ${notOk.length} not ok`,
            );
          }
          return notOk.length ? 1 : 0;
        }),
    );
}
