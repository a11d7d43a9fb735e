/**
 * Catalog records for tests that fill a catalog without running backups.
 */
import type { BackupRecord } from '../../controller/catalog.js';
import { newId } from '../../shared/ids.js';

/**
 * A complete manual backup of `environment` without artifacts, created at `at` (milliseconds since
 * the epoch): its id and activity id are made from that time, so records sort by it.
 */
export function completeBackupRecord(environment: string, at: number): BackupRecord {
  return {
    id: newId(at),
    environment,
    created: new Date(at).toISOString(),
    status: 'complete',
    live: false,
    tag: 'manual',
    consistency: '',
    activityId: newId(at),
    storage: 'local',
    artifacts: [],
    sizeBytes: 0,
  };
}
