/**
 * A small wrapper around `child_process.spawn` for the external tools envsnap drives
 * (mariadb-dump, pg_dump, redis-cli, ...).
 *
 * What it adds to `spawn`: a missing binary becomes {@link ToolMissingError} naming the Debian
 * package; a non-zero exit becomes {@link ToolFailedError} carrying the last 16 KiB of the tool's
 * stderr; an aborted task kills the tool with SIGKILL and fails with {@link TaskAbortedError}.
 * Secrets never go on the command line: callers pass them through `env` (e.g. `PGPASSWORD`,
 * `REDISCLI_AUTH`) or an option file, and error messages carry only the command name.
 */
import { spawn, type ChildProcess, type StdioNull, type StdioPipe } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { Writable, type Readable, type Stream, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';

import { TaskAbortedError, ToolFailedError, ToolMissingError } from '../shared/errors.js';

/** How much of a tool's stderr is kept for error messages, in bytes. */
export const STDERR_TAIL_BYTES = 16 * 1024;

/** Largest stdout {@link runTool} collects, in bytes; it is meant for small outputs such as listings. */
export const RUN_TOOL_MAX_STDOUT = 8 * 1024 * 1024;

/**
 * A stdin or stdout disposition: `'pipe'` (the default for stdout), `'ignore'`, `'inherit'`, an fd, or
 * a stream backed by one (e.g. another child's stdin pipe: the tool then writes straight into that
 * process, and the bytes never pass through the agent).
 */
export type ToolStdio = StdioNull | StdioPipe | number | Stream;

export interface SpawnToolOptions {
  /**
   * Variables added to (or overriding) the agent's own environment for this child only.
   * This is where secrets go (`PGPASSWORD`, `REDISCLI_AUTH`): the environment of a process is
   * readable only by its owner and root, unlike its argv.
   */
  env?: Record<string, string | undefined>;
  /** `[stdin, stdout]`; default `['ignore', 'pipe']`. stderr is always piped and kept as a tail. */
  stdio?: readonly [ToolStdio, ToolStdio];
  /** When aborted, the tool is killed with SIGKILL and `wait()` rejects with TaskAbortedError. */
  signal?: AbortSignal;
  /** The Debian package that provides `cmd`, named in ToolMissingError's hint. */
  debianPackage: string;
  /** Called with each complete line of stderr (without the newline), e.g. to count psql errors. */
  onStderrLine?: (line: string) => void;
  /** Working directory of the child. */
  cwd?: string;
  /** The tool's name in errors when `cmd` is a path (e.g. `psql` for `/usr/lib/postgresql/15/bin/psql`). */
  name?: string;
}

export interface ToolProcess {
  /** The child; `child.stdin` / `child.stdout` are set when piped. */
  child: ChildProcess;
  /**
   * Resolves when the tool exited with status 0 and its stderr is drained.
   * Rejects with ToolMissingError (binary not found), ToolFailedError (non-zero exit or killed by a
   * signal; message has the stderr tail), or TaskAbortedError (the `signal` was aborted).
   * The same promise is returned on every call.
   */
  wait(): Promise<void>;
  /** Sends SIGKILL if the tool still runs. Safe to call more than once. */
  kill(): void;
}

/**
 * Starts `cmd args...` without a shell.
 *
 * Errors are reported through `wait()` only (never thrown synchronously), so callers can hand
 * `child.stdout` on first and await the outcome later. EPIPE on the child's stdin (the tool
 * exited before reading all its input) is swallowed here: the tool's exit status tells the story.
 */
export function spawnTool(cmd: string, args: readonly string[], opts: SpawnToolOptions): ToolProcess {
  const [stdin, stdout] = opts.stdio ?? ['ignore', 'pipe'];
  const name = opts.name ?? cmd;
  const child = spawn(cmd, args, {
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
    stdio: [stdin, stdout, 'pipe'],
    cwd: opts.cwd,
  });
  child.stdin?.on('error', () => {});

  const tail = new TailBuffer(STDERR_TAIL_BYTES);
  let partialLine = '';
  const decoder = new StringDecoder('utf8');
  const onLine = opts.onStderrLine;
  const stderrDone = new Promise<void>((resolve) => {
    if (!child.stderr) return resolve();
    child.stderr.on('data', (chunk: Buffer) => {
      tail.push(chunk);
      if (onLine) {
        const lines = (partialLine + decoder.write(chunk)).split('\n');
        partialLine = lines.pop() ?? '';
        for (const line of lines) onLine(line);
      }
    });
    child.stderr.on('error', () => resolve());
    child.stderr.on('close', () => {
      if (onLine && partialLine) onLine(partialLine);
      resolve();
    });
  });

  let aborted = false;
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      child.kill('SIGKILL');
    }
  };
  const onAbort = (): void => {
    aborted = true;
    kill();
  };
  if (opts.signal?.aborted) onAbort();
  else opts.signal?.addEventListener('abort', onAbort, { once: true });

  const done = new Promise<void>((resolve, reject) => {
    let settled = false;
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      opts.signal?.removeEventListener('abort', onAbort);
      if (err.code === 'ENOENT') reject(new ToolMissingError(name, opts.debianPackage, { cause: err }));
      else reject(new ToolFailedError(name, null, null, `could not start: ${err.message}`));
    });
    child.once('exit', (code, sig) => {
      void stderrDone.then(() => {
        if (settled) return;
        settled = true;
        opts.signal?.removeEventListener('abort', onAbort);
        if (aborted) reject(new TaskAbortedError(`${name} was stopped`));
        else if (code === 0) resolve();
        else reject(new ToolFailedError(name, code, sig, tail.text()));
      });
    });
  });
  // Callers may hand stdout on and look at wait() late: never let the rejection go unhandled.
  done.catch(() => {});

  return { child, wait: () => done, kill };
}

export interface RunToolOptions extends Omit<SpawnToolOptions, 'stdio'> {
  /** Written to the tool's stdin, which is then closed; stdin is /dev/null without it. */
  input?: string | Buffer;
}

/**
 * Runs a tool to completion and returns its stdout as UTF-8 text.
 *
 * For small outputs only (listing databases, one-row queries): stdout over
 * {@link RUN_TOOL_MAX_STDOUT} bytes kills the tool and rejects with ToolFailedError.
 * Rejects like {@link ToolProcess.wait} otherwise.
 */
export async function runTool(cmd: string, args: readonly string[], opts: RunToolOptions): Promise<string> {
  const { input, ...rest } = opts;
  const proc = spawnTool(cmd, args, { ...rest, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  let size = 0;
  let overflow = false;
  proc.child.stdout?.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > RUN_TOOL_MAX_STDOUT) {
      overflow = true;
      proc.kill();
      return;
    }
    chunks.push(chunk);
  });
  const stdoutDone = proc.child.stdout ? streamClosed(proc.child.stdout) : Promise.resolve();
  if (input !== undefined && proc.child.stdin) proc.child.stdin.end(input);
  try {
    await proc.wait();
  } catch (err) {
    if (overflow)
      throw new ToolFailedError(
        opts.name ?? cmd,
        null,
        null,
        `output larger than ${RUN_TOOL_MAX_STDOUT} bytes`,
      );
    throw err;
  }
  await stdoutDone;
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The absolute path of an executable named `name` on `PATH`, or null when there is none.
 * Only plain names are looked up; a name with a slash is checked as given.
 */
export async function toolOnPath(name: string): Promise<string | null> {
  const candidates = name.includes('/')
    ? [name]
    : (process.env.PATH ?? '')
        .split(delimiter)
        .filter((dir) => dir !== '')
        .map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      if (!(await stat(candidate)).isFile()) continue;
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** The first of `names` found on PATH (its plain name), or throws ToolMissingError for the first name. */
export async function firstToolOnPath(names: readonly string[], debianPackage: string): Promise<string> {
  for (const name of names) {
    if ((await toolOnPath(name)) !== null) return name;
  }
  throw new ToolMissingError(names.join(' or '), debianPackage);
}

/**
 * Streams `input` into the tool's stdin (spawned with stdin `'pipe'`) and waits for the tool.
 *
 * A tool may exit before it has read all of its input: `pg_restore` stops reading a custom-format
 * archive once it has read the last entry, without waiting for end-of-file, and Node destroys a
 * child's stdin when the child exits. So once the tool has closed its stdin, what it did not read
 * is drained and discarded rather than failing the feed with a premature close or EPIPE: the
 * tool's exit status decides, and the input's own errors (a decompression or checksum failure at
 * its end) still surface.
 *
 * The tool's own failure wins over the pipe's (a tool that dies early makes the pipe fail, which
 * says less than its stderr); the input is then stopped, not drained. When `input` fails (e.g. a
 * decompression error) the tool is killed, so that it cannot commit a truncated input, and
 * `input`'s error is thrown, also when it failed before this call.
 *
 * @param through a transform the input passes on its way (e.g. the MariaDB dump's rewriter).
 */
export async function feedTool(input: Readable, proc: ToolProcess, through?: Transform): Promise<void> {
  const stdin = proc.child.stdin;
  if (!stdin) throw new Error('feedTool needs a tool spawned with stdin piped');
  const sink = toolStdinSink(stdin);
  const piped = (through ? pipeline(input, through, sink) : pipeline(input, sink)).catch((err: unknown) => {
    proc.kill();
    throw err;
  });
  const exited = proc.wait().catch((err: unknown) => {
    sink.destroy(); // stop the input: nothing more is needed from it
    throw err;
  });
  const [pipeResult, toolResult] = await Promise.allSettled([piped, exited]);
  if (toolResult.status === 'rejected') {
    // An input error killed the tool: report the input's error, not "killed by SIGKILL".
    if (
      pipeResult.status === 'rejected' &&
      !isEpipe(pipeResult.reason) &&
      !(toolResult.reason instanceof TaskAbortedError)
    ) {
      throw pipeResult.reason;
    }
    throw toolResult.reason;
  }
  if (pipeResult.status === 'rejected') throw pipeResult.reason;
}

/** How long a filter may take to exit on its own after its tool failed, before it is killed (ms). */
const FILTER_GRACE_MS = 250;

/**
 * A tool's failure that only says its output was closed under it (killed by SIGPIPE, or a "Broken
 * pipe" or "Connection reset by peer" write error: a child's stdio pipe is a socket pair in
 * libuv, and a socket whose reader exited with unread data resets): the consequence of its
 * reader's exit, never a cause.
 */
export function isBrokenPipe(err: unknown): boolean {
  return err instanceof ToolFailedError && /SIGPIPE|Broken pipe|Connection reset by peer/i.test(err.message);
}

/**
 * Streams `input` into `filter` (e.g. a decompressor), whose stdout is `tool`'s stdin (the two
 * processes were started so: the bytes between them never pass through the agent), and waits for
 * both. Like {@link feedTool}: once `filter` has closed its stdin, the rest of `input` is drained
 * and discarded, so that the input's own errors at its end (a checksum mismatch) still surface;
 * when `input` fails, both tools are killed (so that `tool` cannot take a truncated input for a
 * whole one) and its error is thrown; when a tool fails, the input is stopped.
 *
 * `tool` may stop reading before the end (pg_restore does at the archive's last entry): `filter`
 * then dies of a broken pipe, which is no failure when `tool` succeeded. Otherwise the most telling
 * error is thrown: the input's, then the filter's own (a corrupt compressed stream), then the tool's.
 */
export async function feedToolThrough(
  input: Readable,
  filter: ToolProcess,
  tool: ToolProcess,
): Promise<void> {
  const stdin = filter.child.stdin;
  if (!stdin) throw new Error('feedToolThrough needs a filter spawned with stdin piped');
  const sink = toolStdinSink(stdin);
  const piped = pipeline(input, sink).catch((err: unknown) => {
    filter.kill();
    tool.kill();
    throw err;
  });
  const toolDone = tool.wait().catch((err: unknown) => {
    sink.destroy();
    // A filter that failed on its own may close its output just before it exits, so that the
    // tool's failure is seen first: a moment's grace lets its own error be the one reported.
    setTimeout(() => filter.kill(), FILTER_GRACE_MS).unref();
    throw err;
  });
  const filterDone = filter.wait().catch((err: unknown) => {
    if (!isBrokenPipe(err)) {
      sink.destroy();
      tool.kill();
    }
    throw err;
  });
  const [p, f, t] = await Promise.allSettled([piped, filterDone, toolDone]);
  const reason = (r: PromiseSettledResult<unknown>): unknown =>
    r.status === 'rejected' ? (r.reason as unknown) : undefined;
  if (p.status === 'rejected' && !isEpipe(p.reason) && !(reason(t) instanceof TaskAbortedError))
    throw p.reason;
  if (f.status === 'rejected' && !isBrokenPipe(f.reason) && !/SIGKILL/.test(String(f.reason))) throw f.reason;
  if (t.status === 'rejected') throw t.reason;
  if (f.status === 'rejected' && !isBrokenPipe(f.reason)) throw f.reason;
  if (p.status === 'rejected') throw p.reason;
}

/**
 * A writable that forwards to a tool's stdin, with its backpressure, until that stdin closes (the
 * tool exited or closed it), and from then on discards what it is given. See {@link feedTool}.
 */
function toolStdinSink(stdin: Writable): Writable {
  let closed = false;
  const waiters = new Set<() => void>();
  const onClosed = (): void => {
    closed = true;
    for (const wake of waiters) wake();
    waiters.clear();
  };
  stdin.once('close', onClosed);
  stdin.once('error', onClosed); // EPIPE and the like; 'close' follows
  const isClosed = (): boolean => closed || stdin.destroyed;
  const until = (event: 'drain' | 'finish'): Promise<void> =>
    new Promise<void>((resolve) => {
      if (isClosed()) return resolve();
      const wake = (): void => {
        stdin.off(event, wake);
        waiters.delete(wake);
        resolve();
      };
      stdin.once(event, wake);
      waiters.add(wake);
    });
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (isClosed() || stdin.write(chunk)) return callback();
      void until('drain').then(() => callback());
    },
    final(callback) {
      if (isClosed()) return callback();
      stdin.end();
      void until('finish').then(() => callback());
    },
  });
}

function isEpipe(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (
    code === 'EPIPE' ||
    code === 'ERR_STREAM_PREMATURE_CLOSE' ||
    code === 'ECONNRESET' ||
    code === 'ERR_STREAM_DESTROYED'
  );
}

/** Resolves when `stream` ended or closed (errors included: the tool's exit status reports them). */
export function streamClosed(stream: Readable | Writable): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || ('readableEnded' in stream && stream.readableEnded)) return resolve();
    stream.once('close', () => resolve());
    stream.once('end', () => resolve());
    stream.once('error', () => resolve());
  });
}

/** Keeps the last `limit` bytes written to it. */
class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    for (let first = this.chunks[0]; first && this.chunks.length > 1; first = this.chunks[0]) {
      if (this.size - first.length < this.limit) break;
      this.chunks.shift();
      this.size -= first.length;
    }
  }

  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString('utf8');
  }
}
