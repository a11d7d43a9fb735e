/**
 * Storage keys: an attempt under a dump lock gets its own key when agents write
 * straight to S3, so a stale holder never overwrites the recorded copy.
 */
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../shared/errors.js';
import { artifactKey, attemptArtifactKey, storedArtifactKey } from '../../shared/storage/keys.js';

describe('storage keys', () => {
  const id = '019aab3c5e2a4f1e8c0d';

  it('without a fencing token, an attempt is stored under the canonical key', () => {
    assert.equal(attemptArtifactKey(id, 'db/shop.sql.zst', 0), artifactKey(id, 'db/shop.sql.zst'));
  });

  it('with one, each token gets its own key under the service', () => {
    assert.equal(attemptArtifactKey(id, 'db/shop.sql.zst', 7), `backups/${id}/db/t7/shop.sql.zst`);
    assert.notEqual(
      attemptArtifactKey(id, 'db/shop.sql.zst', 7),
      attemptArtifactKey(id, 'db/shop.sql.zst', 8),
    );
    // Still under the service's prefix: a reassigned dump's cleanup and backup deletion cover it.
    assert.ok(attemptArtifactKey(id, 'db/shop.sql.zst', 7).startsWith(`backups/${id}/db/`));
  });

  it('the stored key is the recorded one, else the canonical one', () => {
    assert.equal(storedArtifactKey(id, { name: 'db/a.sql.zst' }), `backups/${id}/db/a.sql.zst`);
    assert.equal(
      storedArtifactKey(id, { name: 'db/a.sql.zst', key: `backups/${id}/db/t3/a.sql.zst` }),
      `backups/${id}/db/t3/a.sql.zst`,
    );
    assert.throws(
      () => storedArtifactKey(id, { name: 'db/a', key: `backups/${id}/../x` }),
      InvalidArgumentError,
    );
  });
});
