import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { recordedRowHash } from '../../agent/engines/postgresql-stats.js';
import { parseKeyspace } from '../../agent/engines/redis-stats.js';
import { createMountArchive } from '../../agent/mount-archive.js';
import {
  compareStats,
  judgeArtifact,
  MAX_DIFFERENCES,
  statsFromWire,
  type ArtifactStats,
} from '../../shared/drill-stats.js';

const tables = (rows: Array<[string, number, string]>): ArtifactStats => ({
  basis: 'quiesced',
  level: 'checksums',
  tables: rows.map(([name, n, checksum]) => ({ name, rows: n, checksum })),
});

describe('restore-drill stats comparison', () => {
  it('finds no difference between equal stats', () => {
    const s = tables([
      ['actor', 200, '123'],
      ['film', 1000, '456'],
    ]);
    assert.deepEqual(compareStats(s, structuredClone(s)), []);
  });

  it('names a changed row count, a changed checksum, a missing and an extra table', () => {
    const recorded = tables([
      ['actor', 200, '123'],
      ['category', 16, '9'],
      ['film', 1000, '456'],
    ]);
    const observed = tables([
      ['actor', 200, '124'],
      ['film', 999, '456'],
      ['film_copy', 1, '1'],
    ]);
    assert.deepEqual(compareStats(recorded, observed), [
      'table actor: checksum 123 at backup time, 124 restored',
      'table category: missing after the restore (16 rows at backup time)',
      'table film: 1000 rows at backup time, 999 restored',
      "table film_copy: restored but not in the backup's stats",
    ]);
  });

  it('names a schema object missing or extra after the restore, when the backup recorded them', () => {
    const recorded = {
      ...tables([['film', 1000, '456']]),
      objects: ['procedure film_in_stock', 'trigger ins_film'],
    };
    assert.deepEqual(compareStats(recorded, structuredClone(recorded)), []);
    assert.deepEqual(
      compareStats(recorded, { ...recorded, objects: ['procedure film_in_stock', 'view v'] }),
      ['trigger ins_film: missing after the restore', "view v: restored but not in the backup's stats"],
    );
    // Stats recorded before objects were (or by an older agent: [] on the wire) check tables only.
    assert.deepEqual(compareStats({ ...recorded, objects: [] }, { ...recorded, objects: ['view v'] }), []);
    assert.deepEqual(compareStats(tables([['film', 1000, '456']]), recorded), []);
  });

  it('compares only counts when one side has no checksum (level counts)', () => {
    assert.deepEqual(compareStats(tables([['a', 1, '']]), tables([['a', 1, '77']])), []);
  });

  it('lets keys with a time to live expire, but not the others', () => {
    const recorded: ArtifactStats = {
      basis: 'quiesced',
      level: 'checksums',
      keyspaces: [
        { db: 0, keys: 10, expires: 3 },
        { db: 2, keys: 5, expires: 0 },
      ],
    };
    const expired: ArtifactStats = {
      ...recorded,
      keyspaces: [
        { db: 0, keys: 8, expires: 1 },
        { db: 2, keys: 5, expires: 0 },
      ],
    };
    assert.deepEqual(compareStats(recorded, expired), []);
    const lost: ArtifactStats = {
      ...recorded,
      keyspaces: [
        { db: 0, keys: 9, expires: 3 },
        { db: 3, keys: 1, expires: 0 },
      ],
    };
    assert.deepEqual(compareStats(recorded, lost), [
      'redis db0: 7 keys without expiry at backup time, 6 restored',
      'redis db2: 5 keys without expiry at backup time, 0 restored',
      'redis db3: 1 keys restored, none at backup time',
    ]);
  });

  it('compares mount trees by counts and hash', () => {
    const t = { files: 3, directories: 2, symlinks: 1, bytes: 10, sha256: 'a'.repeat(64) };
    const recorded: ArtifactStats = { basis: 'snapshot', level: 'checksums', tree: t };
    assert.deepEqual(compareStats(recorded, { ...recorded, tree: { ...t } }), []);
    assert.deepEqual(
      compareStats(recorded, { ...recorded, tree: { ...t, files: 2, sha256: 'b'.repeat(64) } }),
      [
        'tree: 3 files at backup time, 2 restored',
        `tree: sha256 ${'a'.repeat(16)}… at backup time, ${'b'.repeat(16)}… restored`,
      ],
    );
  });

  it('caps the differences it keeps', () => {
    const many = Array.from({ length: MAX_DIFFERENCES + 5 }, (_, i): [string, number, string] => [
      `t${i}`,
      1,
      '',
    ]);
    const d = compareStats(tables(many), tables([]));
    assert.equal(d.length, MAX_DIFFERENCES + 1);
    assert.equal(d.at(-1), '… and 5 more differences');
  });

  it('judges: pass, fail, informational for live stats, error and skipped', () => {
    const rec = tables([['actor', 200, '1']]);
    const bad = tables([['actor', 199, '1']]);
    assert.equal(judgeArtifact('x', rec, { observed: rec }).result, 'pass');
    const failed = judgeArtifact('x', rec, { observed: bad });
    assert.equal(failed.result, 'fail');
    assert.equal(failed.detail, 'table actor: 200 rows at backup time, 199 restored');
    const live = judgeArtifact('x', { ...rec, basis: 'live' }, { observed: bad });
    assert.equal(live.result, 'pass');
    assert.equal(live.informational, true);
    assert.deepEqual(live.differences, ['table actor: 200 rows at backup time, 199 restored']);
    assert.equal(judgeArtifact('x', rec, { error: 'pg_restore failed' }).result, 'error');
    assert.equal(judgeArtifact('x', undefined, { observed: rec }).result, 'skipped');
  });

  it('reads stats from the wire by artifact kind (unset parts filled by proto-loader)', () => {
    assert.equal(statsFromWire(null, 'mariadb'), undefined);
    assert.deepEqual(
      statsFromWire(
        { basis: 'snapshot', level: 'checksums', tables: [], keyspaces: [], tree: null },
        'postgresql',
      ),
      {
        basis: 'snapshot',
        level: 'checksums',
        tables: [],
      },
    );
    assert.deepEqual(
      statsFromWire({ basis: 'live', level: 'counts', tables: [], keyspaces: [], tree: null }, 'redis'),
      {
        basis: 'live',
        level: 'counts',
        keyspaces: [],
      },
    );
  });

  it('parses INFO keyspace', () => {
    assert.deepEqual(
      parseKeyspace('# Keyspace\r\ndb3:keys=1,expires=0,avg_ttl=0\r\ndb0:keys=12,expires=2,avg_ttl=99\r\n'),
      [
        { db: 0, keys: 12, expires: 2 },
        { db: 3, keys: 1, expires: 0 },
      ],
    );
  });
});

describe('mount tree digest', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'envsnap-digest-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function digest(root: string, level: 'hash' | 'counts' = 'hash') {
    const a = createMountArchive(root, { treeStats: level });
    await pipeline(a.stream, new Writable({ write: (_c, _e, cb) => cb() }));
    return (await a.done).tree!;
  }

  it('counts entries, hashes content (large files streamed too), and changes with any byte or name', async () => {
    const root = path.join(dir, 'a');
    await mkdir(path.join(root, 'sub'), { recursive: true });
    await writeFile(path.join(root, 'small.txt'), 'hello\n');
    await writeFile(path.join(root, 'sub', 'big.bin'), Buffer.alloc(3 * 1024 * 1024 + 7, 1));
    await symlink('small.txt', path.join(root, 'link'));
    const first = await digest(root);
    assert.deepEqual(
      { ...first, sha256: '' },
      { files: 2, directories: 2, symlinks: 1, bytes: 6 + 3 * 1024 * 1024 + 7, sha256: '' },
    );
    assert.match(first.sha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(await digest(root), first, 'the digest is deterministic');
    assert.equal((await digest(root, 'counts')).sha256, '');
    await writeFile(path.join(root, 'small.txt'), 'hellO\n');
    assert.notEqual((await digest(root)).sha256, first.sha256);
  });
});

describe('recordedRowHash', () => {
  const t = (checksum: string) => ({ name: 'public.t', rows: 1, checksum });
  it('drills record-hash checksums (r1:) with the record hash', () => {
    assert.equal(recordedRowHash([t('r1:-12'), t('r1:0')]), 'record');
    assert.equal(recordedRowHash([]), 'record');
    assert.equal(recordedRowHash(undefined), 'record');
  });
  it('drills bare checksums (backups before the record hash, servers before 14) with the text hash', () => {
    assert.equal(recordedRowHash([t('-1650088593079689170065')]), 'text');
    assert.equal(recordedRowHash([t('r1:5'), t('7')]), 'text');
  });
  it('ignores empty checksums (level counts)', () => {
    assert.equal(recordedRowHash([t('')]), 'record');
  });
});
