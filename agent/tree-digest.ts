/**
 * The tree digest of a mount (restore-drill stats, shared/drill-stats.ts `TreeStats`): counts of
 * files, directories (the root included) and symlinks, bytes of file content, and a SHA-256 over
 * one record per entry, in archive order (depth first, names sorted bytewise):
 *
 *     d NUL <path> NUL                         a directory (the root is ".")
 *     l NUL <path> NUL <link target> NUL       a symlink
 *     f NUL <path> NUL <size> NUL <sha256> NUL a regular file, its content's hex SHA-256
 *
 * Paths are relative to the root with `/` separators, UTF-8. Modes, owners and times are not
 * part of it: the digest says the content restores, not the metadata. Computed by
 * agent/mount-archive.ts from the bytes it writes into the archive, so it describes the archive
 * exactly even when files change while they are read; a drill recomputes it by archiving the
 * restored scratch tree the same way.
 */
import { createHash, type Hash } from 'node:crypto';

import type { TreeStats } from '../shared/drill-stats.js';

export class TreeDigest {
  private readonly hash = createHash('sha256');
  private readonly stats: Omit<TreeStats, 'sha256'> = { files: 0, directories: 0, symlinks: 0, bytes: 0 };

  /** @param withHash false: counts only (`sha256` stays ''), no content is hashed. */
  constructor(readonly withHash: boolean) {}

  /** A directory; `path` as archived (`./` for the root, `a/b/` for the rest). */
  directory(path: string): void {
    this.stats.directories++;
    if (this.withHash) this.record('d', normalize(path));
  }

  symlink(path: string, target: string): void {
    this.stats.symlinks++;
    if (this.withHash) this.record('l', path, target);
  }

  /** A whole file's content at once. */
  file(path: string, body: Buffer): void {
    const h = this.startFile();
    h?.update(body);
    this.endFile(path, body.length, h);
  }

  /** For a streamed file: a hash to update with each chunk, then {@link endFile}. Undefined without hashing. */
  startFile(): Hash | undefined {
    return this.withHash ? createHash('sha256') : undefined;
  }

  endFile(path: string, size: number, h: Hash | undefined): void {
    this.stats.files++;
    this.stats.bytes += size;
    if (h) this.record('f', path, String(size), h.digest('hex'));
  }

  result(): TreeStats {
    return { ...this.stats, sha256: this.withHash ? this.hash.copy().digest('hex') : '' };
  }

  private record(...fields: string[]): void {
    for (const f of fields) this.hash.update(f + '\0', 'utf8');
  }
}

function normalize(path: string): string {
  if (path === './' || path === '.') return '.';
  return path.endsWith('/') ? path.slice(0, -1) : path;
}
