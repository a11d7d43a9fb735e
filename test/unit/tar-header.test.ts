import assert from 'node:assert/strict';
import { extract as tarExtract, pack as tarPack } from 'tar-stream';
import { encodeTarHeader, tarPadding, type TarEntry } from '../../agent/tar-header.js';

/** The header bytes tar-stream's packer writes for an entry (its content left out). */
async function tarStreamHeader(e: TarEntry): Promise<Buffer> {
  const pack = tarPack();
  const pax = e.uid > 0o7777777 || e.gid > 0o7777777 ? { uid: String(e.uid), gid: String(e.gid) } : undefined;
  pack.entry(
    {
      name: e.name,
      type: e.type,
      mode: e.mode,
      uid: pax ? 0 : e.uid,
      gid: pax ? 0 : e.gid,
      mtime: new Date(e.mtime * 1000),
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      ...(pax ? { pax } : {}),
    },
    Buffer.alloc(e.type === 'file' ? e.size : 0, 0x61),
  );
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  const all = Buffer.concat(chunks);
  const content = e.type === 'file' ? e.size + tarPadding(e.size) : 0;
  return all.subarray(0, all.length - 1024 - content);
}

/** Reads one archived header back with tar-stream's extractor (what a restore uses). */
async function readBack(e: TarEntry): Promise<Record<string, unknown>> {
  const body = Buffer.alloc(e.type === 'file' ? e.size : 0, 0x61);
  const archive = Buffer.concat([encodeTarHeader(e), body, Buffer.alloc(tarPadding(body.length) + 1024)]);
  const ex = tarExtract();
  ex.end(archive);
  for await (const entry of ex) {
    const h = entry.header;
    const pax = (h.pax ?? {}) as Record<string, string | undefined>;
    entry.resume();
    return {
      name: h.name,
      type: h.type,
      mode: h.mode,
      uid: pax.uid !== undefined ? Number(pax.uid) : h.uid,
      gid: pax.gid !== undefined ? Number(pax.gid) : h.gid,
      size: h.size,
      mtime: (h.mtime?.getTime() ?? 0) / 1000,
      linkname: h.linkname ?? undefined,
    };
  }
  throw new Error('no entry');
}

const base = { mode: 0o644, uid: 1000, gid: 1000, size: 0, mtime: 1_700_000_000 };
const cases: [string, TarEntry][] = [
  ['a short file', { ...base, name: 'a.txt', type: 'file', size: 5 }],
  ['the root', { ...base, name: './', type: 'directory', mode: 0o755 }],
  ['a directory with setgid and sticky bits', { ...base, name: 'd/e/', type: 'directory', mode: 0o3775 }],
  ['a symlink', { ...base, name: 'l', type: 'symlink', linkname: '../a.txt' }],
  ['a non-ASCII link target', { ...base, name: 'l', type: 'symlink', linkname: 'ünï/😀' }],
  ['a long link target (pax)', { ...base, name: 'l', type: 'symlink', linkname: `/${'t'.repeat(150)}` }],
  [
    'a name split into prefix and name',
    { ...base, name: `${'p'.repeat(90)}/${'q'.repeat(90)}`, type: 'file' },
  ],
  ['a long name (pax)', { ...base, name: `${'l'.repeat(120)}/${'n'.repeat(200)}`, type: 'file', size: 3 }],
  ['a non-ASCII name (pax)', { ...base, name: 'ünïcödé näme 😀.txt', type: 'file', size: 11 }],
  [
    'owner ids beyond ustar (pax)',
    { ...base, name: 'big-ids', type: 'file', uid: 3_000_000, gid: 3_000_001 },
  ],
  ['a pax record whose length gains a digit', { ...base, name: `é${'x'.repeat(92)}`, type: 'file' }],
];

describe('tar headers (agent/tar-header.ts)', () => {
  for (const [title, entry] of cases) {
    it(`${title}: the bytes tar-stream writes, and read back as written`, async () => {
      assert.deepEqual(encodeTarHeader(entry), await tarStreamHeader(entry));
      const back = await readBack(entry);
      assert.deepEqual(back, {
        name: entry.name,
        type: entry.type,
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        size: entry.size,
        mtime: entry.mtime,
        linkname: entry.linkname ?? undefined,
      });
    });
  }

  it('gets right what tar-stream got wrong: mode 0, and owner ids from 2^18 to 2^21 - 1 (pax)', async () => {
    const entry: TarEntry = { ...base, name: 'odd', type: 'file', mode: 0, uid: 300_000, gid: 0o777777 };
    const back = await readBack(entry);
    assert.equal(back.mode, 0);
    assert.equal(back.uid, 300_000);
    assert.equal(back.gid, 0o777777);
  });

  it('writes a size of 8 GiB or more in base-256', () => {
    const size = 8 * 1024 ** 3 + 5;
    const block = encodeTarHeader({ ...base, name: 'huge', type: 'file', size });
    assert.equal(block[124], 0x80);
    assert.equal(block.readUIntBE(124 + 6, 6), size);
  });
});
