import type { BackupRecord } from './catalog.js';

/**
 * Where a backup's copies are: its primary location (`storage`) and its
 * replicas, less the copies retention deleted by a location's own rules
 * (`pruned`). A pruned copy is gone on purpose: restores read from the copies
 * left, the verifier does not check it, `repository:check` does not report it
 * missing, and the replicator does not copy it back.
 */

/** Whether retention deleted the backup's copy in `location`. */
export function isPrunedCopy(b: BackupRecord, location: string): boolean {
  return b.pruned?.[location] !== undefined;
}

/**
 * The locations holding a complete copy of a backup, primary first: the primary unless pruned, then
 * each `complete` replica not pruned. Empty when every copy was pruned (the entry is about to go).
 */
export function copyLocations(b: BackupRecord): string[] {
  return [
    ...(isPrunedCopy(b, b.storage) ? [] : [b.storage]),
    ...Object.entries(b.replicas ?? {})
      .filter(([name, r]) => r.status === 'complete' && !isPrunedCopy(b, name))
      .map(([name]) => name),
  ];
}

/**
 * Every location the backup was written to (primary first, then its replicas, complete or not), less
 * the pruned ones: where a prune or a delete must remove its objects.
 */
export function storedLocations(b: BackupRecord): string[] {
  return [b.storage, ...Object.keys(b.replicas ?? {})].filter((l) => !isPrunedCopy(b, l));
}
