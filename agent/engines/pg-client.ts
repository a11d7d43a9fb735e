/**
 * Which PostgreSQL client program the agent runs (`psql`, `pg_dump`, `pg_dumpall`, `pg_restore`).
 *
 * On Debian and Ubuntu, `/usr/bin/psql` and its siblings are links to postgresql-common's
 * `pg_wrapper`, a Perl script that picks one installed version's binary and execs it. Its start
 * costs 30-50 ms on an idle machine and 0.1-0.9 s of wall on a loaded 2-core one (measured:
 * `pg_restore --version` through the link and straight; docs/benchmarks-history.md), and a
 * PostgreSQL backup or restore starts three to six of these tools one after another.
 *
 * envsnap always names the server through `PGHOST` (a service's connection needs a host or a
 * socket directory: shared/config.ts), and with `PGHOST` set and no `--cluster` argument
 * pg_wrapper (postgresql-common, `pg_wrapper` and `PgCommon::get_newest_version`) ignores
 * `PGCLUSTER`, `~/.postgresqlrc` and `/etc/postgresql-common/user_clusters` and runs
 * `/usr/lib/postgresql/<version>/bin/<program>` of the newest installed version (the directory
 * names that are versions, compared as numbers) that has the program, with `PGSYSCONFDIR` set to
 * `/etc/postgresql-common` unless it is set. {@link pgClient} makes that same choice, looked up on
 * every call (a few `stat`s, no cache to go stale when a package is upgraded), and leaves any other
 * setup alone: where the program on `PATH` is not pg_wrapper, that program is run as it is.
 */
import { readdir, realpath } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { toolOnPath } from '../tool-process.js';

/** Where Debian's postgresql-common installs each version's programs (PgCommon.pm `$binroot`). */
const BIN_ROOT = '/usr/lib/postgresql';
/** A version directory's name as pg_wrapper accepts it (PgCommon.pm `get_versions`). */
const VERSION_DIR = /^(\d+\.?\d+)$/;
/** What pg_wrapper sets `PGSYSCONFDIR` to when it is unset. */
const WRAPPER_SYSCONFDIR = '/etc/postgresql-common';

/** A PostgreSQL client program to run: its path or plain name, and environment it needs on top. */
export interface PgClient {
  /** An absolute path of the program pg_wrapper would run, or the plain name (resolved on `PATH`). */
  command: string;
  /** Variables pg_wrapper would set (`PGSYSCONFDIR`), to be added to the tool's environment. */
  env: Record<string, string>;
}

/**
 * The program to run for the PostgreSQL client `name` when the server is named by `PGHOST` (see
 * the file comment): the binary pg_wrapper would exec when the `name` on `PATH` is pg_wrapper,
 * else `name` itself. Never rejects: anything unreadable leaves `name` as it is, so that a missing
 * tool still fails at its start with ToolMissingError.
 */
export async function pgClient(name: string): Promise<PgClient> {
  const plain: PgClient = { command: name, env: {} };
  try {
    const onPath = await toolOnPath(name);
    if (onPath === null || basename(await realpath(onPath)) !== 'pg_wrapper') return plain;
    const versions = (await readdir(BIN_ROOT))
      .filter((entry) => VERSION_DIR.test(entry))
      .sort((a, b) => Number(b) - Number(a));
    for (const version of versions) {
      const candidate = await toolOnPath(join(BIN_ROOT, version, 'bin', name));
      if (candidate !== null)
        return { command: candidate, env: { PGSYSCONFDIR: process.env.PGSYSCONFDIR ?? WRAPPER_SYSCONFDIR } };
    }
  } catch {
    // fall back to the name on PATH
  }
  return plain;
}
