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

/**
 * The key an attempt at an artifact is stored under. Without a fencing token
 * (0) it is the canonical `artifactKey`. With one, the token becomes a path
 * segment after the service, `backups/<id>/<service>/t<token>/<file>`: agents
 * that write straight to a location the controller cannot refuse bytes for
 * (S3) then never overwrite another dump-lock holder's object; the controller
 * records the key of the attempt it accepted in the manifest (`key`), and a
 * stale attempt's object is an orphan for `repository:check --repair`.
 */
export function attemptArtifactKey(backupId: string, artifactName: string, fencingToken: number): string {
  if (!fencingToken) return artifactKey(backupId, artifactName);
  const slash = artifactName.indexOf('/');
  return checkKey(
    `backups/${backupId}/${artifactName.slice(0, slash)}/t${fencingToken}/${artifactName.slice(slash + 1)}`,
  );
}

/** Where an artifact of a backup is stored: its recorded `key`, else the canonical `artifactKey`. */
export function storedArtifactKey(backupId: string, artifact: { name: string; key?: string }): string {
  return artifact.key ? checkKey(artifact.key) : artifactKey(backupId, artifact.name);
}

/** The key of a backup's manifest. */
export function manifestKey(backupId: string): string {
  return `backups/${backupId}/manifest.json`;
}

/** The prefix of everything a backup stored. */
export function backupPrefix(backupId: string): string {
  return `backups/${backupId}/`;
}
