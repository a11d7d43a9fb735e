import { InvalidArgumentError } from '../errors.js';

const SEGMENT = /^[^/\0]+$/;

/**
 * Checks a storage key (see the StorageBackend contract).
 *
 * @throws InvalidArgumentError naming the key.
 */
export function checkKey(key: string, allowTrailingSlash = false): string {
  const body = allowTrailingSlash && key.endsWith('/') ? key.slice(0, -1) : key;
  const parts = body.split('/');
  if (!body || key.startsWith('/') || parts.some((p) => !SEGMENT.test(p) || p === '.' || p === '..')) {
    throw new InvalidArgumentError(`invalid storage key "${key}"`);
  }
  return key;
}

/** The key of one artifact of a backup. */
export function artifactKey(backupId: string, artifactName: string): string {
  return checkKey(`backups/${backupId}/${artifactName}`);
}

/** The key of a backup's manifest. */
export function manifestKey(backupId: string): string {
  return `backups/${backupId}/manifest.json`;
}

/** The prefix of everything a backup stored. */
export function backupPrefix(backupId: string): string {
  return `backups/${backupId}/`;
}
