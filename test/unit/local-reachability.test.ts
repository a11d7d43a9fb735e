/**
 * The proof an agent makes before it writes a controller's local location
 * straight (marker id, owner, a file it can create), and the fencing rule of
 * its direct copies: a stale dump-lock holder writes under its own attempt
 * key and never replaces the copy recorded for the current one.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { LocationNotSharedError, UploadDiscardedError } from '../../shared/errors.js';
import { attemptArtifactKey } from '../../shared/storage/keys.js';
import { LocalBackend } from '../../shared/storage/local-backend.js';
import {
  LOCATION_MARKER,
  ensureLocationMarker,
  proveSharedLocation,
} from '../../shared/storage/local-reachability.js';
import type { WireStorageTarget } from '../../shared/wire.js';

describe('local locations shared with an agent', () => {
  let root: string;
  let controllerSide: LocalBackend;
  let markerId: string;
  const target = (id: string, p = root): WireStorageTarget => ({
    name: 'local',
    kind: 'local',
    primary: true,
    s3: null,
    local: { path: p, markerId: id },
  });

  beforeEach(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'envsnap-shared-local-'));
    controllerSide = await LocalBackend.open('local', root);
    markerId = await ensureLocationMarker(root);
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('the controller writes one marker and keeps its id across restarts', async () => {
    assert.match(markerId, /^[0-9a-f]{32}$/);
    assert.equal(await ensureLocationMarker(root), markerId);
    assert.equal((await readFile(path.join(root, LOCATION_MARKER), 'utf8')).trim(), markerId);
    // Not an object of the repository.
    assert.deepEqual(await controllerSide.list('backups/'), []);
  });

  it('proves the same directory and opens it without emptying the uploads in progress', async () => {
    await writeFile(path.join(controllerSide.tmpDir, 'in-progress'), 'x');
    const agentSide = await proveSharedLocation(target(markerId), 'node-1');
    assert.equal(agentSide.root, root);
    assert.equal(await readFile(path.join(controllerSide.tmpDir, 'in-progress'), 'utf8'), 'x');
  });

  it('refuses another id, a missing marker, another owner, an unwritable directory, no path', async () => {
    const refused = async (t: WireStorageTarget, why: RegExp) =>
      assert.rejects(proveSharedLocation(t, 'node-1'), (err: unknown) => {
        assert.ok(err instanceof LocationNotSharedError, String(err));
        assert.match(err.message, /^storage "local" is not shared with node node-1: /);
        assert.match(err.message, why);
        return true;
      });
    await refused(target('0'.repeat(32)), /holds another id/);
    await refused(target(markerId, path.join(root, 'elsewhere')), /cannot read .*\.envsnap-location/);
    await refused({ ...target(markerId), local: null }, /sent no path and marker/);
    if (process.geteuid?.() === 0) {
      await chown(path.join(root, LOCATION_MARKER), 65534, 65534);
      await refused(target(markerId), /belongs to uid 65534 and this agent runs as uid 0/);
      await chown(path.join(root, LOCATION_MARKER), 0, 0);
    }
    await rm(controllerSide.tmpDir, { recursive: true });
    await writeFile(controllerSide.tmpDir, 'not a directory');
    await refused(target(markerId), /cannot create a file in/);
  });

  it('a stale holder writing straight never replaces the copy recorded for the current holder', async () => {
    const agentSide = await proveSharedLocation(target(markerId), 'node-1');
    const id = '0123456789abcdef0123';
    const current = attemptArtifactKey(id, 'db/shop.sql.zst', 7);
    const stale = attemptArtifactKey(id, 'db/shop.sql.zst', 6);
    const good = Buffer.from('the current holder dump');
    const put = await agentSide.put(current, Readable.from([good]), { skipDigest: true });
    assert.deepEqual(put, { sizeBytes: good.length, sha256: '' });
    // The stale holder (token 6) finishes later: its bytes go to its own attempt key.
    await agentSide.put(stale, Readable.from([Buffer.from('a stale dump, longer and different')]));
    assert.notEqual(stale, current);
    const recorded = await readFile(path.join(root, current));
    assert.equal(
      createHash('sha256').update(recorded).digest('hex'),
      createHash('sha256').update(good).digest('hex'),
    );
    // The controller sees both as files it can read and delete (its repository:check finds the orphan).
    assert.deepEqual(await controllerSide.list(`backups/${id}/`), [current, stale].sort());
    await controllerSide.delete(stale);
    assert.deepEqual(await controllerSide.list(`backups/${id}/`), [current]);
  });

  it('a stale holder whose attempt the controller discarded while it wrote gets UploadDiscardedError, and nothing is stored', async () => {
    const agentSide = await proveSharedLocation(target(markerId), 'node-1');
    const id = '0123456789abcdef0123';
    const stale = attemptArtifactKey(id, 'db/shop.sql.zst', 6);
    let discard: () => void = () => undefined;
    const discarded = new Promise<void>((resolve) => (discard = resolve));
    async function* frozen() {
      yield Buffer.from('the first part of a dump');
      discard(); // the holder freezes here; the controller discards its attempt's files
      await new Promise((r) => setTimeout(r, 50));
      yield Buffer.from(', the rest after it woke up');
    }
    const put = agentSide.put(stale, Readable.from(frozen()));
    await discarded;
    await controllerSide.deletePrefix(`backups/${id}/`);
    await assert.rejects(put, UploadDiscardedError);
    assert.deepEqual(await controllerSide.list(`backups/${id}/`), []);
  });
});
