import { cpus } from 'node:os';
import type { Readable } from 'node:stream';

import { InvalidArgumentError } from '../shared/errors.js';
import { spawnTool, toolOnPath, type ToolProcess, type ToolStdio } from './tool-process.js';

/** Compression of artifacts; recorded per artifact in the manifest. */
export type CompressionName = 'zstd' | 'gzip';

/** The compressor's stdout: a pipe the agent reads, or a file's descriptor it writes itself. */
export type CompressorOutput = 'pipe' | number;

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

/** A running compressor: raw bytes into `child.stdin`, compressed bytes out of `child.stdout`. */
export interface Compressor extends ToolProcess {
  /**
   * The exact number of raw (uncompressed) bytes the compressor read, once {@link ToolProcess.wait}
   * resolved: zstd prints it in its summary line (`-vv` prints sizes in bytes, unscaled). Undefined
   * for gzip: neither pigz nor gzip reports it for a stream, and the gzip trailer holds it only
   * modulo 4 GiB (RFC 1952, ISIZE).
   */
  rawBytes(): number | undefined;
}

/** zstd's summary line at `-vv` holds `(613431234 B => 304312345 B, …)`: raw and compressed bytes. */
const ZSTD_SUMMARY = /\(\s*(\d+) B =>\s*(\d+) B,/;

/**
 * Starts a compressor process: raw bytes into `stdin`, compressed out of `stdout`.
 *
 * zstd runs `zstd -vv -c -<level> -T<threads>` (every core by default: the zstd manual's -T0);
 * `-vv` only adds a few lines on stderr, among them the exact raw size ({@link Compressor.rawBytes}).
 * gzip uses `pigz` (parallel, output readable by gunzip) when it is installed, and falls back to
 * single-threaded `gzip`.
 *
 * @param threads compressor threads for this artifact, overriding `opts.zstdThreads` (zstd) and the
 *   core count (pigz); 0 or undefined: the configured default.
 * @param output the compressor's stdout: `'pipe'` (`child.stdout`), or a file descriptor it writes
 *   to (a storage file; `child.stdout` is then null).
 * @throws ToolMissingError naming the Debian package when the tool is absent.
 */
export async function startCompressor(
  name: string,
  opts: CompressionOptions,
  signal?: AbortSignal,
  threads?: number,
  output: CompressorOutput = 'pipe',
): Promise<Compressor> {
  const c = check(name);
  const stdio = ['pipe', output] as const;
  if (c === 'zstd') {
    let raw: number | undefined;
    const proc = spawnTool('zstd', ['-vv', '-c', `-${opts.zstdLevel}`, `-T${threads || opts.zstdThreads}`], {
      signal,
      debianPackage: 'zstd',
      stdio,
      onStderrLine: (line) => {
        const m = ZSTD_SUMMARY.exec(line);
        if (m) raw = Number(m[1]);
      },
    });
    return { ...proc, rawBytes: () => raw };
  }
  const unknown = { rawBytes: () => undefined };
  if (await toolOnPath('pigz')) {
    const proc = spawnTool('pigz', ['-c', '-p', String(threads || Math.max(1, cpus().length))], {
      signal,
      debianPackage: 'pigz',
      stdio,
    });
    return { ...proc, ...unknown };
  }
  return { ...spawnTool('gzip', ['-c'], { signal, debianPackage: 'gzip', stdio }), ...unknown };
}

/**
 * How many compressor threads one of `running` concurrent compressions (this one included) gets
 * on `cores` cores: every core when it runs alone (0: the default, zstd's -T0), else an equal share,
 * at least one. N compressors with a worker per core each on a small machine oversubscribe it: on 2
 * cores four concurrent `zstd -T0 -3` took 13.6-15.3 s and four `-T1` 5.0-10.8 s for the same input.
 */
export function threadShare(running: number, cores: number = cpus().length): number {
  return running <= 1 ? 0 : Math.max(1, Math.floor(cores / running));
}

/**
 * Starts a decompressor process for an artifact's compression: compressed bytes into
 * `child.stdin`, raw bytes out of `child.stdout`, or straight into `output`.
 *
 * @param output the decompressor's stdout: `'pipe'` (`child.stdout`, the default), or another
 *   process's stdin (a stream backed by a pipe: the raw bytes then go from process to process and
 *   never enter the agent; the caller closes its own end of that pipe).
 * @throws ToolMissingError naming the Debian package when the tool is absent.
 */
export async function startDecompressor(
  name: string,
  signal?: AbortSignal,
  output: ToolStdio = 'pipe',
): Promise<ToolProcess> {
  const c = check(name);
  const stdio = ['pipe', output] as const;
  if (c === 'zstd') return spawnTool('zstd', ['-q', '-d', '-c'], { signal, debianPackage: 'zstd', stdio });
  if (await toolOnPath('pigz'))
    return spawnTool('pigz', ['-d', '-c'], { signal, debianPackage: 'pigz', stdio });
  return spawnTool('gzip', ['-d', '-c'], { signal, debianPackage: 'gzip', stdio });
}

/** What a restore or a drill reads: the raw archive, or the artifact as stored with its compression. */
export interface ArchiveInput {
  stream: Readable;
  /** The stream's compression; absent: the stream is the raw archive. */
  compression?: string;
}

/**
 * Starts the process that turns `input`'s bytes into the archive for `tool` (spawned with stdin
 * piped): the artifact's decompressor, or `cat` for a raw archive, with `tool`'s stdin as its
 * stdout. The agent's own end of that pipe is closed, so the archive goes from process to
 * process (`tool` sees its end when the unpacker exits). Rejects with ToolMissingError.
 */
export async function startUnpacker(
  input: ArchiveInput,
  tool: ToolProcess,
  signal: AbortSignal,
): Promise<ToolProcess> {
  const into = tool.child.stdin;
  if (!into) throw new Error('the archive reader started without a stdin pipe');
  try {
    return input.compression
      ? await startDecompressor(input.compression, signal, into)
      : spawnTool('cat', [], { stdio: ['pipe', into], signal, debianPackage: 'coreutils' });
  } finally {
    into.destroy(); // the unpacker holds the pipe now
  }
}
