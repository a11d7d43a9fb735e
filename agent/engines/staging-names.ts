/**
 * Names of the databases a safe restore works with, next to the live database `<db>`:
 *
 * - `<db>__envsnap_staging`: the backup is loaded here first. Only envsnap writes it; a restore
 *   drops a leftover one (from a restore that was killed) before it starts.
 * - `<db>__envsnap_pre_restore`: after the swap, the data the live database held before the
 *   restore. Kept until {@link Engine.dropPreRestoreCopies} or the next restore of `<db>`.
 *
 * Both names are left out of backups planned from the server's list of databases. When
 * `<db>` plus the suffix would be longer than the server allows (MariaDB: 64 characters;
 * PostgreSQL: 63 bytes, longer names are cut silently), `<db>` is shortened and followed by
 * `_` and 8 hex digits of its SHA-256, so that two long names never share a staging database.
 */
import { createHash } from 'node:crypto';

export const STAGING_SUFFIX = '__envsnap_staging';
export const PRE_RESTORE_SUFFIX = '__envsnap_pre_restore';
/** Restore drills load a backup into `<db>__envsnap_drill` and drop it afterwards (agent/restore-drill.ts). */
export const DRILL_SUFFIX = '__envsnap_drill';

/** How a server measures identifier length. */
export interface NameLimit {
  max: number;
  unit: 'chars' | 'bytes';
}

/** MariaDB/MySQL: database names up to 64 characters (MariaDB manual, "Identifier Names"). */
export const MARIADB_NAME_LIMIT: NameLimit = { max: 64, unit: 'chars' };
/** PostgreSQL: NAMEDATALEN - 1 = 63 bytes (PostgreSQL manual, "Identifiers and Key Words"). */
export const POSTGRES_NAME_LIMIT: NameLimit = { max: 63, unit: 'bytes' };

/** The staging database for `db` (see the file comment). */
export function stagingName(db: string, limit: NameLimit): string {
  return derivedName(db, STAGING_SUFFIX, limit);
}

/** The pre-restore copy of `db` (see the file comment). */
export function preRestoreName(db: string, limit: NameLimit): string {
  return derivedName(db, PRE_RESTORE_SUFFIX, limit);
}

/** The scratch database a restore drill loads `db` into (dropped when the drill ends). */
export function drillName(db: string, limit: NameLimit): string {
  return derivedName(db, DRILL_SUFFIX, limit);
}

/** True for names envsnap derives for staging, pre-restore and drill copies (never planned for backup). */
export function isRestoreWorkName(name: string): boolean {
  return name.endsWith(STAGING_SUFFIX) || name.endsWith(PRE_RESTORE_SUFFIX) || name.endsWith(DRILL_SUFFIX);
}

/** True when `name` is a pre-restore copy (of any database). */
export function isPreRestoreName(name: string): boolean {
  return name.endsWith(PRE_RESTORE_SUFFIX);
}

function derivedName(db: string, suffix: string, limit: NameLimit): string {
  const plain = db + suffix;
  if (size(plain, limit) <= limit.max) return plain;
  const tail = `_${createHash('sha256').update(db, 'utf8').digest('hex').slice(0, 8)}${suffix}`;
  let head = '';
  // Whole code points only, so that a cut never splits a multi-byte character.
  for (const ch of db) {
    if (size(head + ch + tail, limit) > limit.max) break;
    head += ch;
  }
  return head + tail;
}

function size(name: string, limit: NameLimit): number {
  return limit.unit === 'bytes' ? Buffer.byteLength(name, 'utf8') : [...name].length;
}
