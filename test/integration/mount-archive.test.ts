import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import {
  chmod,
  chown,
  lstat,
  lutimes,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  truncate,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { pack as tarPack } from 'tar-stream';

import {
  createMountArchive,
  extractMountArchive,
  globToRegExp,
  writeMountArchive,
} from '../../agent/mount-archive.js';
import { makeMountTree } from '../helpers/datasets.js';
import { treeFingerprint } from '../helpers/fingerprints.js';
import {
  ArtifactCorruptError,
  TaskAbortedError,
  ToolMissingError,
  UnsafeArchiveEntryError,
} from '../../shared/errors.js';

interface Node {
  type: string;
  mode: number;
  mtime: number;
  uid: number;
  gid: number;
  content?: string;
}

/** Every entry under `dir` (root included as '.'), keyed by relative path; mtimes in whole seconds. */
async function snapshot(dir: string): Promise<Record<string, Node>> {
  const out: Record<string, Node> = {};
  const visit = async (abs: string, rel: string): Promise<void> => {
    const st = await lstat(abs);
    const node: Node = {
      type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other',
      mode: st.mode & 0o7777,
      mtime: Math.floor(st.mtimeMs / 1000),
      uid: st.uid,
      gid: st.gid,
    };
    if (node.type === 'symlink') {
      node.content = await readlink(abs);
      node.mode = 0; // symlink modes are not meaningful on Linux
    }
    if (node.type === 'file')
      node.content = createHash('sha256')
        .update(await readFile(abs))
        .digest('hex');
    out[rel] = node;
    if (node.type === 'dir') {
      for (const name of (await readdir(abs)).sort())
        await visit(join(abs, name), rel === '.' ? name : `${rel}/${name}`);
    }
  };
  await visit(dir, '.');
  return out;
}

async function buildTree(root: string): Promise<void> {
  await mkdir(join(root, 'a/b/c'), { recursive: true });
  await mkdir(join(root, 'empty'));
  await mkdir(join(root, 'with space'));
  await writeFile(join(root, 'a/b/c/deep.txt'), 'deep\n');
  await writeFile(
    join(root, 'a/binary.bin'),
    Buffer.concat([randomBytes(300_000), Buffer.from([0, 0, 255, 10, 13])]),
  );
  await writeFile(join(root, 'a/empty-file'), '');
  await writeFile(join(root, 'ünïcödé näme 😀.txt'), 'utf-8 name\n');
  await writeFile(join(root, 'with space/inner file.txt'), 'spaces\n');
  await writeFile(join(root, 'a:b'), 'colon name, which archiver would have renamed\n');
  await writeFile(join(root, 'back\\slash'), 'backslash name\n');
  const longDir = join(root, 'l'.repeat(120), 'm'.repeat(120));
  await mkdir(longDir, { recursive: true });
  await writeFile(join(longDir, 'n'.repeat(200)), 'long path\n');
  await writeFile(join(root, 'script.sh'), '#!/bin/sh\necho hi\n');
  await chmod(join(root, 'script.sh'), 0o755);
  await writeFile(join(root, 'private'), 'secret-ish\n');
  await chmod(join(root, 'private'), 0o600);
  await writeFile(join(root, 'setgid-file'), 'x');
  await chmod(join(root, 'setgid-file'), 0o2755);
  await chmod(join(root, 'a/b'), 0o750);
  await chmod(join(root, 'empty'), 0o1777);
  await chown(join(root, 'private'), 1234, 5678);
  await chown(join(root, 'a/empty-file'), 3_000_000, 3_000_001); // too large for ustar: pax records
  await symlink('a/b/c/deep.txt', join(root, 'rel-link'));
  await symlink('/etc/hostname', join(root, 'abs-link'));
  await symlink('does/not/exist', join(root, 'dangling'));
  await symlink('../a', join(root, 'a/b/up-link'));
  await symlink(`/${'t'.repeat(150)}/target`, join(root, 'long-target-link'));
  execFileSync('mkfifo', [join(root, 'a/fifo')]);
  // mtimes, fractional on purpose (the archive keeps whole seconds)
  let t = 1_600_000_000.75;
  const all = Object.keys(await snapshot(root))
    .sort()
    .reverse(); // children before parents
  for (const rel of all) {
    const p = join(root, rel);
    t += 1000;
    const st = await lstat(p);
    if (st.isSymbolicLink()) await lutimes(p, t, t);
    else if (!st.isFIFO()) await utimes(p, t, t);
  }
}

async function archiveTo(root: string, file: string, exclude?: string[]) {
  const { stream, done } = createMountArchive(root, { exclude });
  await pipeline(stream, createWriteStream(file));
  return done;
}

async function tarBytes(
  entries: { header: Parameters<ReturnType<typeof tarPack>['entry']>[0]; body?: string }[],
) {
  const pack = tarPack();
  for (const e of entries) pack.entry(e.header, e.body ?? '');
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function noLeftovers(dir: string): Promise<void> {
  return readdir(dir).then((names) =>
    assert.deepEqual(
      names.filter((n) => n.startsWith('.envsnap-')),
      [],
      'staging or old directories left behind',
    ),
  );
}

describe('mount archive', function () {
  this.timeout(60_000);
  let tmp: string;

  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'envsnap-mount-'));
  });
  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('round-trips a tree into a directory with other content, which then equals the source', async () => {
    const src = join(tmp, 'src');
    await mkdir(src);
    await chmod(src, 0o751);
    await buildTree(src);
    await utimes(src, 1_650_000_000, 1_650_000_000);
    const logged: string[] = [];
    const { stream, done } = createMountArchive(src, { log: (m) => logged.push(m) });
    const file = join(tmp, 'src.tar');
    await pipeline(stream, createWriteStream(file));
    const result = await done;
    const before = await snapshot(src);
    const expected = Object.fromEntries(Object.entries(before).filter(([rel]) => rel !== 'a/fifo'));
    assert.equal(result.entries, Object.keys(expected).length);
    assert.equal(result.skipped, 1);
    assert.ok(logged.some((m) => m.includes('a/fifo')));
    assert.equal(result.bytes > 300_000, true);

    // GNU tar reads it too
    const listing = execFileSync('tar', ['-tvf', file], { encoding: 'utf8' });
    assert.match(listing, /ünïcödé näme 😀\.txt/);
    assert.match(listing, /abs-link -> \/etc\/hostname/);

    const dest = join(tmp, 'dest');
    await mkdir(join(dest, 'a/b'), { recursive: true });
    await writeFile(join(dest, 'stale.txt'), 'old');
    await writeFile(join(dest, 'a/b/stale-inner'), 'old');
    await mkdir(join(dest, 'rel-link')); // a directory where the archive has a symlink
    await writeFile(join(dest, 'empty'), 'a file where the archive has a directory');
    const res = await extractMountArchive(createReadStream(file), dest);
    assert.equal(res.entries, result.entries);
    const after = await snapshot(dest);
    assert.deepEqual(after, expected);
    assert.equal(after['.']?.mode, 0o751);
    assert.equal(after['private']?.uid, 1234);
    assert.equal(after['a/empty-file']?.gid, 3_000_001);
    assert.equal(after['setgid-file']?.mode, 0o2755);
    assert.equal(await readlink(join(dest, 'abs-link')), '/etc/hostname');
    await noLeftovers(dest);
  });

  it('round-trips the shared test tree (test/helpers makeMountTree, compared with treeFingerprint)', async () => {
    const src = join(tmp, 'src');
    const summary = await makeMountTree(src);
    const file = join(tmp, 'tree.tar');
    const result = await archiveTo(src, file);
    assert.equal(result.entries, summary.files + summary.dirs + summary.symlinks + 1);
    assert.equal(result.bytes, summary.bytes);
    const dest = join(tmp, 'dest');
    await mkdir(join(dest, 'docs'), { recursive: true });
    await writeFile(join(dest, 'docs/extra.txt'), 'not in the backup');
    await extractMountArchive(createReadStream(file), dest);
    assert.deepEqual(await treeFingerprint(dest), await treeFingerprint(src));
  });

  it('skips excluded paths and the reserved top-level directories', async () => {
    const src = join(tmp, 'src');
    await mkdir(join(src, 'cache/x'), { recursive: true });
    await mkdir(join(src, 'logs/2024'), { recursive: true });
    await mkdir(join(src, 'sub/cache'), { recursive: true });
    await mkdir(join(src, '.envsnap-staging-abc'));
    await mkdir(join(src, '.envsnap-old-abc'));
    await writeFile(join(src, 'keep.txt'), 'k');
    await writeFile(join(src, 'sub/x.tmp'), 't');
    await writeFile(join(src, 'logs/2024/a.log'), 'l');
    await writeFile(join(src, 'sub/cache/y'), 'y');
    const file = join(tmp, 'a.tar');
    await archiveTo(src, file, ['*.tmp', 'cache', 'logs/**']);
    const names = execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).trim().split('\n').sort();
    assert.deepEqual(names, ['./', 'keep.txt', 'logs/', 'sub/']);
    assert.ok(globToRegExp('a/**/b').test('a/b'));
    assert.ok(globToRegExp('a/**/b').test('a/x/y/b'));
    assert.ok(!globToRegExp('a/*').test('a/x/y'));
  });

  describe('refuses unsafe archives and leaves the mount as it was', () => {
    let dest: string;
    let outside: string;
    let before: Record<string, Node>;

    beforeEach(async () => {
      dest = join(tmp, 'mount');
      outside = join(tmp, 'outside');
      await mkdir(join(dest, 'dir'), { recursive: true });
      await mkdir(outside);
      await writeFile(join(dest, 'keep.txt'), 'keep');
      await writeFile(join(dest, 'dir/inner.txt'), 'inner');
      await utimes(dest, 1_600_000_000, 1_600_000_000); // so that a touched root shows
      before = await snapshot(dest);
    });

    const cases: [string, () => Parameters<typeof tarBytes>[0]][] = [
      ['../evil', () => [{ header: { name: '../evil' }, body: 'x' }]],
      ['/abs/evil', () => [{ header: { name: `${outside}/evil` }, body: 'x' }]],
      ['a/../../evil', () => [{ header: { name: 'a/../../evil' }, body: 'x' }]],
      [
        'symlink to an outside directory, then a file through it',
        () => [
          { header: { name: 'link', type: 'symlink', linkname: outside } },
          { header: { name: 'link/evil' }, body: 'x' },
        ],
      ],
      [
        'symlink to .., then a file through it',
        () => [
          { header: { name: 'link', type: 'symlink', linkname: '..' } },
          { header: { name: 'link/evil' }, body: 'x' },
        ],
      ],
      [
        'symlink, then a directory through it',
        () => [
          { header: { name: 'link', type: 'symlink', linkname: outside } },
          { header: { name: 'link/sub/', type: 'directory' } },
        ],
      ],
      ['hard link', () => [{ header: { name: 'hard', type: 'link', linkname: 'ok.txt' } }]],
      ['fifo', () => [{ header: { name: 'pipe', type: 'fifo' } }]],
      [
        'character device',
        () => [{ header: { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 } }],
      ],
      ['reserved name', () => [{ header: { name: '.envsnap-old-x/file' }, body: 'x' }]],
      [
        'reserved name of a directory',
        () => [{ header: { name: '.envsnap-staging-x/', type: 'directory' } }],
      ],
      [
        'symlink to a directory of the archive, then a file through it',
        () => [
          { header: { name: 'd/', type: 'directory' } },
          { header: { name: 'link', type: 'symlink', linkname: 'd' } },
          { header: { name: 'link/f' }, body: 'x' },
        ],
      ],
      [
        'symlink, then a directory of the same name',
        () => [
          { header: { name: 'link', type: 'symlink', linkname: outside } },
          { header: { name: 'link/', type: 'directory' } },
          { header: { name: 'link/f' }, body: 'x' },
        ],
      ],
      [
        'hard link to a file outside',
        () => [{ header: { name: 'hard', type: 'link', linkname: '/etc/hostname' } }],
      ],
      ['block device', () => [{ header: { name: 'disk', type: 'block-device', devmajor: 7, devminor: 0 } }]],
      ['a root entry that is a file', () => [{ header: { name: '.' }, body: 'x' }]],
    ];
    for (const [title, entries] of cases) {
      for (const compression of [undefined, 'zstd']) {
        it(`${title}${compression ? ` (${compression}, into tar)` : ''}`, async () => {
          const tar = await tarBytes([{ header: { name: 'ok.txt' }, body: 'fine' }, ...entries()]);
          const input = compression
            ? { stream: Readable.from([execFileSync('zstd', ['-q', '-c'], { input: tar })]), compression }
            : Readable.from([tar]);
          await assert.rejects(extractMountArchive(input, dest), UnsafeArchiveEntryError);
          assert.deepEqual(await snapshot(dest), before);
          await noLeftovers(dest);
          assert.deepEqual(await readdir(outside), []);
          assert.equal(existsSync(join(tmp, 'evil')), false);
        });
      }
    }

    it('names the entry refused', async () => {
      const tar = await tarBytes([
        { header: { name: 'ok.txt' }, body: 'fine' },
        { header: { name: 'sub/näme "x"\nline', type: 'link', linkname: 'ok.txt' } },
      ]);
      await assert.rejects(
        extractMountArchive(Readable.from([tar]), dest),
        (err: Error) =>
          err instanceof UnsafeArchiveEntryError &&
          err.message === 'refusing archive entry "sub/näme "x"\nline": hard links are not restored',
      );
      const dotDot = await tarBytes([{ header: { name: 'a/../../evil' }, body: 'x' }]);
      await assert.rejects(
        extractMountArchive(Readable.from([dotDot]), dest),
        /"a\/\.\.\/\.\.\/evil": the path contains/,
      );
    });

    it('a truncated archive (cut inside a file, or without its end marker) and garbage', async () => {
      const src = join(tmp, 'src');
      await mkdir(src);
      await writeFile(join(src, 'big.bin'), randomBytes(200_000));
      await writeFile(join(src, 'z-last.txt'), 'last');
      const file = join(tmp, 'good.tar');
      await archiveTo(src, file);
      const good = await readFile(file);
      const endOfLastEntry = good.length - 1024;
      for (const bytes of [good.subarray(0, 100_000), good.subarray(0, endOfLastEntry), randomBytes(5000)]) {
        await assert.rejects(extractMountArchive(Readable.from([bytes]), dest), ArtifactCorruptError);
        assert.deepEqual(await snapshot(dest), before);
        await noLeftovers(dest);
      }
      await truncate(file, 0);
      await assert.rejects(extractMountArchive(createReadStream(file), dest), ArtifactCorruptError);
      assert.deepEqual(await snapshot(dest), before);
    });

    it('an input stream that fails', async () => {
      const tar = await tarBytes([{ header: { name: 'ok.txt' }, body: 'fine' }]);
      const input = new Readable({ read() {} });
      input.push(tar.subarray(0, 1024));
      setTimeout(() => input.destroy(new Error('network gone')), 20);
      await assert.rejects(extractMountArchive(input, dest), /network gone/);
      assert.deepEqual(await snapshot(dest), before);
      await noLeftovers(dest);
    });

    it('an abort while extracting', async () => {
      const ac = new AbortController();
      const input = new Readable({ read() {} });
      const tar = await tarBytes([{ header: { name: 'ok.txt' }, body: 'fine' }]);
      input.push(tar.subarray(0, 1024));
      setTimeout(() => ac.abort(), 20);
      await assert.rejects(extractMountArchive(input, dest, { signal: ac.signal }), TaskAbortedError);
      assert.deepEqual(await snapshot(dest), before);
      await noLeftovers(dest);
    });
  });

  it('lets a later entry replace an earlier one of the same name, without following symlinks', async () => {
    const outside = join(tmp, 'outside');
    await mkdir(outside);
    const tar = await tarBytes([
      { header: { name: 'x' }, body: 'one' },
      { header: { name: 'x' }, body: 'two' },
      { header: { name: 'e/', type: 'directory' } },
      { header: { name: 'e' }, body: 'now a file' },
      { header: { name: 'l' }, body: 'file first' },
      { header: { name: 'l', type: 'symlink', linkname: '/etc/passwd' } },
      { header: { name: 'm', type: 'symlink', linkname: outside } },
      { header: { name: 'n/', type: 'directory', mode: 0o755 } },
      { header: { name: 'n/f' }, body: 'in n' },
      { header: { name: 'n/', type: 'directory', mode: 0o700 } },
    ]);
    const dest = join(tmp, 'mount');
    await extractMountArchive(Readable.from([tar]), dest);
    assert.equal(await readFile(join(dest, 'x'), 'utf8'), 'two');
    assert.equal(await readFile(join(dest, 'e'), 'utf8'), 'now a file');
    assert.equal(await readlink(join(dest, 'l')), '/etc/passwd');
    assert.equal(await readlink(join(dest, 'm')), outside);
    assert.equal(await readFile(join(dest, 'n/f'), 'utf8'), 'in n');
    assert.equal((await stat(join(dest, 'n'))).mode & 0o7777, 0o700);
    assert.deepEqual(await readdir(outside), []);
    await noLeftovers(dest);
  });

  it('refuses a later entry that replaces a directory with content or a symlink (GNU tar would not, or late)', async () => {
    const outside = join(tmp, 'outside');
    await mkdir(outside);
    const dest = join(tmp, 'mount');
    await mkdir(dest);
    await writeFile(join(dest, 'keep.txt'), 'keep');
    const before = await snapshot(dest);
    for (const entries of [
      [
        { header: { name: 'd/', type: 'directory' as const } },
        { header: { name: 'd/f' }, body: 'in d' },
        { header: { name: 'd' }, body: 'now a file' },
      ],
      [
        { header: { name: 's', type: 'symlink' as const, linkname: outside } },
        { header: { name: 's' }, body: 'now a file' },
      ],
    ]) {
      await assert.rejects(
        extractMountArchive(Readable.from([await tarBytes(entries)]), dest),
        /refusing|tar exited/,
      );
      assert.deepEqual(await snapshot(dest), before);
      await noLeftovers(dest);
      assert.deepEqual(await readdir(outside), []);
    }
  });

  it('stops creating on abort and when the consumer goes away', async () => {
    const src = join(tmp, 'src');
    await mkdir(src);
    for (let i = 0; i < 20; i++) await writeFile(join(src, `f${i}`), randomBytes(500_000));
    const ac = new AbortController();
    const a = createMountArchive(src, { signal: ac.signal });
    a.stream.once('data', () => ac.abort());
    a.stream.on('error', () => {});
    a.stream.resume();
    await assert.rejects(a.done, TaskAbortedError);

    const b = createMountArchive(src);
    b.stream.once('data', () => b.stream.destroy());
    await assert.rejects(b.done, /closed before the end/);
  });

  it('writes into a Writable the bytes it streams, filling a slab again only after its write completed', async () => {
    const src = join(tmp, 'src');
    await makeMountTree(src);
    for (let i = 0; i < 6; i++) await writeFile(join(src, `big${i}`), randomBytes(700_000));
    await writeFile(join(src, 'huge'), randomBytes(3_500_000));
    const streamed = createMountArchive(src, { treeStats: 'hash' });
    const parts: Buffer[] = [];
    for await (const chunk of streamed.stream) parts.push(chunk as Buffer);
    const expected = Buffer.concat(parts);

    // A slow consumer: each write completes a few milliseconds later, and what it keeps is the
    // chunk's bytes at that moment, so a slab filled again too early shows as changed bytes.
    const kept: Buffer[] = [];
    const slabs = new Set<ArrayBufferLike>();
    let changedBeforeDone = 0;
    const slow = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _enc, cb) {
        slabs.add(chunk.buffer);
        const atWrite = Buffer.from(chunk);
        setTimeout(() => {
          if (!atWrite.equals(chunk)) changedBeforeDone++;
          kept.push(Buffer.from(chunk));
          cb();
        }, 3);
      },
    });
    const written = writeMountArchive(src, slow, { treeStats: 'hash' });
    const result = await written.done;
    assert.equal(changedBeforeDone, 0);
    assert.ok(Buffer.concat(kept).equals(expected), 'the same bytes as the stream');
    assert.equal(written.written(), expected.length);
    assert.deepEqual(result, await streamed.done);
    assert.ok(slabs.size <= 3, `${slabs.size} slabs for ${expected.length} bytes`);
    assert.ok(slow.writableFinished, 'the Writable was ended');

    // A Writable that fails, a stop, and an abort each end the walk with their reason.
    const failing = new Writable({ write: (_c, _e, cb) => cb(new Error('disk on fire')) });
    failing.on('error', () => {});
    await assert.rejects(writeMountArchive(src, failing).done, /disk on fire/);
    const sink = (): Writable => new Writable({ write: (_c, _e, cb) => setTimeout(cb, 2) });
    const stopped = writeMountArchive(src, sink());
    setTimeout(() => stopped.stop(), 5);
    await assert.rejects(stopped.done, TaskAbortedError);
    const ac = new AbortController();
    const aborted = writeMountArchive(src, sink(), { signal: ac.signal });
    setTimeout(() => ac.abort(), 5);
    await assert.rejects(aborted.done, TaskAbortedError);
  });

  it('fails at once, leaving the root as it was, on an input that failed before extraction started', async () => {
    const root = join(tmp, 'pre-failed');
    await mkdir(root);
    await writeFile(join(root, 'keep.txt'), 'kept');
    const input = new Readable({ read() {} });
    input.on('error', () => {});
    input.destroy(new Error('the copy is missing'));
    await assert.rejects(extractMountArchive(input, root), /the copy is missing/);
    assert.deepEqual(await readdir(root), ['keep.txt']);
  });

  it('names the Debian package when tar is missing, leaving the mount as it was', async () => {
    const dest = join(tmp, 'mount');
    await mkdir(dest);
    await writeFile(join(dest, 'keep.txt'), 'keep');
    const before = await snapshot(dest);
    const tar = await tarBytes([{ header: { name: 'f' }, body: 'x' }]);
    const path = process.env.PATH;
    process.env.PATH = join(tmp, 'no-tools-here');
    try {
      await assert.rejects(
        extractMountArchive(Readable.from([tar]), dest),
        (err: Error) =>
          err instanceof ToolMissingError &&
          /^tar not found/.test(err.message) &&
          /package tar$/.test(err.hint ?? ''),
      );
    } finally {
      process.env.PATH = path;
    }
    assert.deepEqual(await snapshot(dest), before);
    await noLeftovers(dest);
  });

  it('keeps mode 0 on files and directories', async () => {
    const src = join(tmp, 'src');
    await mkdir(join(src, 'sub/locked'), { recursive: true });
    await writeFile(join(src, 'sub/locked/f'), 'f');
    await writeFile(join(src, 'nothing'), 'n');
    for (const p of ['sub/locked/f', 'sub/locked', 'nothing']) await chmod(join(src, p), 0);
    const file = join(tmp, 'a.tar');
    await archiveTo(src, file);
    const dest = join(tmp, 'dest');
    for (const compression of [undefined, 'zstd']) {
      const stream = compression
        ? Readable.from([execFileSync('zstd', ['-q', '-c', file])])
        : createReadStream(file);
      await extractMountArchive(compression ? { stream, compression } : stream, dest);
      assert.deepEqual(await snapshot(dest), await snapshot(src));
    }
  });

  it('restores as a non-root user: modes kept (0 and setuid included), owners left, and again over a tree with a mode-0 directory', async () => {
    const nobody = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
    const src = join(tmp, 'src');
    await mkdir(join(src, 'sub/locked'), { recursive: true });
    await writeFile(join(src, 'sub/locked/f'), 'f');
    await writeFile(join(src, 'nothing'), 'n');
    await writeFile(join(src, 'suid'), 's');
    await symlink('sub/locked/f', join(src, 'link'));
    await chmod(join(src, 'suid'), 0o4755);
    for (const p of ['sub/locked/f', 'sub/locked', 'nothing']) await chmod(join(src, p), 0);
    await utimes(join(src, 'sub'), 1_600_000_000, 1_600_000_000);
    const file = join(tmp, 'a.tar');
    await archiveTo(src, file);
    await chmod(tmp, 0o755);
    await chmod(file, 0o644);
    const dest = join(tmp, 'mount');
    await mkdir(dest);
    await writeFile(join(dest, 'old.txt'), 'old');
    execFileSync('chown', ['-R', 'nobody', dest]);
    const job = JSON.stringify({ kind: 'mount', file, root: dest });
    const child = fileURLToPath(new URL('../helpers/restore-child.js', import.meta.url));
    const withoutOwners = (snap: Record<string, Node>) =>
      Object.fromEntries(Object.entries(snap).map(([k, { uid: _u, gid: _g, ...rest }]) => [k, rest]));
    for (let i = 0; i < 2; i++) {
      const out = execFileSync('runuser', ['-u', 'nobody', '--', process.execPath, child], {
        env: { ...process.env, ENVSNAP_RESTORE_CHILD: job },
        encoding: 'utf8',
      });
      assert.match(out, /done/);
      const after = await snapshot(dest);
      assert.deepEqual(withoutOwners(after), withoutOwners(await snapshot(src)));
      assert.ok(Object.values(after).every((n) => n.uid === nobody));
      await noLeftovers(dest);
    }
  });

  it('replaces the root content of a directory that is empty or missing', async () => {
    const src = join(tmp, 'src');
    await mkdir(join(src, 'd'), { recursive: true });
    await writeFile(join(src, 'd/f'), 'f');
    const file = join(tmp, 'a.tar');
    await archiveTo(src, file);
    const dest = join(tmp, 'new/mount');
    await extractMountArchive(createReadStream(file), dest);
    assert.equal(await readFile(join(dest, 'd/f'), 'utf8'), 'f');
    assert.equal((await stat(dest)).mode & 0o7777, (await stat(src)).mode & 0o7777);
  });
});
