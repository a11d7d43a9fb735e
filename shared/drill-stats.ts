/**
 * Restore-drill stats: what an artifact's data held at backup time (recorded in the manifest), and
 * the comparison a drill makes with what it finds after restoring the artifact into a scratch
 * target. The shapes are the same in the manifest (JSON) and on the wire (`ArtifactStats` in the
 * proto): every field name is one word.
 *
 * - Databases (MariaDB/MySQL, PostgreSQL): per base table, its row count and, at level
 *   `checksums`, a checksum of its rows (MariaDB: `CHECKSUM TABLE ... EXTENDED`; PostgreSQL: an
 *   order-independent sum of 64-bit row hashes, see agent/engines/postgresql-stats.ts). MariaDB also
 *   records its schema objects without rows (views, routines, triggers, events) by name.
 * - Redis: per database index, the key count and how many of those keys have a time to live.
 * - Mounts: counts of files, directories and symlinks, bytes of file content, and a SHA-256 over
 *   the entries in archive order (see agent/mount-archive.ts).
 */

/** How far the recorded stats describe the very data the artifact holds (see the proto's `ArtifactStats.basis`). */
export type StatsBasis = 'snapshot' | 'quiesced' | 'live';

/** `drill_stats` of an environment: what a backup records for drills. */
export type DrillStatsLevel = 'checksums' | 'counts' | 'off';

export interface TableStats {
  /** MariaDB: the table name; PostgreSQL: `schema.table`. */
  name: string;
  rows: number;
  /** Empty at level `counts`. */
  checksum: string;
}

export interface KeyspaceStats {
  /** Redis database index. */
  db: number;
  keys: number;
  /** Keys with a time to live: they may expire before a drill restores them. */
  expires: number;
}

export interface TreeStats {
  files: number;
  /** The root included. */
  directories: number;
  symlinks: number;
  /** Bytes of regular-file content. */
  bytes: number;
  /** Hex SHA-256 over the entries (see agent/mount-archive.ts). */
  sha256: string;
}

/** What an artifact's data held (see the file comment). */
export interface ArtifactStats {
  basis: StatsBasis;
  level: 'checksums' | 'counts';
  tables?: TableStats[];
  /**
   * Schema objects that hold no rows, sorted `<kind> <name>` (`view actor_info`, `procedure
   * film_in_stock`, `trigger customer_create_date`); absent in stats recorded before they were.
   */
  objects?: string[];
  keyspaces?: KeyspaceStats[];
  tree?: TreeStats;
}

/** One artifact's drill outcome (`ArtifactDrill` in the proto). */
export interface ArtifactDrillResult {
  name: string;
  /** pass | fail | error (the scratch restore failed) | skipped (nothing to check). */
  result: 'pass' | 'fail' | 'error' | 'skipped';
  /** One line: what differed or failed, or how much was checked. */
  detail: string;
  differences: string[];
  /** The recorded stats were taken outside the dump's snapshot: differences do not fail the drill. */
  informational: boolean;
}

/** The at most this many differences are kept per artifact (the rest are counted). */
export const MAX_DIFFERENCES = 50;

/**
 * Compares the stats recorded at backup time with those a drill found in the scratch target.
 *
 * Tables: every recorded table must be there with the same row count and (when both sides have
 * one) the same checksum; a table the backup did not record is a difference too. Schema objects
 * (when the backup recorded them, i.e. a list that is not empty) must all be there, and no other. Redis: per
 * database, the keys without a time to live must match exactly; keys with one may be fewer (they
 * expire). Mount trees: every count and the tree hash must match.
 *
 * @returns the differences, each one line naming what differed (`table film: rows 1000, restored 999`);
 *   empty when the data matches.
 */
export function compareStats(recorded: ArtifactStats, observed: ArtifactStats): string[] {
  const out: string[] = [];
  if (recorded.tables) {
    const seen = new Map((observed.tables ?? []).map((t) => [t.name, t]));
    for (const t of recorded.tables) {
      const o = seen.get(t.name);
      seen.delete(t.name);
      if (!o) {
        out.push(`table ${t.name}: missing after the restore (${t.rows} rows at backup time)`);
        continue;
      }
      if (o.rows !== t.rows) out.push(`table ${t.name}: ${t.rows} rows at backup time, ${o.rows} restored`);
      else if (t.checksum && o.checksum && t.checksum !== o.checksum)
        out.push(`table ${t.name}: checksum ${t.checksum} at backup time, ${o.checksum} restored`);
    }
    for (const name of seen.keys()) out.push(`table ${name}: restored but not in the backup's stats`);
  }
  if (recorded.objects && recorded.objects.length > 0) {
    const found = new Set(observed.objects ?? []);
    for (const o of recorded.objects) {
      if (!found.delete(o)) out.push(`${o}: missing after the restore`);
    }
    for (const o of found) out.push(`${o}: restored but not in the backup's stats`);
  }
  if (recorded.keyspaces) {
    const found = new Map((observed.keyspaces ?? []).map((k) => [k.db, k]));
    for (const k of recorded.keyspaces) {
      const o = found.get(k.db) ?? { db: k.db, keys: 0, expires: 0 };
      found.delete(k.db);
      const persistent = k.keys - k.expires;
      const restoredPersistent = o.keys - o.expires;
      if (restoredPersistent !== persistent)
        out.push(
          `redis db${k.db}: ${persistent} keys without expiry at backup time, ${restoredPersistent} restored`,
        );
      if (o.expires > k.expires)
        out.push(`redis db${k.db}: ${k.expires} keys with expiry at backup time, ${o.expires} restored`);
    }
    for (const o of found.values())
      if (o.keys > 0) out.push(`redis db${o.db}: ${o.keys} keys restored, none at backup time`);
  }
  if (recorded.tree) {
    const t = recorded.tree;
    const o = observed.tree ?? { files: 0, directories: 0, symlinks: 0, bytes: 0, sha256: '' };
    for (const key of ['files', 'directories', 'symlinks', 'bytes'] as const) {
      if (t[key] !== o[key]) out.push(`tree: ${t[key]} ${key} at backup time, ${o[key]} restored`);
    }
    if (t.sha256 && t.sha256 !== o.sha256)
      out.push(`tree: sha256 ${t.sha256.slice(0, 16)}… at backup time, ${o.sha256.slice(0, 16)}… restored`);
  }
  if (out.length > MAX_DIFFERENCES) {
    const more = out.length - MAX_DIFFERENCES;
    out.length = MAX_DIFFERENCES;
    out.push(`… and ${more} more differences`);
  }
  return out;
}

/**
 * Judges one artifact of a drill: `skipped` when nothing was recorded, `error` when the scratch
 * restore failed, else `pass` or `fail` from {@link compareStats}. Differences of stats taken
 * outside the dump's snapshot (`basis: live`) are reported as informational and pass.
 */
export function judgeArtifact(
  name: string,
  recorded: ArtifactStats | undefined,
  drilled: { observed?: ArtifactStats | undefined; error?: string | undefined } | undefined,
): ArtifactDrillResult {
  const informational = recorded?.basis === 'live';
  if (drilled?.error) {
    return { name, result: 'error', detail: drilled.error, differences: [], informational: false };
  }
  if (!recorded) {
    return {
      name,
      result: 'skipped',
      detail: drilled ? 'restored; no stats were recorded at backup time' : 'not drilled',
      differences: [],
      informational: false,
    };
  }
  if (!drilled?.observed) {
    return { name, result: 'error', detail: 'the drill returned no stats', differences: [], informational };
  }
  const differences = compareStats(recorded, drilled.observed);
  if (differences.length === 0) {
    return { name, result: 'pass', detail: summarize(recorded), differences, informational };
  }
  if (informational) {
    return {
      name,
      result: 'pass',
      detail: `restored; ${differences.length} differences from stats taken outside the dump's snapshot (live backup), informational: ${differences[0]}`,
      differences,
      informational,
    };
  }
  return { name, result: 'fail', detail: differences.join('; '), differences, informational };
}

/** One line on what was checked, e.g. `16 tables, 47273 rows, checksums match`. */
export function summarize(s: ArtifactStats): string {
  const parts: string[] = [];
  if (s.tables) {
    const rows = s.tables.reduce((n, t) => n + t.rows, 0);
    parts.push(
      `${s.tables.length} tables, ${rows} rows${s.level === 'checksums' ? ', checksums' : ''}${s.objects?.length ? `, ${s.objects.length} other objects` : ''} match`,
    );
  }
  if (s.keyspaces) parts.push(`${s.keyspaces.reduce((n, k) => n + k.keys, 0)} keys match`);
  if (s.tree)
    parts.push(`${s.tree.files} files, ${s.tree.bytes} bytes${s.tree.sha256 ? ', tree hash' : ''} match`);
  return parts.join('; ') || 'match';
}

/**
 * Normalizes stats decoded from the wire (decoding fills unset repeated fields with `[]` and
 * unset messages with null) for an artifact of `kind`: databases get `tables`, Redis `keyspaces`,
 * mounts `tree`, even when empty; numbers become numbers.
 *
 * @returns undefined when `w` is unset or has no basis.
 */
export function statsFromWire(w: unknown, kind: string): ArtifactStats | undefined {
  const s = w as
    | {
        basis?: string;
        level?: string;
        tables?: TableStats[];
        objects?: string[];
        keyspaces?: KeyspaceStats[];
        tree?: TreeStats | null;
      }
    | null
    | undefined;
  if (!s || !s.basis) return undefined;
  const out: ArtifactStats = {
    basis: s.basis as StatsBasis,
    level: s.level === 'counts' ? 'counts' : 'checksums',
  };
  if (kind === 'mount') {
    const t = s.tree ?? { files: 0, directories: 0, symlinks: 0, bytes: 0, sha256: '' };
    out.tree = {
      files: Number(t.files),
      directories: Number(t.directories),
      symlinks: Number(t.symlinks),
      bytes: Number(t.bytes),
      sha256: t.sha256,
    };
  } else if (kind === 'redis') {
    out.keyspaces = (s.keyspaces ?? []).map((k) => ({
      db: Number(k.db),
      keys: Number(k.keys),
      expires: Number(k.expires),
    }));
  } else {
    out.tables = (s.tables ?? []).map((t) => ({
      name: t.name,
      rows: Number(t.rows),
      checksum: t.checksum ?? '',
    }));
    // Unset on the wire reads as []: kept only when there are some (compareStats checks objects
    // only when some were recorded).
    if (s.objects?.length) out.objects = [...s.objects];
  }
  return out;
}
