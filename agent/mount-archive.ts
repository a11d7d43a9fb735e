/**
 * Mounts (plain directory trees) as tar streams, and their restore.
 *
 * Archive format: POSIX ustar with pax extended headers for long or non-ASCII names and link
 * targets, uncompressed (the agent compresses with zstd), readable by GNU tar and bsdtar. The headers
 * are encoded by agent/tar-header.ts, byte for byte as tar-stream's packer (which wrote them before)
 * encodes them; the walk reads file content straight into the buffers it hands to the compressor. The first entry is `./`, the root itself; then the tree, depth
 * first, names sorted, relative to the root with `/` separators. Kept per entry: the type
 * (directory, regular file, symlink), the permission bits including setuid/setgid/sticky
 * (`mode & 0o7777`), numeric owner and group, and mtime in whole seconds (ustar stores seconds;
 * sub-second parts are dropped). Symlinks keep their exact target as `readlink` returns it,
 * absolute or relative, dangling or not.
 *
 * Not kept: hard links (each link is archived as a separate file), sparseness (holes are
 * archived as zeros), extended attributes, ACLs, atimes, sockets, FIFOs and device nodes (skipped and counted), and names that are not valid UTF-8
 * (skipped and counted: names are written as UTF-8).
 *
 * Why not archiver's own `directory()`/`file()`/`symlink()`: archiver rewrites entry names with
 * `sanitizePath` (a backslash becomes `/`, and a leading `word:` is stripped as if it were a Windows
 * drive, so `a:b` is stored as `b`), rewrites symlink targets to relative ones, and gives
 * `symlink()` entries the current time. Why not tar-stream's packer, used here before: a stream, a
 * sink and several chunks and promises per entry cost more CPU than the walk's own file reads.
 *
 * A mount is not snapshotted: a file that changes while it is read is archived with the size it
 * had when opened (cut or padded with zeros, as GNU tar does) and counted in `changed`; a file
 * removed before it is read is counted in `vanished`.
 *
 * Restore ({@link extractMountArchive}): GNU tar extracts into a staging directory inside the mount,
 * reading the archive straight from the artifact's decompressor (the archive does not pass through
 * the agent); the agent checks tar's listing of each member as it comes and the staged tree, then
 * swaps it in. It used tar-stream's extractor in the agent before, which cost two to three times the
 * CPU of `tar -x` (docs/benchmarks-history.md, "Mount restore with GNU tar").
 */
import {
  closeSync,
  constants as fsConstants,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  type Dirent,
  type Stats,
} from 'node:fs';
import {
  chmod,
  chown,
  lchown,
  lstat,
  lutimes,
  mkdir,
  mkdtemp,
  readdir,
  rename,
  rm,
  rmdir,
  stat,
  utimes,
} from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable, type Writable } from 'node:stream';

import {
  ArtifactCorruptError,
  TaskAbortedError,
  ToolFailedError,
  UnsafeArchiveEntryError,
} from '../shared/errors.js';
import type { TreeStats } from '../shared/drill-stats.js';
import { startUnpacker, type ArchiveInput } from './compression.js';
import { encodeTarHeader, tarPadding, type TarEntry } from './tar-header.js';
import { feedTool, feedToolThrough, spawnTool, streamClosed } from './tool-process.js';
import { TreeDigest } from './tree-digest.js';

/** Top-level names envsnap uses inside a mount while restoring; never archived, never restored. */
export const RESERVED_PREFIXES: readonly string[] = ['.envsnap-staging-', '.envsnap-old-'];
const [STAGING_PREFIX, OLD_PREFIX] = ['.envsnap-staging-', '.envsnap-old-'] as const;

/**
 * The archive leaves in buffers of this size: headers and file content are written (read, for the
 * content) straight into the buffer that goes to the compressor, so that a small file costs one
 * `read` into place and a tree of small files a few large pipe writes, not several per entry.
 */
const SLAB_BYTES = 1024 * 1024;
/** The walk gives the event loop a turn at least this often, in milliseconds. */
const YIELD_MS = 10;
/** Reading a mount's file: never through a symlink swapped in, never blocking on a FIFO swapped in. */
const FILE_OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK;
const OUTPUT_HIGH_WATER_MARK = 1024 * 1024;
/** Slabs {@link writeMountArchive} hands to its Writable before it waits for a write to complete. */
const SLABS_IN_FLIGHT = 2;
const END_OF_ARCHIVE_BYTES = 1024;

export interface CreateMountArchiveOptions {
  /**
   * Paths to leave out, as globs matched against each entry's path relative to the root (POSIX
   * separators, no leading `./`): `*` and `?` match within one path component, `**` across
   * components. A pattern without `/` matches a name at any depth (`*.tmp`, `cache`); one with
   * `/` is anchored at the root (`var/cache`, `logs/**`). A matching directory is left out with
   * everything under it.
   */
  exclude?: string[];
  /** Aborting stops the walk, destroys the stream (or the Writable) and rejects `done` with TaskAbortedError. */
  signal?: AbortSignal;
  /** Receives one line per skipped, changed or vanished entry (paths, never content). */
  log?: (message: string) => void;
  /**
   * Restore-drill stats (agent/tree-digest.ts) in `MountArchiveResult.tree`: `hash` adds the
   * SHA-256 of every file's content and of the tree (the walk reads every byte anyway; hashing
   * costs CPU), `counts` only counts, `off` (the default) skips both.
   */
  treeStats?: 'hash' | 'counts' | 'off';
}

export interface MountArchiveResult {
  /** Entries written, the root's `./` included. */
  entries: number;
  /** Bytes of regular-file content written (tar headers and padding not counted). */
  bytes: number;
  /** Sockets, FIFOs, devices and non-UTF-8 names left out. */
  skipped: number;
  /** Files whose size or mtime changed while they were read. */
  changed: number;
  /** Entries that disappeared between listing and reading. */
  vanished: number;
  /** The tree digest of what was archived (see CreateMountArchiveOptions.treeStats); absent when off. */
  tree?: TreeStats;
}

/**
 * Streams the tree under `root` as an uncompressed tar (see the file comment for what is kept).
 *
 * `stream` is a Node Readable; `done` resolves once the consumer has read the whole archive, and
 * rejects when reading the tree fails, when `signal` aborts (TaskAbortedError), or when the consumer
 * destroys `stream` before the end. Memory stays bounded: the walk produces SLAB_BYTES at a time
 * and waits while the consumer is behind (about two slabs buffered). Each slab is a new buffer (a
 * Readable's consumer may keep what it reads): {@link writeMountArchive} writes the same bytes
 * with less CPU where the archive goes into a Writable.
 * Top-level `.envsnap-staging-*` and `.envsnap-old-*` entries (a restore in progress) are skipped.
 */
export function createMountArchive(
  root: string,
  opts: CreateMountArchiveOptions = {},
): { stream: Readable; done: Promise<MountArchiveResult> } {
  const out = new ArchiveStream();
  const stopper = new Stopper();
  // Listening from the start: 'end' may come a tick after the last push.
  let ended = false;
  const consumed = new Promise<void>((resolve) =>
    out.once('end', () => {
      ended = true;
      resolve();
    }),
  );
  out.once('close', () => {
    if (!ended) stopper.stop(new Error('the archive stream was closed before the end'));
  });
  const output: SlabOutput = {
    put: (chunk) => (out.push(chunk) ? undefined : out.nextRead()),
    end: () => {
      out.push(null);
      return consumed;
    },
    destroy: (err) => out.destroy(err),
  };
  const { done } = runWalk(root, output, stopper, opts);
  return { stream: out, done };
}

/**
 * Writes the tree under `root` as an uncompressed tar into `into` (a compressor's stdin), and ends
 * it: the same bytes and result as {@link createMountArchive}, for less CPU. Each slab goes to
 * `into.write` with a callback, and a slab whose write has completed is filled again, so that the
 * walk uses SLABS_IN_FLIGHT + 1 slabs whatever the archive's size, where a stream needs a fresh
 * SLAB_BYTES buffer per slab (fresh memory costs a page fault per 4 KiB, and V8 collects garbage
 * more often as such buffers add up; docs/benchmarks-history.md, "Mount backup: where the agent's
 * CPU goes"). At most SLABS_IN_FLIGHT slabs wait in `into` at once: the walk waits for a write to
 * complete, not for `into`'s buffer to drain, so that it fills the next slab while the consumer
 * takes the last one.
 *
 * `done` resolves once `into` has finished (every byte handed on), and rejects when reading the
 * tree fails, when `signal` aborts (TaskAbortedError), when `stop` is called (with its reason), or
 * when `into` fails or closes before the end; on a failure `into` is destroyed. `written()` is the
 * number of archive bytes handed to `into` so far.
 */
export function writeMountArchive(
  root: string,
  into: Writable,
  opts: CreateMountArchiveOptions = {},
): { done: Promise<MountArchiveResult>; stop: (reason?: Error) => void; written: () => number } {
  const stopper = new Stopper();
  let finished = false;
  into.on('error', (err) => stopper.stop(err));
  into.once('close', () => {
    if (!finished) stopper.stop(new Error('the archive stream was closed before the end'));
  });
  let inFlight = 0;
  let wake: (() => void) | undefined;
  const output: SlabOutput = {
    put: (chunk, reuse) => {
      inFlight++;
      into.write(chunk, (err) => {
        inFlight--;
        if (!err) reuse();
        const w = wake;
        wake = undefined;
        w?.();
      });
      if (inFlight < SLABS_IN_FLIGHT) return undefined;
      return new Promise<void>((resolve) => {
        wake = resolve;
      });
    },
    end: () =>
      new Promise<void>((resolve, reject) =>
        into.end((err?: Error | null) => {
          if (err) return reject(err);
          finished = true;
          resolve();
        }),
      ),
    destroy: () => into.destroy(),
  };
  const { done, walker } = runWalk(root, output, stopper, opts);
  return {
    done,
    stop: (reason) => stopper.stop(reason ?? new TaskAbortedError('mount archive was stopped')),
    written: () => walker.written,
  };
}

/** Where the walk's slabs go: a Readable's buffer, or a Writable. */
interface SlabOutput {
  /**
   * Hands `chunk` (a slab, or its start) to the consumer. `reuse` is called once the consumer is
   * done with the slab's bytes, so that the walk may fill the slab again; never, when the consumer
   * may keep them. Returns a promise when the walk has to wait for the consumer.
   */
  put(chunk: Buffer, reuse: () => void): Promise<void> | undefined;
  /** There are no more slabs; resolves once the consumer has taken every byte. */
  end(): Promise<void>;
  /** Ends the output early, after a failure. */
  destroy(err: Error): void;
}

/** Runs a {@link TreeWalker} into `output` until the end, `opts.signal` or a stop. */
function runWalk(
  root: string,
  output: SlabOutput,
  stopper: Stopper,
  opts: CreateMountArchiveOptions,
): { done: Promise<MountArchiveResult>; walker: TreeWalker } {
  const onAbort = (): void => stopper.stop(new TaskAbortedError('mount archive was stopped'));
  if (opts.signal?.aborted) onAbort();
  else opts.signal?.addEventListener('abort', onAbort, { once: true });
  const walker = new TreeWalker(root, output, stopper, opts);
  const done = (async () => {
    try {
      await walker.run();
      if (walker.digest) walker.result.tree = walker.digest.result();
      return walker.result;
    } catch (err) {
      const reason = stopper.reason ?? err;
      output.destroy(reason as Error);
      throw reason;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  })();
  done.catch(() => {});
  return { done, walker };
}

/** The archive's bytes, pushed by {@link TreeWalker}; `_read` wakes a walk that waits for the consumer. */
class ArchiveStream extends Readable {
  private wake: (() => void) | undefined;

  constructor() {
    super({ highWaterMark: OUTPUT_HIGH_WATER_MARK });
  }

  override _read(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** Resolves at the consumer's next read (after a push returned false). */
  nextRead(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }
}

/** Holds the first reason to stop, and makes every wait give up when it comes. */
class Stopper {
  reason: unknown = undefined;
  /** The rejecters of the waits in progress. */
  private readonly waits = new Set<(err: unknown) => void>();

  stop(err: unknown): void {
    if (this.reason !== undefined) return;
    this.reason = err;
    for (const reject of this.waits) reject(err);
    this.waits.clear();
  }

  check(): void {
    if (this.reason !== undefined) throw this.reason as Error;
  }

  /**
   * `work`, or the reason to stop if it comes first. Not `Promise.race` with one promise that
   * rejects on stop: each race would add a reaction to that promise, which never settles while
   * the archive runs, and so keep every raced promise and its value alive until the end.
   */
  race<T>(work: Promise<T>): Promise<T> {
    if (this.reason !== undefined) return Promise.reject(asError(this.reason));
    return new Promise<T>((resolve, reject) => {
      this.waits.add(reject);
      work.then(
        (value) => {
          this.waits.delete(reject);
          resolve(value);
        },
        (err: unknown) => {
          this.waits.delete(reject);
          reject(asError(err));
        },
      );
    });
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * Walks the tree depth first, names sorted, and writes it into SLAB_BYTES buffers pushed into the
 * output. Every file system call is synchronous (readdir, lstat, readlink, open, fstat, read of at
 * most one slab, close): on a cached tree each costs microseconds, against a thread-pool round
 * trip and a promise per call, and the walk gives the event loop a turn every YIELD_MS and
 * whenever the consumer is behind, so it blocks it for at most one such call past that.
 */
class TreeWalker {
  readonly result: MountArchiveResult = { entries: 0, bytes: 0, skipped: 0, changed: 0, vanished: 0 };
  private readonly exclude: RegExp[];
  private readonly log: (message: string) => void;
  readonly digest: TreeDigest | undefined;
  /** Archive bytes handed to the output so far. */
  written = 0;
  private slab: Buffer = Buffer.allocUnsafe(SLAB_BYTES);
  /** Slabs the output is done with, to fill again. */
  private readonly spare: Buffer[] = [];
  private used = 0;
  private lastTurn = performance.now();

  constructor(
    private readonly root: string,
    private readonly output: SlabOutput,
    private readonly stopper: Stopper,
    opts: CreateMountArchiveOptions,
  ) {
    this.exclude = (opts.exclude ?? []).map(globToRegExp);
    this.log = opts.log ?? (() => {});
    const level = opts.treeStats ?? 'off';
    this.digest = level === 'off' ? undefined : new TreeDigest(level === 'hash');
  }

  async run(): Promise<void> {
    const st = await stat(this.root);
    if (!st.isDirectory()) throw new Error(`mount root ${this.root} is not a directory`);
    await this.putHeader({ name: './', type: 'directory', size: 0, ...meta(st) });
    this.digest?.directory('./');
    await this.walk(this.root, '');
    await this.putZeros(END_OF_ARCHIVE_BYTES);
    await this.flush();
    await this.stopper.race(this.output.end());
  }

  private async walk(dir: string, rel: string): Promise<void> {
    await this.turn();
    let listed: Array<Dirent<Buffer>>;
    try {
      listed = readdirSync(dir, { encoding: 'buffer', withFileTypes: true });
    } catch (err) {
      if (isGone(err)) return void this.vanished(rel);
      throw err;
    }
    listed.sort((a, b) => Buffer.compare(a.name, b.name));
    for (const entry of listed) {
      const bytes = entry.name;
      const name = bytes.toString('utf8');
      if (!Buffer.from(name, 'utf8').equals(bytes)) {
        this.skip(`${rel === '' ? '' : `${rel}/`}${bytes.toString('latin1')}`, 'name is not valid UTF-8');
        continue;
      }
      if (rel === '' && isReserved(name)) continue;
      const path = rel === '' ? name : `${rel}/${name}`;
      if (this.exclude.some((re) => re.test(path))) continue;
      await this.turn();
      const abs = join(dir, name);
      // A regular file by the directory's own record (d_type) needs no lstat: addFile opens it
      // without following a link and takes everything from fstat, and counts it as vanished
      // when it is no longer a regular file by then. Other types, and file systems that do not
      // fill in d_type, take the lstat.
      if (entry.isFile()) {
        await this.addFile(abs, path);
        continue;
      }
      let st: Stats;
      try {
        st = lstatSync(abs);
      } catch (err) {
        if (isGone(err)) {
          this.vanished(path);
          continue;
        }
        throw err;
      }
      if (st.isDirectory()) {
        await this.putHeader({ name: `${path}/`, type: 'directory', size: 0, ...meta(st) });
        this.digest?.directory(`${path}/`);
        await this.walk(abs, path);
      } else if (st.isSymbolicLink()) await this.addSymlink(abs, path, st);
      else if (st.isFile()) await this.addFile(abs, path);
      else this.skip(path, 'not a regular file, directory or symlink');
    }
  }

  private async addSymlink(abs: string, path: string, st: Stats): Promise<void> {
    let target: Buffer;
    try {
      target = readlinkSync(abs, { encoding: 'buffer' });
    } catch (err) {
      if (isGone(err) || (err as NodeJS.ErrnoException).code === 'EINVAL') return void this.vanished(path);
      throw err;
    }
    const linkname = target.toString('utf8');
    if (!Buffer.from(linkname, 'utf8').equals(target))
      return void this.skip(path, 'link target is not valid UTF-8');
    await this.putHeader({ name: path, type: 'symlink', size: 0, linkname, ...meta(st) });
    this.digest?.symlink(path, linkname);
  }

  /**
   * Writes a file's header and content, read straight into the output slabs. A file that shrinks
   * while it is read is padded with zeros to the size it had when opened (GNU tar does the same),
   * one that grows is cut there; both are counted in `changed`.
   */
  private async addFile(abs: string, path: string): Promise<void> {
    let fd: number;
    try {
      fd = openSync(abs, FILE_OPEN_FLAGS);
    } catch (err) {
      if (isGone(err) || (err as NodeJS.ErrnoException).code === 'ELOOP') return void this.vanished(path);
      throw err;
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) return void this.vanished(path); // replaced since it was listed
      const size = st.size;
      await this.putHeader({ name: path, type: 'file', size, ...meta(st) });
      const contentHash = this.digest?.startFile();
      let pos = 0;
      let short = false;
      while (pos < size) {
        if (this.used === this.slab.length) await this.flush();
        const want = Math.min(size - pos, this.slab.length - this.used);
        let got = short ? 0 : readSync(fd, this.slab, this.used, want, pos);
        if (got === 0) {
          short = true; // shrank: pad with zeros to the announced size
          this.slab.fill(0, this.used, this.used + want);
          got = want;
        }
        contentHash?.update(this.slab.subarray(this.used, this.used + got));
        this.used += got;
        pos += got;
      }
      await this.putZeros(tarPadding(size));
      this.result.bytes += size;
      this.digest?.endFile(path, size, contentHash);
      this.noteChanged(fstatSync(fd), st, path, short);
    } finally {
      closeSync(fd);
    }
  }

  private async putHeader(entry: TarEntry): Promise<void> {
    const block = encodeTarHeader(entry);
    let off = 0;
    while (off < block.length) {
      if (this.used === this.slab.length) await this.flush();
      const n = block.copy(this.slab, this.used, off);
      this.used += n;
      off += n;
    }
    this.result.entries++;
  }

  private async putZeros(count: number): Promise<void> {
    let left = count;
    while (left > 0) {
      if (this.used === this.slab.length) await this.flush();
      const n = Math.min(left, this.slab.length - this.used);
      this.slab.fill(0, this.used, this.used + n);
      this.used += n;
      left -= n;
    }
  }

  /** Hands the slab written so far to the output; waits when the consumer is behind. */
  private async flush(): Promise<void> {
    this.stopper.check();
    if (this.used === 0) return;
    const slab = this.slab;
    const chunk = this.used === slab.length ? slab : slab.subarray(0, this.used);
    this.slab = this.spare.pop() ?? Buffer.allocUnsafe(SLAB_BYTES);
    this.used = 0;
    this.written += chunk.length;
    const wait = this.output.put(chunk, () => {
      if (this.spare.length < SLABS_IN_FLIGHT) this.spare.push(slab);
    });
    if (wait) {
      await this.stopper.race(wait);
      this.lastTurn = performance.now();
    }
  }

  /** Checks for a stop, and gives the event loop a turn when the walk has held it for YIELD_MS. */
  private async turn(): Promise<void> {
    this.stopper.check();
    if (performance.now() - this.lastTurn < YIELD_MS) return;
    await this.stopper.race(new Promise<void>((resolve) => setImmediate(resolve)));
    this.lastTurn = performance.now();
  }

  private noteChanged(after: Stats, before: Stats, path: string, short: boolean): void {
    if (short || after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
      this.result.changed++;
      this.log(`mount archive: ${path} changed while it was read`);
    }
  }

  private skip(path: string, why: string): void {
    this.result.skipped++;
    this.log(`mount archive: skipped ${path}: ${why}`);
  }

  private vanished(path: string): void {
    this.result.vanished++;
    this.log(`mount archive: ${path || '.'} vanished while the tree was read`);
  }
}

function meta(st: Stats): Pick<TarEntry, 'mode' | 'mtime' | 'uid' | 'gid'> {
  return { mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000), uid: st.uid, gid: st.gid };
}

function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function isReserved(topLevelName: string): boolean {
  return RESERVED_PREFIXES.some((prefix) => topLevelName.startsWith(prefix));
}

/** Compiles an exclude pattern (see {@link CreateMountArchiveOptions.exclude}). */
export function globToRegExp(pattern: string): RegExp {
  const p = pattern
    .replace(/^(\.\/)+/, '')
    .replace(/^\/+/, '')
    .replace(/\/+$/, '');
  let body = '';
  for (let i = 0; i < p.length; i++) {
    const ch = p.charAt(i);
    if (ch === '*' && p[i + 1] === '*') {
      // `**/` matches zero or more leading components; a bare `**` anything.
      if (p[i + 2] === '/') {
        body += '(?:.*/)?';
        i += 2;
      } else {
        body += '.*';
        i += 1;
      }
    } else if (ch === '*') body += '[^/]*';
    else if (ch === '?') body += '[^/]';
    else body += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(p.includes('/') ? `^${body}$` : `(?:^|/)${body}$`);
}

// ---------------------------------------------------------------------------------------------
// Restore

export interface ExtractMountArchiveOptions {
  /** Aborting kills tar (and the decompressor), removes the staging directory and rejects with TaskAbortedError. */
  signal?: AbortSignal;
}

/** The Debian package of GNU tar, which extracts mount archives; named when `tar` is missing. */
export const TAR_DEBIAN_PACKAGE = 'tar';

interface DirMeta {
  mode: number;
  mtime: Date;
  uid: number;
  gid: number;
}

/**
 * Restores an archive into `root` so that the tree equals the archive: entries not in the archive
 * are removed.
 *
 * `input` is the raw archive, or the artifact as stored with its compression (downloadAndApply's
 * `applyCompressed`): then the decompressor writes straight into tar's stdin, and the archive never
 * passes through the agent ({@link startUnpacker}). Either way the stream must end only once the
 * artifact's size and SHA-256 matched, failing otherwise (downloadAndApply's contract): the swap
 * below starts only after it ended, so a corrupt artifact never reaches the live tree.
 *
 * How: GNU tar (Debian package `tar`) extracts everything into `<root>/.envsnap-staging-<random>`
 * (mode 0700; inside the root so that it works when the root is a mount point and every rename
 * stays on one filesystem). Then the current top-level entries move into
 * `<root>/.envsnap-old-<random>`, the staged ones move up, the root gets the mode, owner and mtime
 * of the archive's `./` entry if it has one, and the old directory is removed. Needs free space for
 * a second copy while it runs. A failure before the swap leaves the live tree untouched; a failure
 * during the swap moves everything back. Nested mount points under the root cannot be moved and
 * make the swap fail (and roll back).
 *
 * tar runs as `tar --extract --file=- --directory=<staging> -vv --block-number --quoting-style=c
 * --numeric-owner --same-owner|--no-same-owner --preserve-permissions --delay-directory-restore`
 * (GNU tar manual: "Options"): owners by number, when running as root (`--no-same-owner`
 * otherwise, as a non-root agent cannot chown); permission bits as stored, mode 0 and
 * setuid/setgid/sticky included; directory modes and mtimes set once the whole archive is in, so
 * that creating children neither changes a directory's mtime afterwards nor needs write permission
 * on a read-only one; symlinks created with their target verbatim (an absolute or `..` target only
 * at the end, through a placeholder file, so that no later member is written through it: GNU
 * tar's `extract_symlink`) and with their owner and mtime. tar itself refuses members with a `..`
 * component, which becomes UnsafeArchiveEntryError here.
 *
 * tar's listing (one line per member, before the member is extracted: type, name and link target
 * as stored, C-quoted) is read as it comes, and the first entry this refuses kills tar: an empty or
 * absolute name (tar would strip the `/` and extract it), a `..` component, a reserved top-level
 * name, a name under an earlier symlink entry (so `a -> d` then `a/f` cannot write through the
 * link) or equal to one, hard links, devices, FIFOs and unknown types, a root entry that is not a
 * directory. The listing's last line says whether the archive ended with its end-of-archive
 * marker (`** Block of NULs **`): a truncated archive without it, or one tar finds corrupt, rejects
 * with ArtifactCorruptError. Then the staged tree is walked (a `readdir` per directory) as a second
 * check: anything but files, directories and symlinks, or a reserved top-level name, is refused.
 * Each refusal is UnsafeArchiveEntryError naming the entry, and removes the staging directory.
 *
 * Killed (kill -9 of the agent): during the extraction, which is where a restore spends its time,
 * the live tree is untouched and only the staging directory is left behind (tar may finish or
 * fail on its own: nothing but the agent moves the staged tree in); the next restore of the mount
 * removes leftover `.envsnap-staging-*` directories first. The swap itself is two renames per
 * top-level entry (milliseconds for a few entries): a kill inside it leaves some top-level entries
 * already moved into `.envsnap-old-*` or the staged ones partly moved in, which a restore run
 * again sets right (the staged tree is complete and the old entries are all in `.envsnap-old-*`).
 * Leftover `.envsnap-old-*` directories are never removed automatically: after such a kill they
 * hold the only copy of the entries moved aside.
 *
 * Resolves with the number of archive entries applied (the root's `./` included). Rejects with
 * ToolMissingError when tar (or the decompressor) is missing, UnsafeArchiveEntryError,
 * ArtifactCorruptError, TaskAbortedError, the input's own error, or ToolFailedError with tar's
 * stderr (e.g. the disk is full).
 */
export async function extractMountArchive(
  input: Readable | ArchiveInput,
  root: string,
  opts: ExtractMountArchiveOptions = {},
): Promise<{ entries: number }> {
  const source: ArchiveInput = input instanceof Readable ? { stream: input } : input;
  if (opts.signal?.aborted) throw new TaskAbortedError('mount restore was stopped');
  await mkdir(root, { recursive: true });
  const rootBefore = await stat(root);
  if (!rootBefore.isDirectory()) throw new Error(`mount root ${root} is not a directory`);
  // Adding and removing the staging directory touches the root's mtime: a failed restore puts it back.
  const putRootTimesBack = (): Promise<void> =>
    utimes(root, rootBefore.atimeMs / 1000, rootBefore.mtimeMs / 1000).catch(() => {});
  await removeLeftoverStaging(root);
  const staging = await mkdtemp(join(root, STAGING_PREFIX));
  let staged: StagedTree;
  try {
    staged = await extractIntoStaging(source, staging, opts.signal);
    opts.signal?.throwIfAborted();
  } catch (err) {
    await removeTree(staging);
    await putRootTimesBack();
    if (opts.signal?.aborted) throw new TaskAbortedError('mount restore was stopped', { cause: err });
    throw err;
  }
  // From here on the swap runs to its end (or rolls back): it is a series of renames.
  try {
    await swapIn(root, staging, staged.topLevelDirs);
  } catch (err) {
    await putRootTimesBack();
    throw err;
  }
  if (staged.rootMeta) await applyMeta(root, staged.rootMeta, { follow: true });
  return { entries: staged.entries };
}

/** What {@link extractIntoStaging} leaves for the swap. */
interface StagedTree {
  /** Archive entries, the root's `./` included. */
  entries: number;
  /** The archive's `./` entry, to give the mount root; absent when the archive has none. */
  rootMeta: DirMeta | undefined;
  /** Top-level directories and their mtimes, to set again after they moved up. */
  topLevelDirs: Map<string, Date>;
}

/** Has GNU tar extract `source` into `staging` and checks what it did (see extractMountArchive). */
async function extractIntoStaging(
  source: ArchiveInput,
  staging: string,
  signal: AbortSignal | undefined,
): Promise<StagedTree> {
  const asRoot = process.getuid?.() === 0;
  const tar = spawnTool(
    'tar',
    [
      '--extract',
      '--file=-',
      `--directory=${staging}`,
      // One line per member, before it is extracted: type, then name and link target as stored.
      '--verbose',
      '--verbose',
      '--block-number',
      '--quoting-style=c',
      '--numeric-owner',
      asRoot ? '--same-owner' : '--no-same-owner',
      '--preserve-permissions',
      '--delay-directory-restore',
    ],
    {
      stdio: ['pipe', 'pipe'],
      signal,
      debianPackage: TAR_DEBIAN_PACKAGE,
      // The listing's and the errors' wording is parsed: tar's own, untranslated.
      env: { LC_ALL: 'C' },
    },
  );
  const listing = new MemberListing(() => tar.kill());
  const stdout = tar.child.stdout!;
  stdout.on('data', (chunk: Buffer) => listing.push(chunk));
  const listed = streamClosed(stdout);
  const fed = source.compression
    ? startUnpacker(source, tar, signal ?? new AbortController().signal).then(
        (unpacker) => feedToolThrough(source.stream, unpacker, tar),
        (err: unknown) => {
          tar.kill();
          throw err;
        },
      )
    : feedTool(source.stream, tar);
  const [extracted] = await Promise.allSettled([fed]);
  await listed;
  listing.finish();
  if (listing.unsafe) throw listing.unsafe;
  if (extracted.status === 'rejected') throw tarFailure(extracted.reason);
  if (!listing.sawEndMarker) {
    throw new ArtifactCorruptError('the mount archive is truncated: it lacks the end-of-archive marker');
  }
  // tar gave the staging directory the archive's `./` entry: that is for the mount root.
  const rootMeta = listing.hasRoot ? dirMeta(await lstat(staging)) : undefined;
  await chmod(staging, 0o700);
  const topLevelDirs = await checkStagedTree(staging, asRoot, signal);
  return { entries: listing.entries, rootMeta, topLevelDirs };
}

function dirMeta(st: Stats): DirMeta {
  return { mode: st.mode & 0o7777, mtime: st.mtime, uid: st.uid, gid: st.gid };
}

/**
 * What a failure of tar means: a `..` member it refused (UnsafeArchiveEntryError), a corrupt or
 * cut archive (ArtifactCorruptError), or else its own error as is (ToolFailedError with its stderr).
 */
function tarFailure(err: unknown): unknown {
  if (!(err instanceof ToolFailedError) || !err.message.startsWith('tar ')) return err;
  const dotDot = /tar: (.*): Member name contains '\.\.'/.exec(err.message);
  if (dotDot) return new UnsafeArchiveEntryError(unquoteListed(dotDot[1]!), 'the path contains ".."');
  const corrupt =
    /tar: (Unexpected EOF in archive|This does not look like a tar archive|Skipping to next header|Damaged tar archive|Malformed extended header.*|Archive contains .*|Archive value .*|Archive signed base-64 .*|A lone zero block.*)/.exec(
      err.message,
    );
  if (corrupt) {
    const why = corrupt[1]!;
    return new ArtifactCorruptError(
      `the mount archive is corrupt: ${why.charAt(0).toLowerCase()}${why.slice(1)}`,
      { cause: err },
    );
  }
  return err;
}

/**
 * Reads tar's `-vv --block-number --quoting-style=c` listing line by line and checks each member
 * (see extractMountArchive). A line is `block <n>: <type><mode> <uid>/<gid> <size> <date> <time>
 * "<name>"`, with ` -> "<target>"` for a symlink and ` link to "<target>"` for a hard link, or
 * `block <n>: ** Block of NULs **` at the end-of-archive marker (`** End of File **` when the
 * archive ends without one): GNU tar's src/list.c `print_header` and `read_and`.
 */
class MemberListing {
  entries = 0;
  hasRoot = false;
  sawEndMarker = false;
  /** The first entry refused; set once. */
  unsafe: UnsafeArchiveEntryError | undefined;
  /** Symlinks the archive made so far, as relative paths. */
  private readonly symlinks = new Set<string>();
  private carry = '';

  /** @param onUnsafe called once, at the first entry refused (it stops tar). */
  constructor(private readonly onUnsafe: () => void) {}

  push(chunk: Buffer): void {
    // latin1: one character per byte, so that a name's bytes come back exactly (readCQuoted).
    const lines = (this.carry + chunk.toString('latin1')).split('\n');
    this.carry = lines.pop() ?? '';
    for (const line of lines) this.line(line);
  }

  finish(): void {
    if (this.carry !== '') this.line(this.carry);
    this.carry = '';
  }

  private line(line: string): void {
    if (this.unsafe) return;
    try {
      this.check(line);
    } catch (err) {
      // Never thrown on: this runs in a 'data' handler.
      this.unsafe =
        err instanceof UnsafeArchiveEntryError
          ? err
          : new UnsafeArchiveEntryError(line, `tar's listing of it could not be read: ${String(err)}`);
      this.onUnsafe();
    }
  }

  private check(line: string): void {
    // A member's line may begin with a prefix of its own and then the marker's (on garbage: `block 1: block 9: ** End of File **`).
    const body = line.replace(/^(block \d+: )+/, '');
    if (body.startsWith('** Block of NULs **')) {
      this.sawEndMarker = true;
      return;
    }
    if (body.startsWith('** ')) return;
    const quote = body.indexOf('"');
    if (quote < 0) throw new UnsafeArchiveEntryError(body, 'tar listed a member envsnap cannot read');
    const [name, after] = readCQuoted(body, quote);
    const type = body.charAt(0);
    this.entries++;
    if (type === 'h') throw new UnsafeArchiveEntryError(name, 'hard links are not restored');
    const special = ({ c: 'character-device', b: 'block-device', p: 'fifo' } as Record<string, string>)[type];
    if (special) throw new UnsafeArchiveEntryError(name, `${special} entries are not restored`);
    if (type !== '-' && type !== 'C' && type !== 'd' && type !== 'l') {
      throw new UnsafeArchiveEntryError(name, `unsupported entry type ${type}`);
    }
    const parts = entryParts(name);
    if (parts.length === 0) {
      if (type !== 'd') throw new UnsafeArchiveEntryError(name, 'the root entry must be a directory');
      this.hasRoot = true;
      return;
    }
    if (isReserved(parts[0]!)) throw new UnsafeArchiveEntryError(name, 'the name is reserved for envsnap');
    const rel = parts.join('/');
    if (this.symlinks.size > 0) {
      let prefix = '';
      for (let i = 0; i < parts.length - 1; i++) {
        prefix = i === 0 ? parts[0]! : `${prefix}/${parts[i]!}`;
        if (this.symlinks.has(prefix))
          throw new UnsafeArchiveEntryError(name, 'a parent directory is a symlink');
      }
      // tar would replace a symlink it made late (through a placeholder) after this entry.
      if (this.symlinks.has(rel))
        throw new UnsafeArchiveEntryError(name, 'an earlier entry made it a symlink');
    }
    if (type === 'l') {
      const arrow = body.indexOf(' -> "', after);
      const target = arrow === after ? readCQuoted(body, arrow + 4)[0] : '';
      if (target === '') throw new UnsafeArchiveEntryError(name, 'symlink without a target');
      this.symlinks.add(rel);
    }
  }
}

/** C escapes of GNU's quotearg `c` style, by the letter after the backslash. */
const C_ESCAPES: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11 };

/**
 * Reads the C-quoted string that starts at `s[at]` (a `"`) in a line read as latin1; returns it
 * decoded as UTF-8, and the index after its closing quote.
 */
function readCQuoted(s: string, at: number): [string, number] {
  const bytes: number[] = [];
  let i = at + 1;
  while (i < s.length) {
    const c = s.charAt(i);
    if (c === '"') return [Buffer.from(bytes).toString('utf8'), i + 1];
    if (c !== '\\') {
      bytes.push(s.charCodeAt(i) & 0xff);
      i++;
      continue;
    }
    const e = s.charAt(i + 1);
    const octal = /^[0-7]{1,3}/.exec(s.slice(i + 1, i + 4));
    if (octal) {
      bytes.push(parseInt(octal[0], 8) & 0xff);
      i += 1 + octal[0].length;
    } else {
      bytes.push(C_ESCAPES[e] ?? e.charCodeAt(0) & 0xff);
      i += 2;
    }
  }
  throw new UnsafeArchiveEntryError(s, 'tar listed a member envsnap cannot read');
}

/** A name as tar's error messages quote it (`"name"` in the `c` style), unquoted. */
function unquoteListed(name: string): string {
  return name.startsWith('"') ? readCQuoted(name, 0)[0] : name;
}

/**
 * Walks the staged tree (a `readdir` per directory, no `stat` per file): refuses anything but
 * files, directories and symlinks, and reserved top-level names; returns the top-level
 * directories' mtimes. A directory a non-root agent cannot read (tar gave it its archived mode,
 * e.g. 0) is not walked: the listing's checks covered its members.
 */
async function checkStagedTree(
  staging: string,
  asRoot: boolean,
  signal: AbortSignal | undefined,
): Promise<Map<string, Date>> {
  const top = new Map<string, Date>();
  const pending = [''];
  let lastTurn = performance.now();
  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    let list: Dirent[];
    try {
      list = readdirSync(rel === '' ? staging : join(staging, rel), { withFileTypes: true });
    } catch (err) {
      if (!asRoot && (err as NodeJS.ErrnoException).code === 'EACCES') continue;
      throw err;
    }
    for (const d of list) {
      const path = rel === '' ? d.name : `${rel}/${d.name}`;
      if (rel === '' && isReserved(d.name)) {
        throw new UnsafeArchiveEntryError(path, 'the name is reserved for envsnap');
      }
      if (d.isDirectory()) {
        pending.push(path);
        if (rel === '') top.set(d.name, lstatSync(join(staging, path)).mtime);
      } else if (!d.isFile() && !d.isSymbolicLink()) {
        throw new UnsafeArchiveEntryError(path, 'only files, directories and symlinks are restored');
      }
    }
    if (performance.now() - lastTurn >= YIELD_MS) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      signal?.throwIfAborted();
      lastTurn = performance.now();
    }
  }
  return top;
}

/**
 * Removes a staging directory, or the old tree a swap moved aside. Their directories may have the
 * archived modes (0, or no write permission), which a non-root agent cannot remove from: those get
 * u+rwx first.
 */
async function removeTree(top: string): Promise<void> {
  try {
    await rm(top, { recursive: true, force: true });
    return;
  } catch (err) {
    if (process.getuid?.() === 0) throw err;
  }
  const dirs = [top];
  for (let dir = dirs.pop(); dir !== undefined; dir = dirs.pop()) {
    await chmod(dir, 0o700).catch(() => {});
    const list = await readdir(dir, { withFileTypes: true }).catch(() => [] as Dirent[]);
    for (const d of list) if (d.isDirectory()) dirs.push(join(dir, d.name));
  }
  await rm(top, { recursive: true, force: true });
}

/**
 * Sets a directory's owner (when running as root), mode and mtime. `follow` is for the mount root,
 * which may be configured as a symlink to the real directory; staged directories are never links.
 */
async function applyMeta(path: string, m: DirMeta, { follow }: { follow: boolean }): Promise<void> {
  if (process.getuid?.() === 0) await (follow ? chown : lchown)(path, m.uid, m.gid);
  await chmod(path, m.mode);
  await utimes(path, m.mtime, m.mtime);
}

/** Splits an archive entry name into safe components; [] is the root. Throws UnsafeArchiveEntryError. */
export function entryParts(name: string): string[] {
  if (name === '') throw new UnsafeArchiveEntryError(name, 'empty name');
  if (name.includes('\0')) throw new UnsafeArchiveEntryError(name, 'the name contains a NUL byte');
  if (name.startsWith('/')) throw new UnsafeArchiveEntryError(name, 'absolute path');
  const parts = name.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw new UnsafeArchiveEntryError(name, 'the path contains ".."');
  return parts;
}

/** Removes `.envsnap-staging-*` directories that a killed restore left in `root`. */
async function removeLeftoverStaging(root: string): Promise<void> {
  for (const name of await readdir(root)) {
    if (!name.startsWith(STAGING_PREFIX)) continue;
    const st = await lstat(join(root, name)).catch(() => undefined);
    if (st?.isDirectory()) await rm(join(root, name), { recursive: true, force: true });
  }
}

/** Moves the staged tree into `root` in place of its current content (see extractMountArchive). */
async function swapIn(root: string, staging: string, topLevelDirs: Map<string, Date>): Promise<void> {
  const old = await mkdtemp(join(root, OLD_PREFIX));
  const keep = new Set([basename(staging), basename(old)]);
  const current = (await readdir(root)).filter((name) => !keep.has(name) && !isReserved(name));
  const staged = await readdir(staging);
  const moved: string[] = [];
  const placed: string[] = [];
  try {
    for (const name of current) {
      await rename(join(root, name), join(old, name));
      moved.push(name);
    }
    for (const name of staged) {
      await rename(join(staging, name), join(root, name));
      placed.push(name);
    }
  } catch (err) {
    for (const name of placed.reverse()) await rename(join(root, name), join(staging, name)).catch(() => {});
    for (const name of moved.reverse()) await rename(join(old, name), join(root, name)).catch(() => {});
    await rm(staging, { recursive: true, force: true });
    // Only an empty `old` goes: if a rename back failed, it holds the only copy of that data.
    await rmdir(old).catch(() => {});
    throw err;
  }
  // Moving a directory to a new parent may touch its mtime on some filesystems: set it again.
  for (const [name, mtime] of topLevelDirs) await lutimes(join(root, name), mtime, mtime).catch(() => {});
  await removeTree(old);
  await rmdir(staging);
}
