/**
 * The swap at the end of a safe MariaDB/MySQL restore: the staging schema, loaded and checked,
 * takes the place of the live one, and the live one's tables become the pre-restore copy.
 *
 * What can move between schemas, and what cannot (MariaDB manual, RENAME TABLE): tables
 * (including sequences and system-versioned tables) move with one `RENAME TABLE a TO b, c TO d,
 * ...` statement, which is atomic: all renames happen or none (and, since MariaDB 10.6, also
 * across a server crash: atomic DDL). A table with triggers cannot move to another schema
 * (ER_TRG_IN_WRONG_SCHEMA), views cannot move at all (ER_FORBID_SCHEMA_CHANGE), and stored
 * routines and events have no rename. So the swap:
 *
 * 1. drops the triggers of the staging tables and of the live tables (their definitions were
 *    read first with `SHOW CREATE TRIGGER`), and live views whose name a staged table takes;
 * 2. moves every live table to `<db>__envsnap_pre_restore` and every staged table to `<db>`, in
 *    one `RENAME TABLE`;
 * 3. sets the live schema's default character set and collation to the backup's, then creates
 *    the staged views (with `CREATE OR REPLACE`, in dependency order), routines and events
 *    (`CREATE OR REPLACE`), and triggers (in their original order) in the live schema from their
 *    `SHOW CREATE` text, read with the staging schema as the default database so that names in
 *    it are unqualified (trigger statements, kept as written, have a qualifier naming their own
 *    schema removed from their head: {@link unqualifyTriggerHead}), each with its own `sql_mode`, client character set, connection collation,
 *    time zone (events) and database collation (via `ALTER DATABASE` around it, as mariadb-dump
 *    does); then drops the live views, routines and events the backup does not have.
 *
 * On MariaDB all of it is **one statement**: an anonymous compound statement (`BEGIN NOT ATOMIC
 * ... END`, MariaDB 10.1.1+) that runs each DDL through `EXECUTE IMMEDIATE` (dynamic SQL can create
 * triggers, routines and events there, which static SQL in a stored program cannot: checked on
 * MariaDB 10.11). The server runs a statement it has received to its end even when its client is
 * killed (checked: a compound statement goes on after `kill -9` of the client), so killing the
 * agent cannot stop the swap half-way. If a statement inside fails (e.g. a lock wait timeout
 * because another session holds a table), an exit handler undoes what was done (drops what was
 * created, renames the tables back, recreates the live schema's views, routines, events and
 * triggers) and the restore fails with the error; the live schema is then as it was.
 *
 * Residual windows, honestly: (a) during the swap (milliseconds; it waits for metadata locks of
 * other sessions at most `lock_wait_timeout`, capped at {@link SWAP_LOCK_WAIT_SECONDS}) other
 * sessions can see the live tables without their triggers (writes then fire no trigger) and a
 * view or routine of the old or the new version; (b) a crash of the database server itself during
 * the swap leaves it part-way (each DDL is atomic, the sequence is not); the pre-restore copy
 * then still holds the old tables; (c) events in the staging schema exist from the end of the load
 * until the swap drops them; with `event_scheduler=ON` one that is due could run (against the
 * staging schema, or against whatever its body names explicitly).
 *
 * The compound statement carries every definition hex-encoded (about 100 KB for Sakila's 7 views,
 * 6 triggers and 8 routines); one larger than the server's `max_allowed_packet` (16 MiB by
 * default) is refused as a whole before anything runs, and the restore fails with that error.
 * Measured on MariaDB 10.11 (2 shared cores): the Sakila swap statement runs in about 0.1 s.
 *
 * MySQL has no anonymous compound statements and cannot prepare `CREATE TRIGGER`, so against a
 * MySQL server the same statements run one by one from the client (routines and events with
 * `DROP ... IF EXISTS` then `CREATE`), with no undo: a kill or an error during the swap leaves it
 * part-way there. Not tested here: Debian 12 packages no MySQL server.
 */
import { hexString, quoteIdent, type MariadbClient } from './mariadb-client.js';
import { unqualifyTriggerHead } from './mariadb-trigger-head.js';

/** The longest the swap waits for another session's table locks, in seconds. */
export const SWAP_LOCK_WAIT_SECONDS = 120;

/** Session settings an object was created with, from its `SHOW CREATE` output. */
export interface ObjectSettings {
  sqlMode: string;
  charsetClient: string;
  collationConnection: string;
  /** Events only. */
  timeZone?: string;
  /** The database collation recorded with triggers, routines and events. */
  databaseCollation?: string;
}

export type ObjectType = 'VIEW' | 'TRIGGER' | 'PROCEDURE' | 'FUNCTION' | 'EVENT';

/** A view, trigger, routine or event, as `SHOW CREATE` gives it with its schema as the default database. */
export interface SchemaObject {
  type: ObjectType;
  name: string;
  /** The `CREATE ...` statement; object names in it are unqualified. */
  create: string;
  settings: ObjectSettings;
}

/** What a schema holds, read by {@link readSchema}. */
export interface SchemaSnapshot {
  charset: string;
  collation: string;
  /** Base tables, sequences and system-versioned tables: everything `RENAME TABLE` moves. */
  tables: string[];
  /** In an order in which they can be created (see {@link orderViews}). */
  views: SchemaObject[];
  /** In creation order (table, timing, event, ACTION_ORDER). */
  triggers: SchemaObject[];
  routines: SchemaObject[];
  events: SchemaObject[];
}

/** The server's flavour: MariaDB runs the swap as one compound statement, MySQL statement by statement. */
export type Flavor = 'mariadb' | 'mysql';

/** `mariadb` when `SELECT VERSION()` says MariaDB, else `mysql`. */
export async function serverFlavor(client: MariadbClient): Promise<Flavor> {
  const [[version = ''] = []] = await client.rows('SELECT VERSION();');
  return /mariadb/i.test(version) ? 'mariadb' : 'mysql';
}

/**
 * Reads what schema `db` holds (null when it does not exist): its defaults, tables, and the
 * `SHOW CREATE` text and settings of its views, triggers, routines and events, read with `db` as
 * the default database.
 */
export async function readSchema(client: MariadbClient, db: string): Promise<SchemaSnapshot | null> {
  const s = hexString(db);
  const rows = await client.rows(
    `SELECT 'S', DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ${s};
     SELECT 'T', TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${s} ORDER BY TABLE_NAME;
     SELECT 'G', TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ${s}
       ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER;
     SELECT 'R', ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ${s}
       ORDER BY ROUTINE_TYPE, ROUTINE_NAME;
     SELECT 'E', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ${s} ORDER BY EVENT_NAME;`,
  );
  const schema = rows.find((r) => r[0] === 'S');
  if (!schema) return null;
  const tables: string[] = [];
  const wanted: { type: ObjectType; name: string }[] = [];
  for (const [tag = '', name = '', kind = ''] of rows) {
    if (tag === 'T') {
      if (kind === 'VIEW') wanted.push({ type: 'VIEW', name });
      else tables.push(name);
    } else if (tag === 'G') wanted.push({ type: 'TRIGGER', name });
    else if (tag === 'R') wanted.push({ type: kind === 'FUNCTION' ? 'FUNCTION' : 'PROCEDURE', name });
    else if (tag === 'E') wanted.push({ type: 'EVENT', name });
  }
  const objects: SchemaObject[] = [];
  if (wanted.length > 0) {
    const shows = wanted.map((o) => `SHOW CREATE ${o.type} ${quoteIdent(o.name)};`).join('\n');
    const created = await client.singleRows(`USE ${quoteIdent(db)};\n${shows}`, wanted.length);
    for (const [i, o] of wanted.entries()) objects.push(toObject(db, o.type, o.name, created[i] ?? {}));
  }
  const of = (...types: ObjectType[]): SchemaObject[] => objects.filter((o) => types.includes(o.type));
  return {
    charset: schema[1] ?? '',
    collation: schema[2] ?? '',
    tables,
    views: orderViews(of('VIEW')),
    triggers: of('TRIGGER'),
    routines: of('PROCEDURE', 'FUNCTION'),
    events: of('EVENT'),
  };
}

function toObject(db: string, type: ObjectType, name: string, row: Record<string, string>): SchemaObject {
  const createColumn = {
    VIEW: 'Create View',
    TRIGGER: 'SQL Original Statement',
    PROCEDURE: 'Create Procedure',
    FUNCTION: 'Create Function',
    EVENT: 'Create Event',
  }[type];
  let create = row[createColumn];
  if (create === undefined || create === 'NULL' || create === '')
    throw new Error(`SHOW CREATE ${type} ${name} returned no definition (missing privileges?)`);
  if (type === 'TRIGGER') {
    // Its text is the statement as written: `db.` qualifiers would tie it to this schema.
    const head = unqualifyTriggerHead(create, db);
    if (head.kind !== 'done')
      throw new Error(
        `trigger ${name} of ${db}: ${head.kind === 'refused' ? head.reason : 'unreadable statement'}`,
      );
    create = head.text;
  }
  return {
    type,
    name,
    create,
    settings: {
      sqlMode: row.sql_mode ?? '',
      charsetClient: row.character_set_client ?? 'utf8mb4',
      collationConnection: row.collation_connection ?? 'utf8mb4_general_ci',
      timeZone: row.time_zone,
      databaseCollation: row['Database Collation'],
    },
  };
}

/**
 * Orders views so that each comes after the views it uses, judged by the backquoted view names
 * in its definition (`SHOW CREATE VIEW` quotes every identifier; MariaDB has no
 * VIEW_TABLE_USAGE). A column alias that equals a view name adds a needless edge; a cycle (which
 * only such false edges can make) is broken by name order.
 */
export function orderViews(views: SchemaObject[]): SchemaObject[] {
  const byName = new Map(views.map((v) => [v.name, v]));
  const deps = new Map<string, Set<string>>();
  for (const v of views) {
    const uses = new Set<string>();
    for (const other of views)
      if (other.name !== v.name && v.create.includes(quoteIdent(other.name))) uses.add(other.name);
    deps.set(v.name, uses);
  }
  const done = new Set<string>();
  const out: SchemaObject[] = [];
  const names = [...byName.keys()].sort();
  while (out.length < views.length) {
    const ready = names.find((n) => !done.has(n) && [...(deps.get(n) ?? [])].every((d) => done.has(d)));
    const next = ready ?? names.find((n) => !done.has(n));
    if (next === undefined) break;
    done.add(next);
    out.push(byName.get(next)!);
  }
  return out;
}

/** One statement of a swap, with the settings it must run under (none: the defaults). */
interface Statement {
  sql: string;
  settings?: ObjectSettings;
}

/** `CREATE ...` as `CREATE OR REPLACE ...` (every SHOW CREATE text starts with `CREATE `). */
function orReplace(create: string): string {
  return /^CREATE /i.test(create) ? 'CREATE OR REPLACE ' + create.slice(7) : create;
}

const DROP_KEYWORD: Record<ObjectType, string> = {
  VIEW: 'VIEW',
  TRIGGER: 'TRIGGER',
  PROCEDURE: 'PROCEDURE',
  FUNCTION: 'FUNCTION',
  EVENT: 'EVENT',
};

function drop(o: { type: ObjectType; name: string }, schema?: string): Statement {
  const name = schema === undefined ? quoteIdent(o.name) : `${quoteIdent(schema)}.${quoteIdent(o.name)}`;
  return { sql: `DROP ${DROP_KEYWORD[o.type]} IF EXISTS ${name}` };
}

/**
 * Statements that create `objects` in the default database `schema` whose default collation is
 * `collation`: views, routines, events, then triggers. Objects recorded with another database
 * collation are created between two `ALTER DATABASE`s, as mariadb-dump does. With `replace`,
 * existing objects of the same name are replaced (MariaDB `CREATE OR REPLACE`; MySQL: `DROP ...
 * IF EXISTS` first, except views which MySQL can replace).
 */
function createAll(
  objects: SchemaObject[],
  schema: string,
  collation: string,
  flavor: Flavor,
  replace: boolean,
): Statement[] {
  const out: Statement[] = [];
  for (const o of objects) {
    const other = o.settings.databaseCollation && o.settings.databaseCollation !== collation;
    if (other)
      out.push({ sql: `ALTER DATABASE ${quoteIdent(schema)} COLLATE ${o.settings.databaseCollation}` });
    if (!replace) out.push({ sql: o.create, settings: o.settings });
    else if (flavor === 'mariadb' || o.type === 'VIEW')
      out.push({ sql: orReplace(o.create), settings: o.settings });
    else out.push(drop(o), { sql: o.create, settings: o.settings });
    if (other) out.push({ sql: `ALTER DATABASE ${quoteIdent(schema)} COLLATE ${collation}` });
  }
  return out;
}

function objectsOf(s: SchemaSnapshot): SchemaObject[] {
  return [...s.views, ...s.routines, ...s.events, ...s.triggers];
}

function key(o: { type: ObjectType; name: string }): string {
  return `${o.type === 'FUNCTION' || o.type === 'PROCEDURE' ? o.type : o.type === 'VIEW' ? 'T' : o.type} ${o.name}`;
}

/** The phases of a swap and their undo (see the file comment). */
export interface SwapPlan {
  /** Statements run before the live schema changes (on the staging schema only). */
  prepare: Statement[];
  /** Phase 1: drops the live triggers and the live views a staged table replaces. */
  detach: Statement[];
  /** Phase 2: the one `RENAME TABLE`; null when there are no tables on either side. */
  rename: Statement | null;
  /** Phase 3: the live schema's defaults and every staged view, routine, event and trigger. */
  attach: Statement[];
  /** Undo of phase 3: drops what it created, puts the schema defaults back. */
  undoAttach: Statement[];
  /** Undo of phase 2. */
  undoRename: Statement | null;
  /** Undo of phase 1 (and of the drops in phase 3): recreates the live schema's objects. */
  undoDetach: Statement[];
}

/**
 * Plans the swap of `staged` (in schema `staging`) into `live` (schema `db`, null when it does
 * not exist yet) with the old tables going to `pre` (which must exist and be empty).
 */
export function planSwap(
  db: string,
  staging: string,
  pre: string,
  live: SchemaSnapshot | null,
  staged: SchemaSnapshot,
  flavor: Flavor,
): SwapPlan {
  const q = quoteIdent;
  const oldTables = live?.tables ?? [];
  const newTables = new Set(staged.tables);
  const clashing = (live?.views ?? []).filter((v) => newTables.has(v.name));
  const renames = [
    ...oldTables.map((t) => `${q(db)}.${q(t)} TO ${q(pre)}.${q(t)}`),
    ...staged.tables.map((t) => `${q(staging)}.${q(t)} TO ${q(db)}.${q(t)}`),
  ];
  const undoRenames = [
    ...staged.tables.map((t) => `${q(db)}.${q(t)} TO ${q(staging)}.${q(t)}`),
    ...oldTables.map((t) => `${q(pre)}.${q(t)} TO ${q(db)}.${q(t)}`),
  ];
  const stagedKeys = new Set(objectsOf(staged).map(key));
  const stale = live
    ? [...live.views.filter((v) => !clashing.includes(v)), ...live.routines, ...live.events].filter(
        (o) => !stagedKeys.has(key(o)),
      )
    : [];
  const defaults = (s: SchemaSnapshot): Statement => ({
    sql: `ALTER DATABASE ${q(db)} CHARACTER SET ${s.charset} COLLATE ${s.collation}`,
  });
  return {
    prepare: [...staged.triggers.map((t) => drop(t, staging)), ...staged.events.map((e) => drop(e, staging))],
    detach: live ? [...live.triggers.map((t) => drop(t, db)), ...clashing.map((v) => drop(v, db))] : [],
    rename: renames.length > 0 ? { sql: `RENAME TABLE ${renames.join(', ')}` } : null,
    attach: [
      defaults(staged),
      ...createAll(staged.views, db, staged.collation, flavor, true),
      ...createAll([...staged.routines, ...staged.events], db, staged.collation, flavor, true),
      ...createAll(staged.triggers, db, staged.collation, flavor, false),
      ...stale.map((o) => drop(o, db)),
    ],
    undoAttach: [
      ...objectsOf(staged)
        .reverse()
        .map((o) => drop(o, db)),
      ...(live ? [defaults(live)] : []),
    ],
    undoRename: undoRenames.length > 0 ? { sql: `RENAME TABLE ${undoRenames.join(', ')}` } : null,
    undoDetach: live
      ? [
          ...createAll([...live.views, ...live.routines, ...live.events], db, live.collation, flavor, true),
          ...createAll(live.triggers, db, live.collation, flavor, false),
        ]
      : [],
  };
}

/** Session state restored after each object's own settings (so names in later DDL stay utf8mb4). */
const RESET = [
  'SET SESSION character_set_client = utf8mb4',
  'SET SESSION collation_connection = utf8mb4_general_ci',
  'SET SESSION sql_mode = envsnap_sql_mode',
  'SET SESSION time_zone = envsnap_time_zone',
];

function blockStatement(s: Statement): string {
  const lines: string[] = [];
  if (s.settings) {
    lines.push(`SET SESSION sql_mode = ${hexString(s.settings.sqlMode)};`);
    lines.push(`SET SESSION character_set_client = ${hexString(s.settings.charsetClient)};`);
    lines.push(`SET SESSION collation_connection = ${hexString(s.settings.collationConnection)};`);
    if (s.settings.timeZone) lines.push(`SET SESSION time_zone = ${hexString(s.settings.timeZone)};`);
  }
  lines.push(`EXECUTE IMMEDIATE ${hexString(s.sql)};`);
  if (s.settings) lines.push(...RESET.map((r) => r + ';'));
  return lines.join('\n');
}

const DELIMITER = '$$envsnap$$';

/**
 * The MariaDB client script of a swap: `USE` the live schema, then one compound statement that
 * runs the phases and, on any error, undoes them and fails with the error (see the file comment).
 * All names and definitions are inside hex literals, so the script is plain ASCII.
 */
export function renderSwapBlock(db: string, plan: SwapPlan): string {
  const body = (stmts: Statement[]): string => stmts.map(blockStatement).join('\n');
  const undo = [
    `IF envsnap_step >= 3 THEN\n${body(plan.undoAttach)}\nEND IF;`,
    plan.undoRename ? `IF envsnap_step >= 2 THEN\n${body([plan.undoRename])}\nEND IF;` : '',
    `IF envsnap_step >= 1 THEN\n${body(plan.undoDetach)}\nEND IF;`,
  ].filter((s) => !/THEN\n\nEND IF;$/.test(s) && s !== '');
  return [
    lockWait(),
    `USE ${quoteIdent(db)};`,
    `DELIMITER ${DELIMITER}`,
    'BEGIN NOT ATOMIC',
    '  DECLARE envsnap_step INT DEFAULT 0;',
    '  DECLARE envsnap_sql_mode TEXT DEFAULT @@session.sql_mode;',
    '  DECLARE envsnap_time_zone TEXT DEFAULT @@session.time_zone;',
    '  DECLARE EXIT HANDLER FOR SQLEXCEPTION',
    '  BEGIN',
    '    DECLARE envsnap_errno INT DEFAULT 0;',
    "    DECLARE envsnap_message TEXT DEFAULT '';",
    '    GET DIAGNOSTICS CONDITION 1 envsnap_errno = MYSQL_ERRNO, envsnap_message = MESSAGE_TEXT;',
    ...RESET.map((r) => `    ${r};`),
    '    BEGIN',
    '      DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END;',
    ...undo,
    '    END;',
    "    SET envsnap_message = LEFT(CONCAT('swap into the live database failed and was undone: ', envsnap_message), 500);",
    "    SIGNAL SQLSTATE 'HY000' SET MESSAGE_TEXT = envsnap_message, MYSQL_ERRNO = envsnap_errno;",
    '  END;',
    body(plan.prepare),
    'SET envsnap_step = 1;',
    body(plan.detach),
    plan.rename ? body([plan.rename]) : '',
    'SET envsnap_step = 2;',
    'SET envsnap_step = 3;',
    body(plan.attach),
    `END${DELIMITER}`,
    'DELIMITER ;',
    '',
  ].join('\n');
}

/** The same swap as plain statements, for MySQL (no undo; see the file comment). */
export function renderSwapScript(db: string, plan: SwapPlan): string {
  return renderScript(db, [
    ...plan.prepare,
    ...plan.detach,
    ...(plan.rename ? [plan.rename] : []),
    ...plan.attach,
  ]);
}

function renderScript(db: string, statements: Statement[]): string {
  const lines = [lockWait(), `USE ${quoteIdent(db)};`, `DELIMITER ${DELIMITER}`];
  for (const s of statements) {
    if (s.settings) {
      lines.push(`SET SESSION sql_mode = ${hexString(s.settings.sqlMode)}${DELIMITER}`);
      if (s.settings.timeZone)
        lines.push(`SET SESSION time_zone = ${hexString(s.settings.timeZone)}${DELIMITER}`);
    }
    lines.push(s.sql + DELIMITER);
  }
  lines.push('DELIMITER ;', '');
  return lines.join('\n');
}

function lockWait(): string {
  return `SET SESSION lock_wait_timeout = LEAST(@@global.lock_wait_timeout, ${SWAP_LOCK_WAIT_SECONDS});`;
}

/**
 * Statements that recreate `live`'s views, routines, events (disabled, so that they cannot fire
 * against anything from the copy) and triggers in the pre-restore schema `pre`, whose tables are
 * the old live tables, so that the copy is whole. Rendered for MariaDB as one compound statement
 * that skips (and counts) objects that fail; prints that count.
 */
export function renderPreRestoreCopy(pre: string, live: SchemaSnapshot, flavor: Flavor): string {
  const statements: Statement[] = [
    { sql: `ALTER DATABASE ${quoteIdent(pre)} CHARACTER SET ${live.charset} COLLATE ${live.collation}` },
    ...createAll([...live.views, ...live.routines], pre, live.collation, flavor, false),
    ...live.events.flatMap((e) => [
      ...createAll([e], pre, live.collation, flavor, false),
      { sql: `ALTER EVENT ${quoteIdent(e.name)} DISABLE` },
    ]),
    ...createAll(live.triggers, pre, live.collation, flavor, false),
  ];
  if (flavor === 'mysql') return renderScript(pre, statements);
  return [
    `USE ${quoteIdent(pre)};`,
    `DELIMITER ${DELIMITER}`,
    'BEGIN NOT ATOMIC',
    '  DECLARE envsnap_failed INT DEFAULT 0;',
    '  DECLARE envsnap_sql_mode TEXT DEFAULT @@session.sql_mode;',
    '  DECLARE envsnap_time_zone TEXT DEFAULT @@session.time_zone;',
    '  DECLARE CONTINUE HANDLER FOR SQLEXCEPTION SET envsnap_failed = envsnap_failed + 1;',
    statements.map(blockStatement).join('\n'),
    '  SELECT envsnap_failed;',
    `END${DELIMITER}`,
    'DELIMITER ;',
    '',
  ].join('\n');
}
