/**
 * A streaming filter that lets an editor look at (and replace) selected lines of a text stream
 * such as a SQL dump, in bounded memory whatever the size of the stream or of its lines.
 *
 * Every line is offered to {@link LineEditor.wants} with its first bytes; only lines it wants are
 * collected whole (up to {@link LineRewriterOptions.maxLineBytes}) and handed to
 * {@link LineEditor.edit}, which may replace them. All other bytes go through untouched, long
 * lines (a 1 GiB INSERT) chunk by chunk. A wanted line longer than the limit fails the stream,
 * so that an editor guarding against dangerous statements cannot be bypassed by a long line.
 * While {@link LineEditor.skipUntilLine} names a line (e.g. `\.`, the end of a PostgreSQL COPY
 * block), everything up to that line is passed on without being split into lines at all, which
 * keeps bulk data fast; the named line itself is then offered as usual.
 *
 * Lines end with `\n`; a `\r` before it is part of the line. Lines are decoded as UTF-8 for the
 * editor; bytes of lines it does not replace are passed on as they were.
 */
import { Transform, type TransformCallback } from 'node:stream';

export interface LineEditor {
  /**
   * Whether the line starting with `head` must be handed to {@link edit}. `head` holds the whole
   * line when it is at most `peekBytes` long, else its first `peekBytes` bytes (at least). Asked
   * once per line, or more: it must not change the editor's state (only {@link edit} does).
   */
  wants(head: Buffer): boolean;
  /** The line (without its `\n`) to write instead, or undefined to keep it. Throwing fails the stream. */
  edit(line: string): string | undefined;
  /** Called at the end of the input; throwing fails the stream (e.g. a statement never seen). */
  finish?(): void;
  /**
   * While this returns a line's text, bytes are passed on unexamined until a line equal to it.
   * Its answer may change only in {@link edit} (it is asked again after each edited line).
   */
  skipUntilLine?(): string | undefined;
}

export interface LineRewriterOptions {
  /** Longest line that can be handed to the editor, in bytes (without the newline). */
  maxLineBytes: number;
  /** How many bytes of a line `wants` gets to see at least (default 256). */
  peekBytes?: number;
  /** Called when a wanted line exceeds `maxLineBytes`; its Error fails the stream. */
  tooLong?: (head: string) => Error;
}

const NL = 0x0a;
const EOL = Buffer.from('\n');

/** Creates the filter (see the file comment). */
export function createLineRewriter(editor: LineEditor, opts: LineRewriterOptions): Transform {
  return new LineRewriter(editor, opts);
}

class LineRewriter extends Transform {
  /** Bytes of the current line collected so far (only while deciding or collecting a wanted line). */
  private head: Buffer[] = [];
  private headSize = 0;
  /** The current line is not wanted and is being passed on until its newline. */
  private passing = false;
  /** Bytes held back while skipping, because they may start the terminator line. */
  private carry: Buffer = Buffer.alloc(0);
  private readonly peek: number;

  constructor(
    private readonly editor: LineEditor,
    private readonly opts: LineRewriterOptions,
  ) {
    super();
    this.peek = Math.min(opts.peekBytes ?? 256, opts.maxLineBytes);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.consume(chunk);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      if (this.carry.length > 0) {
        const rest = this.carry;
        this.carry = Buffer.alloc(0);
        this.push(rest);
      }
      if (this.headSize > 0) this.endLine(Buffer.concat(this.head), false);
      this.editor.finish?.();
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  private consume(input: Buffer): void {
    let buf = input;
    while (buf.length > 0) {
      const terminator = this.headSize === 0 && !this.passing ? this.editor.skipUntilLine?.() : undefined;
      if (terminator !== undefined) {
        buf = this.skip(buf, Buffer.from(terminator + '\n', 'utf8'));
        continue;
      }
      if (this.headSize === 0 && !this.passing) {
        const rest = this.wholeLines(buf);
        if (rest !== buf) {
          buf = rest;
          continue;
        }
      }
      if (this.passing) {
        const nl = buf.indexOf(NL);
        if (nl < 0) {
          this.push(buf);
          return;
        }
        this.push(buf.subarray(0, nl + 1));
        this.passing = false;
        buf = buf.subarray(nl + 1);
        continue;
      }
      const nl = buf.indexOf(NL);
      const end = nl < 0 ? buf.length : nl;
      // Never collect more than needed to decide, unless the line is wanted.
      const room = this.opts.maxLineBytes + 1 - this.headSize;
      const take = Math.min(end, room);
      this.head.push(buf.subarray(0, take));
      this.headSize += take;
      if (take === end && nl >= 0) {
        const line = Buffer.concat(this.head);
        this.head = [];
        this.headSize = 0;
        this.endLine(line, true);
        buf = buf.subarray(nl + 1);
        continue;
      }
      if (this.headSize > this.opts.maxLineBytes) {
        const line = Buffer.concat(this.head);
        if (this.editor.wants(line.subarray(0, this.peek))) {
          const shown = line.subarray(0, 80).toString('utf8');
          throw this.opts.tooLong?.(shown) ?? new Error(`line too long to check: ${shown}...`);
        }
        this.head = [];
        this.headSize = 0;
        this.push(line);
        this.passing = true;
        buf = buf.subarray(take);
        continue;
      }
      // No newline yet and still short: a line that cannot be wanted is passed on at once.
      if (this.headSize >= this.peek) {
        const line = Buffer.concat(this.head);
        if (!this.editor.wants(line.subarray(0, this.peek))) {
          this.head = [];
          this.headSize = 0;
          this.push(line);
          this.passing = true;
        } else {
          this.head = [line];
        }
      }
      return;
    }
  }

  /**
   * The fast path for the complete lines at the start of `buf` (no line collected, none being
   * passed on): each line's start is shown to `wants` in place, and a run of lines it does not
   * want is pushed on as one slice of `buf` (no copy, one push instead of one per line). Stops
   * after a wanted line (the editor may now skip, see {@link LineEditor.skipUntilLine}) or at the
   * first incomplete line; returns what is left of `buf` (`buf` itself when no line was complete).
   */
  private wholeLines(buf: Buffer): Buffer {
    let pos = 0;
    for (;;) {
      const nl = buf.indexOf(NL, pos);
      if (nl < 0) break;
      if (!this.editor.wants(buf.subarray(pos, Math.min(nl, pos + this.peek)))) {
        pos = nl + 1;
        continue;
      }
      if (pos > 0) this.push(buf.subarray(0, pos));
      if (nl - pos > this.opts.maxLineBytes) {
        const shown = buf.subarray(pos, pos + 80).toString('utf8');
        throw this.opts.tooLong?.(shown) ?? new Error(`line too long to check: ${shown}...`);
      }
      this.editLine(buf.subarray(pos, nl), true);
      return buf.subarray(nl + 1);
    }
    if (pos > 0) this.push(buf.subarray(0, pos));
    return pos === 0 ? buf : buf.subarray(pos);
  }

  /** Handles one complete line (without its newline). */
  private endLine(line: Buffer, newline: boolean): void {
    if (!this.editor.wants(line.subarray(0, this.peek))) {
      this.push(newline ? Buffer.concat([line, EOL]) : line);
      return;
    }
    this.editLine(line, newline);
  }

  /** Hands a wanted line (without its newline) to the editor and pushes it or its replacement. */
  private editLine(line: Buffer, newline: boolean): void {
    const replaced = this.editor.edit(line.toString('utf8'));
    if (replaced === undefined) this.push(newline ? Buffer.concat([line, EOL]) : line);
    else this.push(Buffer.from(newline ? replaced + '\n' : replaced, 'utf8'));
  }

  /**
   * Passes bytes on until the line `term` (with its newline) starts; returns what follows the
   * terminator line (which is handled like any line), or an empty buffer when more input is needed.
   */
  private skip(input: Buffer, term: Buffer): Buffer {
    if (!this.skipping) {
      this.skipping = true;
      this.skipAtLineStart = true;
    }
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, input]) : input;
    this.carry = Buffer.alloc(0);
    let at = -1;
    if (this.skipAtLineStart && buf.length >= term.length && buf.subarray(0, term.length).equals(term))
      at = 0;
    else {
      const found = buf.indexOf(Buffer.concat([Buffer.from([NL]), term]));
      if (found >= 0) at = found + 1;
    }
    if (at >= 0) {
      this.push(buf.subarray(0, at));
      this.skipping = false;
      const nl = at + term.length - 1;
      this.endLine(buf.subarray(at, nl), true);
      return buf.subarray(nl + 1);
    }
    if (this.skipAtLineStart && buf.length < term.length && term.subarray(0, buf.length).equals(buf)) {
      this.carry = buf; // may still become the terminator line
      return Buffer.alloc(0);
    }
    // Hold back a tail that starts with a newline and could begin "\n<term>".
    const lastNl = buf.lastIndexOf(NL);
    const from = lastNl >= 0 && buf.length - lastNl <= term.length ? lastNl : buf.length;
    this.push(buf.subarray(0, from));
    this.carry = buf.subarray(from);
    this.skipAtLineStart = from === buf.length && buf.length > 0 ? buf[buf.length - 1] === NL : false;
    return Buffer.alloc(0);
  }

  private skipping = false;
  private skipAtLineStart = false;
}
