/**
 * Failpoints: named places where a test can make the process die at once, to
 * prove that a multi-step operation is crash-safe (the technique of etcd's
 * gofail and FoundationDB's buggify, reduced to one action).
 *
 * `ENVSNAP_FAILPOINTS` holds a comma-separated list of names. When the process
 * reaches a listed name it kills itself with SIGKILL: no cleanup, no
 * `finally`, exactly like a power cut or the OOM killer. Unset (always, in
 * production) the check is one string lookup.
 *
 * Names in use:
 * - `prune.after-delete-artifacts`: the backup is `expiring` in the catalog and
 *   its artifacts are gone from storage, the entry not yet removed.
 */
export function failpoint(name: string): void {
  const list = process.env.ENVSNAP_FAILPOINTS;
  if (!list || !list.split(',').includes(name)) return;
  process.stderr.write(`failpoint ${name}: killing the process\n`);
  process.kill(process.pid, 'SIGKILL');
}
