/**
 * Takes the schema qualifier out of the head of a `CREATE TRIGGER` statement.
 *
 * Unlike views, routines and events, whose `SHOW CREATE` text the server regenerates with an
 * unqualified name, a trigger's `SHOW CREATE TRIGGER` gives its "SQL Original Statement": the
 * statement exactly as it was written, so `CREATE TRIGGER shop.t AFTER INSERT ON shop.orders ...`
 * keeps `shop.` twice. mariadb-dump writes that text into the dump as
 * `/*!50003 CREATE*\/ /*!50017 DEFINER=...*\/ /*!50003 TRIGGER shop.t ... ON shop.orders ...`.
 * Loaded as it is into a staging schema, it would create the trigger on the *live* table; copied
 * to the pre-restore schema, likewise. So the dump rewriter and the swap pass every trigger
 * statement through {@link unqualifyTriggerHead}, which removes a qualifier naming the trigger's
 * own schema from the trigger name and from the table after `ON` (a trigger always lives in its
 * table's schema, so no other qualifier can be valid there). The body is left alone: explicit
 * names in it are the application's and run only when the trigger fires.
 *
 * The head is read with a small tokenizer: spaces, `-- ` / `#` / `/* *\/` comments, the markers of
 * executable comments (`/*!50003` and `*\/`, which mariadb-dump puts around the head), quoted
 * identifiers and strings, and words.
 */

/** The result of {@link unqualifyTriggerHead}. */
export type TriggerHeadResult =
  { kind: 'done'; text: string } | { kind: 'incomplete' } | { kind: 'refused'; reason: string };

interface Token {
  type: 'space' | 'word' | 'quoted' | 'dot' | 'other';
  start: number;
  end: number;
  /** Identifier value (unquoted) for words and backquoted/double-quoted identifiers. */
  value: string;
}

/** Tokens from `from`; stops at the end of the text (a token cut by the end is `incomplete`). */
function* tokens(text: string, from = 0): Generator<Token | 'incomplete'> {
  let i = from;
  while (i < text.length) {
    const start = i;
    const ch = text[i] ?? '';
    if (/\s/.test(ch)) {
      while (i < text.length && /\s/.test(text[i] ?? '')) i++;
      yield { type: 'space', start, end: i, value: '' };
    } else if (text.startsWith('/*!', i) || text.startsWith('/*M!', i)) {
      // An executable comment's opener: its content counts as code.
      i += text.startsWith('/*M!', i) ? 4 : 3;
      while (i < text.length && /\d/.test(text[i] ?? '')) i++;
      yield { type: 'space', start, end: i, value: '' };
    } else if (text.startsWith('*/', i)) {
      i += 2;
      yield { type: 'space', start, end: i, value: '' };
    } else if (text.startsWith('/*', i)) {
      const close = text.indexOf('*/', i + 2);
      if (close < 0) {
        yield 'incomplete';
        return;
      }
      i = close + 2;
      yield { type: 'space', start, end: i, value: '' };
    } else if ((text.startsWith('--', i) && /\s/.test(text[i + 2] ?? 'x')) || ch === '#') {
      const nl = text.indexOf('\n', i);
      if (nl < 0) {
        yield 'incomplete';
        return;
      }
      i = nl + 1;
      yield { type: 'space', start, end: i, value: '' };
    } else if (ch === '`' || ch === '"' || ch === "'") {
      let value = '';
      i++;
      for (;;) {
        if (i >= text.length) {
          yield 'incomplete';
          return;
        }
        const c = text[i] ?? '';
        if (c === ch && text[i + 1] === ch) {
          value += ch;
          i += 2;
        } else if (c === ch) {
          i++;
          break;
        } else if (c === '\\' && ch !== '`') {
          value += text[i + 1] ?? '';
          i += 2;
        } else {
          value += c;
          i++;
        }
      }
      yield { type: ch === "'" ? 'other' : 'quoted', start, end: i, value };
    } else if (/[\w$\u0080-\uffff]/.test(ch)) {
      while (i < text.length && /[\w$\u0080-\uffff]/.test(text[i] ?? '')) i++;
      yield { type: 'word', start, end: i, value: text.slice(start, i) };
    } else {
      i++;
      yield { type: ch === '.' ? 'dot' : 'other', start, end: i, value: ch };
    }
  }
  yield 'incomplete';
}

/** Non-space tokens, read lazily, with lookahead. */
class Cursor {
  private readonly seen: (Token | 'incomplete')[] = [];
  private at = 0;
  private readonly source: Generator<Token | 'incomplete'>;
  constructor(text: string) {
    this.source = tokens(text);
  }
  peek(k = 0): Token | 'incomplete' {
    while (this.seen.length <= this.at + k) {
      const last = this.seen[this.seen.length - 1];
      if (last === 'incomplete') return 'incomplete';
      const r = this.source.next();
      const t = r.done ? 'incomplete' : r.value;
      if (t === 'incomplete' || t.type !== 'space') this.seen.push(t);
    }
    return this.seen[this.at + k] ?? 'incomplete';
  }
  take(): Token | 'incomplete' {
    const t = this.peek();
    if (t !== 'incomplete') this.at++;
    return t;
  }
}

/** A bare word (equal to `word`, case-insensitively, when given). */
function isWord(t: Token | 'incomplete', word?: string): boolean {
  return t !== 'incomplete' && t.type === 'word' && (word === undefined || t.value.toUpperCase() === word);
}

function isIdent(t: Token | 'incomplete'): t is Token {
  return t !== 'incomplete' && (t.type === 'word' || t.type === 'quoted');
}

/**
 * Removes `schema.` from the trigger name and from the table after `ON` in the head of a
 * `CREATE ... TRIGGER` statement (the text may start with mariadb-dump's executable-comment
 * prefix). `incomplete` when the text ends before the table name (read more lines first);
 * `refused` when a qualifier names another schema or the text is not a trigger statement.
 */
export function unqualifyTriggerHead(text: string, schema: string): TriggerHeadResult {
  const c = new Cursor(text);
  const cuts: [number, number][] = [];
  const incomplete: TriggerHeadResult = { kind: 'incomplete' };
  const refused = (reason: string): TriggerHeadResult => ({ kind: 'refused', reason });
  /** Reads `ident` or `qualifier . ident`, recording a qualifier for removal. */
  const qualifiedName = (what: string): TriggerHeadResult | undefined => {
    const first = c.take();
    if (first === 'incomplete') return incomplete;
    if (!isIdent(first)) return refused(`no ${what} name`);
    const dot = c.peek();
    if (dot === 'incomplete') return incomplete;
    if (dot.type !== 'dot') return undefined;
    c.take();
    const name = c.take();
    if (name === 'incomplete') return incomplete;
    if (!isIdent(name)) return refused(`no ${what} name after the dot`);
    if (first.value !== schema) return refused(`the ${what} is in schema ${first.value}, not ${schema}`);
    cuts.push([first.start, name.start]);
    return undefined;
  };
  // CREATE [OR REPLACE] [DEFINER = ...] TRIGGER
  for (let guard = 0; ; guard++) {
    const t = c.take();
    if (t === 'incomplete') return incomplete;
    if (isWord(t, 'TRIGGER')) break;
    // mariadb-dump of old servers writes routines with the same prefix: not a trigger, no change.
    if (t.type === 'word' && /^(?:PROCEDURE|FUNCTION|EVENT|VIEW|TABLE)$/i.test(t.value))
      return { kind: 'done', text };
    if (guard > 64 || isWord(t, 'ON') || isWord(t, 'FOR') || isWord(t, 'BEGIN'))
      return refused('not a CREATE TRIGGER statement');
  }
  if (isWord(c.peek(), 'IF')) {
    if (c.peek(1) === 'incomplete' || c.peek(2) === 'incomplete') return incomplete;
    if (!isWord(c.peek(1), 'NOT') || !isWord(c.peek(2), 'EXISTS')) return refused('unexpected IF');
    c.take();
    c.take();
    c.take();
  }
  const name = qualifiedName('trigger');
  if (name) return name;
  // Timing and event words, up to ON.
  for (let guard = 0; ; guard++) {
    const t = c.take();
    if (t === 'incomplete') return incomplete;
    if (isWord(t, 'ON')) break;
    if (t.type !== 'word' || guard > 8) return refused('no ON <table> after the trigger name');
  }
  const table = qualifiedName('table');
  if (table) return table;
  let out = '';
  let at = 0;
  for (const [from, to] of cuts) {
    out += text.slice(at, from);
    at = to;
  }
  return { kind: 'done', text: out + text.slice(at) };
}
