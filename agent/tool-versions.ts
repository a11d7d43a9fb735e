/**
 * The external tools a node needs, found on PATH and checked against the oldest versions envsnap
 * accepts. Used by `envsnap doctor`; the engines find their tools themselves when they run.
 *
 * Minimum versions and why (the versions envsnap is tested with are those of Debian 12: MariaDB
 * 10.11, PostgreSQL 15, Redis 7.0, zstd 1.5):
 * - MariaDB client tools 10.3, MySQL client tools 5.7: the oldest releases envsnap accepts; every
 *   option the engine passes (`--single-transaction --routines --triggers --events --hex-blob
 *   --add-drop-database`, the client's `--binary-mode`) exists in them. Older releases are long past
 *   their end of life.
 * - PostgreSQL client tools 9.6: a restore drops the database with psql's `\gexec`, added in 9.6.
 *   Besides, pg_dump refuses a server of a newer major version than its own ("server version
 *   mismatch"); that is checked per service, against the server.
 * - redis-cli 6.0: ACL logins (`--user`) exist since 6.0.
 * - redis-server 7.0: a restore loads the RDB into a temporary local redis-server and reads it
 *   with `PEXPIRETIME` and `FUNCTION DUMP`, both added in 7.0. That server must also be at least
 *   the major version of the server the RDB came from (checked per service).
 * - zstd 1.4.0: artifacts are compressed with `-T0`, one worker per core (documented since the
 *   1.4 manuals).
 * - pigz: any version; without it gzip artifacts fall back to single-threaded gzip.
 */
import { toolOnPath, runTool } from './tool-process.js';

/** A parsed tool version. */
export interface ToolVersion {
  /** e.g. "10.11.19", "15.20", "7.0.15". */
  version: string;
  /** Numeric parts, for comparisons. */
  parts: number[];
  /** MariaDB or MySQL build (client tools of those only), or GNU tar. */
  flavour?: 'mariadb' | 'mysql' | 'gnu';
}

/** One tool (or its alternative names) a service kind needs. */
export interface ToolRequirement {
  /** What the tool does for envsnap, e.g. "dump", "client". */
  role: string;
  /** Names tried in order (the engines' own order); the first found is used. */
  names: readonly string[];
  debianPackage: string;
  /** Oldest accepted version; undefined = any. */
  minimum?: (v: ToolVersion) => string | undefined;
  /** Missing is a warning, not a failure (pigz). */
  optional?: string;
}

/** What was found for one requirement. */
export interface ToolFinding {
  requirement: ToolRequirement;
  /** The name found on PATH, undefined when none was. */
  name?: string;
  path?: string;
  /** undefined when `--version` failed or printed something unrecognised. */
  version?: ToolVersion;
  /** The raw first line of `--version` (for messages). */
  versionLine?: string;
}

/** Parses "1.2.3" (any number of parts) into numbers. */
function parts(v: string): number[] {
  return v.split('.').map((p) => Number.parseInt(p, 10));
}

/** Negative, zero or positive as `a` is older than, equal to or newer than `b` (numeric parts). */
export function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * Parses the `--version` line of a tool, or undefined when it is not recognised. Known shapes:
 * `mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, ...`, `mariadb-dump from 11.4.2-MariaDB, ...`,
 * `mysqldump  Ver 8.0.36 for Linux ...`, `pg_dump (PostgreSQL) 15.20 (Debian ...)`,
 * `redis-cli 7.0.15`, `Redis server v=7.0.15 sha=...`, `*** Zstandard CLI (64-bit) v1.5.4, ...`,
 * `pigz 2.6`, `tar (GNU tar) 1.34`.
 */
export function parseToolVersion(line: string): ToolVersion | undefined {
  const gnuTar = /\(GNU tar\) (\d+(?:\.\d+)+)/.exec(line);
  if (gnuTar) return { version: gnuTar[1]!, parts: parts(gnuTar[1]!), flavour: 'gnu' };
  const mariadb = /(?:Distrib|from) (\d+\.\d+\.\d+)-MariaDB/.exec(line);
  if (mariadb) return { version: mariadb[1]!, parts: parts(mariadb[1]!), flavour: 'mariadb' };
  const mysqlDistrib = /Distrib (\d+\.\d+\.\d+)/.exec(line);
  if (mysqlDistrib) return { version: mysqlDistrib[1]!, parts: parts(mysqlDistrib[1]!), flavour: 'mysql' };
  const mysql = /\bVer (\d+\.\d+\.\d+)/.exec(line);
  if (mysql) return { version: mysql[1]!, parts: parts(mysql[1]!), flavour: 'mysql' };
  const m =
    /\(PostgreSQL\) (\d+(?:\.\d+)*)/.exec(line) ??
    /\bv=(\d+\.\d+\.\d+)/.exec(line) ??
    /\bv(\d+\.\d+\.\d+)/.exec(line) ??
    /^\S+ (\d+(?:\.\d+)+)\b/.exec(line.trim());
  if (m) return { version: m[1]!, parts: parts(m[1]!) };
  return undefined;
}

const atLeast =
  (min: string, why: string) =>
  (v: ToolVersion): string | undefined =>
    compareVersions(v.parts, parts(min)) < 0 ? `${v.version} is older than ${min} (${why})` : undefined;

const mariadbMinimum = (v: ToolVersion): string | undefined =>
  v.flavour === 'mysql'
    ? atLeast('5.7', 'the oldest MySQL client envsnap accepts')(v)
    : atLeast('10.3', 'the oldest MariaDB client envsnap accepts')(v);

const PG_MIN = atLeast('9.6', "restores use psql's \\gexec");

/** The tools each service kind needs, in the engines' order of names (agent/engines/*.ts). */
export const KIND_TOOLS: Record<'mariadb' | 'mysql' | 'postgresql' | 'redis', ToolRequirement[]> = {
  mariadb: [
    {
      role: 'dump',
      names: ['mariadb-dump', 'mysqldump'],
      debianPackage: 'mariadb-client',
      minimum: mariadbMinimum,
    },
    { role: 'client', names: ['mariadb', 'mysql'], debianPackage: 'mariadb-client', minimum: mariadbMinimum },
  ],
  mysql: [
    {
      role: 'dump',
      names: ['mysqldump', 'mariadb-dump'],
      debianPackage: 'default-mysql-client',
      minimum: mariadbMinimum,
    },
    {
      role: 'client',
      names: ['mysql', 'mariadb'],
      debianPackage: 'default-mysql-client',
      minimum: mariadbMinimum,
    },
  ],
  postgresql: ['pg_dump', 'pg_dumpall', 'pg_restore', 'psql'].map((name) => ({
    role: name,
    names: [name],
    debianPackage: 'postgresql-client',
    minimum: PG_MIN,
  })),
  redis: [
    {
      role: 'dump',
      names: ['redis-cli'],
      debianPackage: 'redis-tools',
      minimum: atLeast('6.0', 'ACL logins with --user'),
    },
    {
      role: 'restore',
      names: ['redis-server'],
      debianPackage: 'redis-server',
      minimum: atLeast('7.0', 'restores read the RDB with PEXPIRETIME and FUNCTION DUMP'),
    },
  ],
};

/**
 * Tools a node with mounts needs: GNU tar extracts mount archives on restore, and the agent reads
 * its `-vv --block-number --quoting-style=c` listing (agent/mount-archive.ts; written against GNU
 * tar 1.34, Debian 12), which other tars (bsdtar) do not print.
 */
export const MOUNT_TOOLS: ToolRequirement[] = [
  {
    role: 'tar',
    names: ['tar'],
    debianPackage: 'tar',
    minimum: (v) =>
      v.flavour === 'gnu'
        ? atLeast('1.30', "mount restores read GNU tar's listing")(v)
        : `not GNU tar (mount restores read GNU tar's listing)`,
  },
];

/** Compression tools every node needs (backups and restores of any kind). */
export const COMPRESSION_TOOLS: ToolRequirement[] = [
  {
    role: 'zstd',
    names: ['zstd'],
    debianPackage: 'zstd',
    minimum: atLeast('1.4.0', 'artifacts are compressed with -T0, one worker per core'),
  },
  {
    role: 'pigz',
    names: ['pigz'],
    debianPackage: 'pigz',
    optional: 'gzip artifacts fall back to single-threaded gzip, several times slower',
  },
];

/**
 * Finds a requirement's tool on PATH and reads its version (`NAME --version`, 10 s at most).
 * Never throws: what is missing or unreadable is left undefined in the finding.
 */
export async function findTool(req: ToolRequirement): Promise<ToolFinding> {
  for (const name of req.names) {
    const path = await toolOnPath(name);
    if (path === null) continue;
    const out = await runTool(path, ['--version'], {
      debianPackage: req.debianPackage,
      signal: AbortSignal.timeout(10_000),
    }).catch(() => '');
    const versionLine = out.split('\n').find((l) => l.trim() !== '') ?? '';
    return { requirement: req, name, path, versionLine, version: parseToolVersion(versionLine) };
  }
  return { requirement: req };
}
