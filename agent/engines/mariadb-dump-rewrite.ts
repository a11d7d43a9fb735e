/**
 * Points a `mariadb-dump --databases DB` dump at a staging database, as a stream.
 *
 * A dump made with `--databases DB --add-drop-database` names its database only in statements
 * of its own, each on a line of its own, which mariadb-dump (and MySQL's mysqldump) write as:
 *
 *     /*!40000 DROP DATABASE IF EXISTS `DB`*\/;
 *     CREATE DATABASE /*!32312 IF NOT EXISTS*\/ `DB` /*!40100 DEFAULT CHARACTER SET ... *\/;
 *     USE `DB`;
 *     ALTER DATABASE `DB` CHARACTER SET ... COLLATE ... ;     (around triggers, events and routines
 *                                                             whose database collation differs; `;;`
 *                                                             inside DELIMITER blocks; older
 *                                                             versions wrap it in /*!50003 ... *\/)
 *
 * Table data, view, routine and event definitions never name the dumped database as their own
 * (the tool writes them after `USE`, and the server regenerates their heads unqualified). The
 * rewriter replaces the backquoted name in exactly those statements with the staging name, so
 * that the whole dump (drop, create, load) lands in the staging database. Triggers are the
 * exception: their text is the statement as written, so `TRIGGER DB.t ... ON DB.tbl` would create
 * the trigger on the live table; the rewriter removes such qualifiers from the head of every
 * trigger statement ({@link unqualifyTriggerHead}). Only lines that start with one of these
 * statements are examined ({@link createLineRewriter}); the rest streams through.
 *
 * Fail-closed rules, so that a dump can never write outside the staging database: a line that
 * starts like one of these statements but names another database, or has an unknown form, fails
 * the stream before it reaches the client (the client is then killed); so does a dump without its
 * `CREATE DATABASE` and `USE` lines. The client is started without a default database, so a
 * statement before `USE` that needs one fails too. Known limit: a stored routine body with a line
 * that starts (in column 0) with `ALTER DATABASE`/`USE` fails the restore rather than being guessed.
 */
import type { Transform } from 'node:stream';

import { ArtifactCorruptError } from '../../shared/errors.js';
import { createLineRewriter } from './line-rewriter.js';
import { unqualifyTriggerHead } from './mariadb-trigger-head.js';

/** Longest database statement line examined, in bytes (they are under 300 bytes in practice). */
const MAX_STATEMENT_LINE = 64 * 1024;

const CANDIDATE = /^(?:\/\*!\d{5}\s*)?(?:(?:DROP|CREATE|ALTER)\s+(?:DATABASE|SCHEMA)\b|USE\b)/i;

/** How mariadb-dump (and mysqldump) start a trigger: `/*!50003 CREATE*\/ /*!50017 DEFINER=...*\/ /*!50003 TRIGGER`. */
const TRIGGER_START = /^\/\*!50003 CREATE\*\//;

/** Most lines a trigger head may span before its table name, and most bytes. */
const MAX_TRIGGER_HEAD_LINES = 32;
const MAX_TRIGGER_HEAD_BYTES = 64 * 1024;

const STATEMENT =
  /^(\/\*!\d{5} ?)?(DROP DATABASE IF EXISTS |DROP DATABASE |CREATE DATABASE \/\*!32312 IF NOT EXISTS\*\/ |CREATE DATABASE |ALTER DATABASE |USE )(`(?:[^`]|``)+`)(.*)$/;

/** `name` as a MariaDB identifier in backquotes. */
export function quoteMariadbIdent(name: string): string {
  return '`' + name.replace(/`/g, '``') + '`';
}

function unquote(ident: string): string {
  return ident.slice(1, -1).replace(/``/g, '`');
}

/**
 * A Transform that rewrites a dump of `database` to load into `staging` (see the file comment).
 * Fails with ArtifactCorruptError on a statement for another database or a dump without its
 * `CREATE DATABASE`/`USE` lines.
 */
export function rewriteDumpToStaging(database: string, staging: string): Transform {
  let created = false;
  let used = false;
  /** Lines of a trigger head read so far (emitted as empty lines until the head is complete). */
  let head: string[] | undefined;
  const refuse = (what: string): ArtifactCorruptError =>
    new ArtifactCorruptError(`the dump of database ${database} ${what}; refusing to load it`, {
      hint: 'envsnap restores dumps made by its own backups (mariadb-dump --databases)',
    });
  return createLineRewriter(
    {
      wants: (start) => {
        if (head !== undefined) return true;
        const text = start.toString('latin1');
        return CANDIDATE.test(text) || TRIGGER_START.test(text);
      },
      edit: (line) => {
        if (head !== undefined || TRIGGER_START.test(line)) {
          const lines = [...(head ?? []), line];
          const result = unqualifyTriggerHead(lines.join('\n'), database);
          if (result.kind === 'refused')
            throw refuse(`has a trigger that cannot be loaded elsewhere: ${result.reason}`);
          if (result.kind === 'done') {
            head = undefined;
            return result.text;
          }
          if (lines.length > MAX_TRIGGER_HEAD_LINES || lines.join('\n').length > MAX_TRIGGER_HEAD_BYTES)
            throw refuse('has a trigger statement whose head never ends');
          head = lines;
          return '';
        }
        const m = STATEMENT.exec(line);
        if (!m) throw refuse(`has an unexpected database statement (${line.slice(0, 80)})`);
        const [, version = '', verb = '', ident = '', rest = ''] = m;
        const named = unquote(ident);
        if (named !== database) throw refuse(`has a statement for another database (${named})`);
        if (verb.startsWith('CREATE')) created = true;
        if (verb === 'USE ') {
          if (!created) throw refuse('uses the database before creating it');
          used = true;
        }
        return `${version}${verb}${quoteMariadbIdent(staging)}${rest}`;
      },
      finish: () => {
        if (head !== undefined) throw refuse('ends inside a trigger statement');
        if (!created || !used)
          throw refuse('has no CREATE DATABASE and USE lines (not made with --databases)');
      },
    },
    {
      maxLineBytes: MAX_STATEMENT_LINE,
      tooLong: (head) => refuse(`has an overlong database statement (${head}...)`),
    },
  );
}
