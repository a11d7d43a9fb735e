import { cpus } from 'node:os';
import { InvalidArgumentError } from '../shared/errors.js';
import { spawnTool, toolOnPath } from './tool-process.js';

/** Compression of artifacts; recorded per artifact in the manifest. */
export type CompressionName = 'zstd' | 'gzip';

const PIPES = ['pipe', 'pipe'] as const;

/** File name suffix for each compression. */
export const SUFFIX: Record<CompressionName, string> = { zstd: '.zst', gzip: '.gz' };

export interface CompressionOptions {
  /** zstd level, 1-19. */
  zstdLevel: number;
  /** zstd worker threads; 0 = one per core. */
  zstdThreads: number;
}

function check(name: string): CompressionName {
  if (name === 'zstd' || name === 'gzip') return name;
  throw new InvalidArgumentError(`unknown compression "${name}"`, { hint: 'use zstd or gzip' });
}

/**
 * Starts a compressor process: raw bytes into `stdin`, compressed out of `stdout`.
 *
 * zstd runs `zstd -T<threads> -<level>` (every core by default: the zstd
 * manual's -T0). gzip uses `pigz` (parallel, output readable by gunzip) when it
 * is installed, and falls back to single-threaded `gzip`.
 *
 * @throws ToolMissingError naming the Debian package when the tool is absent.
 */
export async function startCompressor(name: string, opts: CompressionOptions, signal?: AbortSignal) {
  const c = check(name);
  if (c === 'zstd') {
    return spawnTool('zstd', ['-q', '-c', `-${opts.zstdLevel}`, `-T${opts.zstdThreads}`], {
      signal,
      debianPackage: 'zstd',
      stdio: PIPES,
    });
  }
  if (await toolOnPath('pigz')) {
    return spawnTool('pigz', ['-c', '-p', String(Math.max(1, cpus().length))], {
      signal,
      debianPackage: 'pigz',
      stdio: PIPES,
    });
  }
  return spawnTool('gzip', ['-c'], { signal, debianPackage: 'gzip', stdio: PIPES });
}

/**
 * Starts a decompressor process for an artifact's compression.
 *
 * @throws ToolMissingError naming the Debian package when the tool is absent.
 */
export async function startDecompressor(name: string, signal?: AbortSignal) {
  const c = check(name);
  if (c === 'zstd')
    return spawnTool('zstd', ['-q', '-d', '-c'], { signal, debianPackage: 'zstd', stdio: PIPES });
  if (await toolOnPath('pigz'))
    return spawnTool('pigz', ['-d', '-c'], { signal, debianPackage: 'pigz', stdio: PIPES });
  return spawnTool('gzip', ['-d', '-c'], { signal, debianPackage: 'gzip', stdio: PIPES });
}
