import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { LocationNotSharedError, errorMessage } from '../errors.js';
import type { WireStorageTarget } from '../wire.js';
import { LocalBackend } from './local-backend.js';

/**
 * The marker file a controller keeps at the top of each local location: one
 * line, a random id (128 bits, hex). An agent that reads the same id at the
 * same path is looking at the controller's directory (the same disk, or an
 * NFS share of it), not at a look-alike of its own.
 */
export const LOCATION_MARKER = '.envsnap-location';

/**
 * The controller's side: the id in `root`'s marker file, written first (a
 * temporary file renamed into place) when there is none. The id is read
 * back after writing, so that two processes starting at once agree on the
 * one that won the rename.
 *
 * @param root the location's directory, absolute, existing.
 * @returns the marker's id (32 hex characters).
 */
export async function ensureLocationMarker(root: string): Promise<string> {
  const file = join(root, LOCATION_MARKER);
  const read = async () =>
    (
      await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return '';
        throw err;
      })
    ).trim();
  const existing = await read();
  if (existing) return existing;
  const tmp = join(root, `${LOCATION_MARKER}.${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, 'wx', 0o644);
  try {
    await fh.writeFile(`${randomBytes(16).toString('hex')}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  return read();
}

/**
 * The agent's side: proves that a controller's local location is reachable
 * here, as the same directory, before the agent writes or reads it straight.
 * Three checks, in order:
 *
 * 1. `<path>/.envsnap-location` holds the id the controller sent (not just a
 *    directory of the same name on another disk);
 * 2. the marker belongs to this process's user: the controller (same user,
 *    `envsnap` in the systemd units) can then read and delete what the agent
 *    writes (files 0600, directories 0700, like the controller's own);
 * 3. the agent can create (and remove) a file in `<path>/.tmp`, where its
 *    uploads are staged before the rename (fails e.g. under the unit's
 *    `ProtectSystem=strict` without a `ReadWritePaths=` for the path).
 *
 * @returns the location, opened without touching the controller's uploads in progress.
 * @throws LocationNotSharedError naming the location, the node and the failed check.
 */
export async function proveSharedLocation(target: WireStorageTarget, nodeId: string): Promise<LocalBackend> {
  const where = `storage "${target.name}"`;
  const fail = (why: string, cause?: unknown) =>
    new LocationNotSharedError(`${where} is not shared with node ${nodeId}: ${why}`, {
      ...(cause === undefined ? {} : { cause }),
    });
  const loc = target.local;
  if (target.kind !== 'local' || !loc?.path || !loc.markerId) {
    throw fail('the controller sent no path and marker for it');
  }
  if (!isAbsolute(loc.path)) throw fail(`${loc.path} is not an absolute path`);
  const marker = join(loc.path, LOCATION_MARKER);
  let id: string;
  try {
    id = (await readFile(marker, 'utf8')).trim();
  } catch (err) {
    throw fail(`cannot read ${marker}: ${errorMessage(err)}`, err);
  }
  if (id !== loc.markerId) throw fail(`${marker} holds another id (a different directory)`);
  const uid = process.geteuid?.();
  const owner = (await stat(marker)).uid;
  if (uid !== undefined && owner !== uid) {
    throw fail(`${marker} belongs to uid ${owner} and this agent runs as uid ${uid}`);
  }
  const backend = LocalBackend.attach(target.name, loc.path);
  const probe = join(backend.tmpDir, `probe-${randomBytes(6).toString('hex')}`);
  try {
    await mkdir(backend.tmpDir, { recursive: true, mode: 0o700 });
    await (await open(probe, 'wx', 0o600)).close();
    await unlink(probe);
  } catch (err) {
    await unlink(probe).catch(() => undefined);
    throw fail(`cannot create a file in ${backend.tmpDir}: ${errorMessage(err)}`, err);
  }
  return backend;
}
