/**
 * Points the SQL script that `pg_restore --create --file=-` makes of a custom-format archive at a
 * staging database, as a stream. The restore (postgresql.ts) runs only the archive's pre-data
 * section through it (`--section=pre-data`: the database and the schema); the table data goes
 * from a second pg_restore straight into the staging database.
 *
 * `pg_restore` has no option to restore a database under another name, and `--create` is what
 * brings back the database's own properties (encoding and locale, owner, comment, `ALTER DATABASE
 * ... SET`, `ALTER ROLE ... IN DATABASE ... SET`, database grants). So envsnap has pg_restore write
 * the script (`--file=-`) and feeds it to `psql` through this rewriter. The rewriter accepts a
 * whole script (all sections, table data included) as well. The script is regular
 * (pg_backup_archiver.c): each archive entry is introduced by a comment
 * `-- Name: N; Type: T; Schema: S; Owner: O` (`-- Data for Name: ...` for table data), table data
 * is a `COPY ... FROM stdin;` line followed by rows up to a `\.` line, and the script reconnects
 * with `\connect` (`\connect db` or `\connect -reuse-previous=on "dbname='db'"`). The database is
 * named only in the entries of type DATABASE and DATABASE PROPERTIES, in the COMMENT, SECURITY
 * LABEL and ACL entries named `DATABASE db`, and in the `\connect` lines. The rewriter:
 *
 * - replaces the first `DATABASE <db>` (the name as pg_dump quotes it) of each statement in those
 *   entries, and the target of every `\connect`, with the staging name;
 * - passes COPY rows on without looking at them (they can hold any text);
 * - fails the stream (ArtifactCorruptError, before psql gets the line) on a `\connect` to another
 *   database, a `CREATE DATABASE` or `DROP DATABASE` outside the DATABASE entry or for another
 *   name, anything but settings and the database entry before the first `\connect` (so nothing
 *   can run in the maintenance database), and a script that never creates or connects to it.
 *
 * Known limit: a function body holding a line that looks exactly like an entry header followed
 * by a `COPY ... FROM stdin;` line would confuse it; pg_dump never writes one.
 */
import type { Transform } from 'node:stream';

import { ArtifactCorruptError } from '../../shared/errors.js';
import { createLineRewriter } from './line-rewriter.js';

/** Longest script line the rewriter needs whole (entry headers, database statements), in bytes. */
const MAX_LINE = 1024 * 1024;

const HEADER = /^-- (?:Data for )?Name: (.*); Type: ([A-Z ]+); Schema: /;
const PREAMBLE_OK = /^(?:$|--|SET |SELECT pg_catalog\.set_config\(|\\(?:restrict|unrestrict|encoding)\b)/;

/** `name` as a PostgreSQL identifier in double quotes. */
export function quotePgIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The ways pg_dump may write `name` as an identifier: quoted, or bare when it is a plain lower-case name. */
function identForms(name: string): string[] {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? [quotePgIdent(name), name] : [quotePgIdent(name)];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The database a psql `\connect` argument names, or undefined when it is not one database name:
 * `db`, `"d""b"`, `-reuse-previous=on "dbname='d\'b'"` or `dbname=db`.
 */
export function connectTarget(line: string): string | undefined {
  const m = /^\\(?:connect|c)\s+(?:-reuse-previous=on\s+)?(.*?)\s*$/.exec(line);
  if (!m) return undefined;
  let arg = m[1] ?? '';
  if (arg.startsWith('"')) {
    if (!/^"(?:[^"]|"")*"$/.test(arg)) return undefined;
    arg = arg.slice(1, -1).replace(/""/g, '"');
  } else if (/\s/.test(arg)) return undefined;
  if (!arg.startsWith('dbname=')) return arg;
  const value = arg.slice('dbname='.length);
  if (!value.startsWith("'")) return /^\S+$/.test(value) ? value : undefined;
  const quoted = /^'((?:[^'\\]|\\.)*)'$/.exec(value);
  return quoted ? (quoted[1] ?? '').replace(/\\(.)/g, '$1') : undefined;
}

/** The `\connect` line pg_restore would write for `name` in its general form. */
export function connectLine(name: string): string {
  const value = `dbname='${name.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  return `\\connect -reuse-previous=on ${quotePgIdent(value)}`;
}

/**
 * A Transform that rewrites the `pg_restore --create --file=-` script of `database` to create
 * and fill `staging` instead (see the file comment). Fails with ArtifactCorruptError.
 */
export function rewritePgScriptToStaging(database: string, staging: string): Transform {
  const names = identForms(database).map(escapeRegExp).join('|');
  const dbRef = new RegExp(`(\\bDATABASE )(?:${names})(?=$|[\\s;])`);
  const createDb = new RegExp(`^CREATE DATABASE (?:${names}) `);
  const newName = quotePgIdent(staging);
  const databaseEntryNames = identForms(database).map((form) => `DATABASE ${form}`);
  let type = '';
  let databaseLevel = false;
  /** The line starts a statement (the previous one ended with `;`, or an entry begins). */
  let statementStart = true;
  let inCopy = false;
  let created = false;
  let connected = false;
  const refuse = (what: string): ArtifactCorruptError =>
    new ArtifactCorruptError(`the archive of database ${database} ${what}; refusing to restore it`, {
      hint: 'envsnap restores archives made by its own backups (pg_dump -Fc)',
    });
  return createLineRewriter(
    {
      skipUntilLine: () => (inCopy ? '\\.' : undefined),
      wants: (head) => {
        if (inCopy || !connected || databaseLevel) return true;
        const text = head.toString('latin1');
        return /^(?:-- |\\c|CREATE DATABASE|DROP DATABASE|COPY )/.test(text);
      },
      edit: (line) => {
        if (inCopy) {
          if (line === '\\.') inCopy = false;
          return undefined;
        }
        const header = HEADER.exec(line);
        if (header) {
          const [, name = '', entryType = ''] = header;
          type = entryType;
          statementStart = true;
          databaseLevel =
            type === 'DATABASE' || type === 'DATABASE PROPERTIES' || databaseEntryNames.includes(name);
          return undefined;
        }
        if (/^\\c(?:onnect)?\s/.test(line)) {
          if (connectTarget(line) !== database)
            throw refuse(`reconnects to another database (${line.slice(0, 80)})`);
          if (!created) throw refuse('connects to the database before creating it');
          connected = true;
          return connectLine(staging);
        }
        if (/^DROP DATABASE/.test(line)) throw refuse('drops a database');
        if (/^CREATE DATABASE/.test(line)) {
          if (type !== 'DATABASE' || created || !createDb.test(line))
            throw refuse(`creates another database (${line.slice(0, 80)})`);
          created = true;
        }
        if (!connected && !PREAMBLE_OK.test(line) && !created)
          throw refuse(`runs a statement before creating the database (${line.slice(0, 80)})`);
        if (!connected && !PREAMBLE_OK.test(line) && type !== 'DATABASE')
          throw refuse(`runs a statement before connecting to the database (${line.slice(0, 80)})`);
        if (type === 'TABLE DATA' && /^COPY .* FROM stdin;$/.test(line)) {
          inCopy = true;
          return undefined;
        }
        const start = statementStart;
        if (line.trim() !== '' && !line.startsWith('--')) statementStart = /;\s*$/.test(line);
        if (databaseLevel && start) {
          // The statement's own reference comes first (GRANT ... ON DATABASE x, COMMENT ON DATABASE x
          // IS '...'): only that one is replaced, never text inside a literal.
          const out = line.replace(dbRef, `$1${newName}`);
          return out === line ? undefined : out;
        }
        return undefined;
      },
      finish: () => {
        if (!created || !connected)
          throw refuse('has no CREATE DATABASE and \\connect (not made with pg_dump -Fc?)');
        if (inCopy) throw refuse('ends inside table data');
      },
    },
    { maxLineBytes: MAX_LINE, tooLong: (head) => refuse(`has an overlong line (${head}...)`) },
  );
}
