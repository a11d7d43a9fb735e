/**
 * A restore in a process of its own, so that a test can kill it with SIGKILL mid-way, as an
 * agent dies: `node dist/test/helpers/restore-child.js` with the job in the environment variable
 * `ENVSNAP_RESTORE_CHILD` (JSON of {@link RestoreChildJob}; it may hold a password, which is why
 * it is not an argument). Prints `done` and exits 0 when the restore finished, exits 1 with the
 * error on stderr otherwise.
 */
import { createReadStream } from 'node:fs';

import { engineFor } from '../../agent/engines/index.js';
import type { DumpUnit, ServiceTarget } from '../../agent/engines/index.js';
import { extractMountArchive } from '../../agent/mount-archive.js';

/** What the child restores: a database unit through its engine, or a mount archive. */
export type RestoreChildJob =
  | { kind: 'service'; service: ServiceTarget; unit: DumpUnit; file: string; workDir: string }
  | { kind: 'mount'; file: string; root: string; compression?: string };

/** The environment variable that carries the job (tests import only the type: importing this module runs it). */
const RESTORE_CHILD_ENV = 'ENVSNAP_RESTORE_CHILD';

async function main(): Promise<void> {
  const raw = process.env[RESTORE_CHILD_ENV];
  if (!raw) throw new Error(`${RESTORE_CHILD_ENV} is not set`);
  const job = JSON.parse(raw) as RestoreChildJob;
  if (job.kind === 'mount') {
    const stream = createReadStream(job.file);
    await extractMountArchive(job.compression ? { stream, compression: job.compression } : stream, job.root);
  } else {
    await engineFor(job.service.kind).restore(job.service, job.unit, createReadStream(job.file), {
      signal: new AbortController().signal,
      workDir: job.workDir,
      log: (message) => process.stdout.write(`log: ${message}\n`),
    });
  }
  process.stdout.write('done\n');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
