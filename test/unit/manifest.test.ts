import assert from 'node:assert/strict';
import { checkId, newId } from '../../shared/ids.js';
import { parseManifest, serializeManifest, type Manifest } from '../../shared/manifest.js';
import { InvalidArgumentError } from '../../shared/errors.js';
import { checkKey } from '../../shared/storage/keys.js';

const manifest: Manifest = {
  format: 'envsnap-manifest',
  format_version: 1,
  backup_id: '0123456789abcdef0123',
  environment: 'main',
  created: '2026-11-22T10:00:00.000Z',
  finished: '2026-11-22T10:01:00.000Z',
  live: false,
  tag: 'manual',
  consistency: '',
  artifacts: [
    {
      name: 'db/sakila.sql.zst',
      service: 'db',
      kind: 'mariadb',
      node: 'node-1',
      database: 'sakila',
      format: 'sql',
      compression: 'zstd',
      size_bytes: 10,
      sha256: 'a'.repeat(64),
      raw_bytes: 100,
    },
  ],
};

describe('manifest', () => {
  it('round-trips', () => {
    assert.deepEqual(parseManifest(serializeManifest(manifest)), manifest);
  });

  it('keeps restore-drill stats through a round trip (manifests without them stay valid)', () => {
    const stats = {
      basis: 'quiesced' as const,
      level: 'checksums' as const,
      tables: [{ name: 'actor', rows: 200, checksum: '1' }],
    };
    const withStats: Manifest = { ...manifest, artifacts: [{ ...manifest.artifacts[0]!, stats }] };
    assert.deepEqual(parseManifest(serializeManifest(withStats)).artifacts[0]!.stats, stats);
  });

  it('checks the format version first', () => {
    const v2 = serializeManifest({
      ...manifest,
      format_version: 2 as 1,
      artifacts: 'garbage' as unknown as [],
    });
    assert.throws(() => parseManifest(v2), /unsupported manifest format version 2/);
    assert.throws(() => parseManifest('{"format":"other"}'), /not an envsnap manifest/);
    assert.throws(() => parseManifest('{'), /not valid JSON/);
  });

  it('refuses unsafe artifact names and bad hashes', () => {
    const bad = (patch: object) =>
      serializeManifest({ ...manifest, artifacts: [{ ...manifest.artifacts[0]!, ...patch }] });
    assert.throws(() => parseManifest(bad({ name: '../etc/passwd' })), InvalidArgumentError);
    assert.throws(() => parseManifest(bad({ name: 'db/../../x' })), InvalidArgumentError);
    assert.throws(() => parseManifest(bad({ sha256: 'xyz' })), /invalid sha256/);
    assert.throws(() => parseManifest(bad({ size_bytes: -1 })), /invalid size_bytes/);
  });

  it('keeps a redis source and refuses a malformed one (a restore trusts it to skip checks)', () => {
    const bad = (redis: unknown) =>
      serializeManifest({ ...manifest, artifacts: [{ ...manifest.artifacts[0]!, redis } as never] });
    const good = { databases: 16, modules: [] };
    assert.deepEqual(parseManifest(bad(good)).artifacts[0]!.redis, good);
    for (const redis of [
      null,
      { databases: 0, modules: [] },
      { databases: '16', modules: [] },
      { databases: 16 },
    ]) {
      assert.throws(() => parseManifest(bad(redis)), /invalid redis source/, JSON.stringify(redis));
    }
  });
});

describe('ids and keys', () => {
  it('makes time-ordered ids', () => {
    const a = newId(1_000);
    const b = newId(2_000);
    assert.match(a, /^[0-9a-f]{20}$/);
    assert.ok(a < b);
  });

  it('checks user-given ids with a hint', () => {
    assert.equal(checkId(' 0123456789ABCDEF0123 ', 'backup'), '0123456789abcdef0123');
    assert.throws(() => checkId('nope', 'backup'), /invalid backup id "nope"/);
  });

  it('refuses unsafe storage keys', () => {
    for (const k of ['', '/abs', 'a/../b', 'a//b', './a', 'a/.'])
      assert.throws(() => checkKey(k), /invalid storage key/);
    assert.equal(checkKey('backups/x/db/a.sql.zst'), 'backups/x/db/a.sql.zst');
  });
});
