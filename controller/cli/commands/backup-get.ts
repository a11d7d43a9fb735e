import type { Command } from 'commander';
import { checkId } from '../../../shared/ids.js';
import type { WireBackup } from '../../../shared/wire.js';
import type { Runner } from '../runner.js';
import { drillToJson } from './backup-drill.js';
import { humanBytes, parseFormat, printList } from '../output.js';

/** `envsnap backup:get ID`: a backup's manifest, each artifact with service, kind, node, size and sha256. */
export function register(program: Command, run: Runner): void {
  program
    .command('backup:get')
    .description("Show a backup's manifest")
    .argument('<id>', 'backup ID')
    .option('--format <format>', 'table or json', 'table')
    .action((id: string, opts: { format: string }) =>
      run(async (client) => {
        const format = parseFormat(opts.format);
        const b = await client.call<WireBackup>('GetBackup', { backupId: checkId(id, 'backup') });
        const artifacts = b.artifacts.map((a) => ({
          name: a.name,
          service: a.service,
          kind: a.kind,
          node: a.node,
          database: a.database || null,
          format: a.format,
          compression: a.compression,
          size_bytes: Number(a.sizeBytes),
          raw_bytes: Number(a.rawBytes) || null, // 0: not known (gzip from a dump tool)
          sha256: a.sha256,
          encryption: a.encryption || null,
          key_fingerprint: a.keyFingerprint || null,
        }));
        if (format === 'json') {
          const out = {
            id: b.id,
            environment: b.environment,
            created: b.created,
            finished: b.finished || null,
            status: b.status.toLowerCase(),
            restorable: b.restorable,
            live: b.live,
            tag: b.tag,
            consistency: b.consistency,
            size_bytes: Number(b.sizeBytes),
            error: b.error || null,
            storage: b.storage ?? null,
            replicated: `${1 + (b.replicas ?? []).filter((r) => r.status === 'complete').length}/${1 + (b.replicas ?? []).length}`,
            replicas: (b.replicas ?? []).map((r) => ({
              location: r.location,
              status: r.status,
              error: r.error || null,
              attempts: r.attempts,
              next_attempt: r.nextAttempt || null,
            })),
            copies: b.copies ?? [],
            pruned: (b.pruned ?? []).map((p) => ({ location: p.location, time: p.time, reason: p.reason })),
            artifacts,
            verification: b.verification
              ? {
                  time: b.verification.time,
                  result: b.verification.result,
                  locations: b.verification.locations.map((l) => ({
                    location: l.location,
                    result: l.result,
                    time: l.time,
                    detail: l.detail,
                    conclusive_result: l.conclusiveResult || null,
                  })),
                }
              : null,
            drill: b.drill ? drillToJson(b.drill) : null,
          };
          process.stdout.write(JSON.stringify(out, null, 2) + '\n');
          return 0;
        }
        process.stdout.write(
          [
            `Backup ID:   ${b.id}`,
            `Environment: ${b.environment}`,
            `Created:     ${b.created}`,
            `Status:      ${b.status.toLowerCase()}${b.error ? ` (${b.error})` : ''}`,
            `Restorable:  ${b.restorable}`,
            ...(b.replicas?.length
              ? [
                  `Replicated:  ${1 + b.replicas.filter((r) => r.status === 'complete').length}/${1 + b.replicas.length} (primary ${b.storage}${b.replicas
                    .map((r) => `; ${r.location}: ${r.status}${r.error ? `, ${r.error}` : ''}`)
                    .join('')})`,
                ]
              : []),
            ...(b.pruned?.length
              ? [
                  `Copies:      ${(b.copies ?? []).join(', ') || 'none'}`,
                  ...b.pruned.map((p) => `Pruned:      ${p.location} at ${p.time} (${p.reason})`),
                ]
              : []),
            ...(b.verification
              ? b.verification.locations.map(
                  (l) => `Verified:    ${l.result} in ${l.location} at ${l.time} (${l.detail})`,
                )
              : ['Verified:    never']),
            b.drill
              ? `Drilled:     ${b.drill.result} at ${b.drill.time} (${b.drill.artifacts.filter((a) => a.result === 'pass').length} of ${b.drill.artifacts.length} artifacts pass${
                  b.drill.result === 'pass'
                    ? ''
                    : `; ${b.drill.artifacts
                        .filter((a) => a.result === 'fail' || a.result === 'error')
                        .map((a) => `${a.name}: ${a.detail}`)
                        .join('; ')}`
                })`
              : 'Drilled:     never',
            `Type:        ${b.live ? 'live' : 'consistent'}, ${b.tag}`,
            `Size:        ${humanBytes(Number(b.sizeBytes))}`,
            ...(b.consistency ? [`Consistency: ${b.consistency}`] : []),
            '',
          ].join('\n'),
        );
        printList('table', artifacts, [
          ['Artifact', (a) => a.name],
          ['Service', (a) => a.service],
          ['Kind', (a) => a.kind],
          ['Node', (a) => a.node],
          ['Size', (a) => humanBytes(a.size_bytes)],
          ['Encryption', (a) => (a.encryption ? `${a.encryption} ${a.key_fingerprint}` : 'none')],
          ['SHA-256', (a) => a.sha256],
        ]);
        return 0;
      }),
    );
}
