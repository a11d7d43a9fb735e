/**
 * Tar entry headers as the mount archive writes them (agent/mount-archive.ts): POSIX ustar, with a
 * pax extended header (typeflag `x`) in front of an entry whose name or link target does not fit
 * ustar or whose owner ids are too large. The bytes are those tar-stream 3's packer writes for the
 * same entry (mount archives were written with it before, and are still read with its extractor),
 * so an archive's bytes do not depend on which of the two wrote it, except where tar-stream was wrong:
 * it wrote mode 0 as 0644/0755, and owner ids from 2^18 to 2^21 - 1 as 777777 (its octal fields
 * hold six digits); here mode 0 stays 0 and those ids go into pax records.
 *
 * Rules, from tar-stream's `headers.encode`: a name that is ASCII and splits at a `/` into a
 * prefix of at most 155 bytes and a rest of at most 100 bytes is stored in the ustar fields; a link
 * target up to 100 bytes is stored as UTF-8 in the linkname field. Otherwise the pax header holds
 * `path` (and `linkpath`, and `uid`/`gid`) and the ustar header that follows is named `PaxHeader`.
 * Numeric fields are zero-padded octal followed by a space; a size above 8 GiB - 1 is base-256.
 */

/** One entry of a mount archive, as it goes into its header. */
export interface TarEntry {
  /** Path relative to the archive root, `/` separators; a directory's ends with `/`. */
  name: string;
  type: 'file' | 'directory' | 'symlink';
  /** Permission bits, `mode & 0o7777`. */
  mode: number;
  uid: number;
  gid: number;
  /** Content bytes (0 for directories and symlinks). */
  size: number;
  /** Modification time, whole seconds since the epoch. */
  mtime: number;
  /** A symlink's target, exactly as `readlink` returned it. */
  linkname?: string;
}

const BLOCK = 512;
/** The largest owner id the six octal digits of a ustar field hold. */
const MAX_USTAR_ID = 0o777777;
const TYPEFLAG: Record<TarEntry['type'] | 'pax', number> = {
  file: 0x30, // '0'
  symlink: 0x32, // '2'
  directory: 0x35, // '5'
  pax: 0x78, // 'x'
};

/** Zero bytes to pad `size` bytes of content to a whole 512-byte block. */
export function tarPadding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/**
 * Encodes the header block(s) of `entry`: one 512-byte ustar block, or a pax header block, its
 * records padded to a block, and the ustar block. Content and its padding are the caller's.
 */
export function encodeTarHeader(entry: TarEntry): Buffer {
  const bigIds = entry.uid > MAX_USTAR_ID || entry.gid > MAX_USTAR_ID;
  const split = bigIds ? null : splitName(entry.name);
  const linkFits = entry.linkname === undefined || Buffer.byteLength(entry.linkname) <= 100;
  if (split && linkFits) {
    const block = Buffer.alloc(BLOCK);
    writeUstar(block, entry, split.name, split.prefix, entry.linkname, entry.uid, entry.gid, entry.size);
    return block;
  }
  let records = record('path', entry.name);
  if (entry.linkname) records += record('linkpath', entry.linkname);
  if (bigIds) records += record('uid', String(entry.uid)) + record('gid', String(entry.gid));
  const pax = Buffer.from(records, 'utf8');
  const paxBlocks = pax.length + tarPadding(pax.length);
  const out = Buffer.alloc(BLOCK + paxBlocks + BLOCK);
  const linkname = entry.linkname ? 'PaxHeader' : undefined;
  const [uid, gid] = bigIds ? [0, 0] : [entry.uid, entry.gid];
  writeUstar(out, { ...entry, type: 'file' }, 'PaxHeader', '', linkname, uid, gid, pax.length, TYPEFLAG.pax);
  pax.copy(out, BLOCK);
  writeUstar(out.subarray(BLOCK + paxBlocks), entry, 'PaxHeader', '', linkname, uid, gid, entry.size);
  return out;
}

/** A pax record: `<length> <key>=<value>\n`, the length counting itself (POSIX pax). */
function record(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const len = Buffer.byteLength(body);
  let digits = String(len).length;
  if (len + digits >= 10 ** digits) digits++;
  return `${len + digits}${body}`;
}

/** The ustar name and prefix fields for an ASCII name, or null when it needs a pax header. */
function splitName(name: string): { name: string; prefix: string } | null {
  // ASCII only: a UTF-8 name goes into pax (length in characters equals length in bytes).
  if (Buffer.byteLength(name) !== name.length) return null;
  let rest = name;
  let prefix = '';
  while (rest.length > 100) {
    const i = rest.indexOf('/');
    if (i === -1) return null;
    prefix += prefix ? `/${rest.slice(0, i)}` : rest.slice(0, i);
    rest = rest.slice(i + 1);
  }
  if (prefix.length > 155) return null;
  return { name: rest, prefix };
}

function writeUstar(
  block: Buffer,
  entry: TarEntry,
  name: string,
  prefix: string,
  linkname: string | undefined,
  uid: number,
  gid: number,
  size: number,
  typeflag: number = TYPEFLAG[entry.type],
): void {
  block.write(name, 0, 100, 'utf8');
  octal(block, 100, entry.mode & 0o7777, 6);
  octal(block, 108, uid, 6);
  octal(block, 116, gid, 6);
  if (size.toString(8).length > 11) {
    // base-256: 0x80, then the size big-endian in the remaining 11 bytes
    block[124] = 0x80;
    let n = size;
    for (let i = 11; i > 0; i--) {
      block[124 + i] = n % 256;
      n = Math.floor(n / 256);
    }
  } else octal(block, 124, size, 11);
  octal(block, 136, entry.mtime, 11);
  block[156] = typeflag;
  if (linkname) block.write(linkname, 157, 100, 'utf8');
  block.write('ustar\u000000', 257, 8, 'latin1');
  octal(block, 329, 0, 6); // devmajor
  octal(block, 337, 0, 6); // devminor
  if (prefix) block.write(prefix, 345, 155, 'utf8');
  let sum = 8 * 0x20; // the checksum field counts as spaces
  for (let i = 0; i < 148; i++) sum += block[i]!;
  for (let i = 156; i < BLOCK; i++) sum += block[i]!;
  octal(block, 148, sum, 6);
}

/** `digits` zero-padded octal digits then a space; all sevens when the value does not fit. */
function octal(block: Buffer, offset: number, value: number, digits: number): void {
  const s = value.toString(8);
  const text = s.length > digits ? '7'.repeat(digits) : s.padStart(digits, '0');
  block.write(`${text} `, offset, digits + 1, 'latin1');
}
