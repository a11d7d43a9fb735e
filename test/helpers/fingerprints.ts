/**
 * Fingerprints: plain, deterministic objects describing a database, a Redis keyspace or a
 * directory tree, so that `assert.deepStrictEqual(before, after)` proves a restore equals the
 * backup (and a failing assertion shows what differs).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import type { MariadbServer, PostgresServer, RedisServer } from './servers.js';

// ---------------------------------------------------------------------------------------------
// MariaDB.

/** One base table of a MariaDB database. */
export interface MariadbTableFingerprint {
  engine: string;
  rows: number;
  /** `CHECKSUM TABLE` result (decimal string). */
  checksum: string;
  /** `SHOW CREATE TABLE` (columns, keys, foreign keys, options incl. AUTO_INCREMENT). */
  createTable: string;
}

/** A MariaDB database's content and schema objects, keyed and ordered by name. */
export interface MariadbFingerprint {
  database: { charset: string; collation: string };
  tables: Record<string, MariadbTableFingerprint>;
  views: Record<string, { definition: string; definer: string; securityType: string; checkOption: string }>;
  /** Keyed `PROCEDURE name` / `FUNCTION name`. */
  routines: Record<
    string,
    {
      name: string;
      type: string;
      definition: string;
      returns: string;
      parameters: string;
      deterministic: string;
      dataAccess: string;
      securityType: string;
      definer: string;
    }
  >;
  triggers: Record<
    string,
    { event: string; table: string; timing: string; order: number; statement: string; definer: string }
  >;
  events: Record<
    string,
    { definition: string; type: string; executeAt: string; interval: string; status: string; definer: string }
  >;
}

/** Undoes the mariadb client's --batch escaping of one field (`\\t`, `\\n`, `\\0`, `\\\\`). */
function unescapeBatch(field: string): string {
  return field.replace(
    /\\([0tn\\])/g,
    (_, c: string) => ({ '0': '\0', t: '\t', n: '\n', '\\': '\\' })[c] ?? c,
  );
}

/** Runs a query and splits the --batch output into rows of unescaped fields. */
async function mariadbRows(server: MariadbServer, sql: string, db?: string): Promise<string[][]> {
  const out = await server.query(sql, db);
  return out
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split('\t').map(unescapeBatch));
}

function mdIdent(name: string): string {
  return '`' + name.replace(/`/g, '``') + '`';
}

function mdString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function field(row: string[], index: number): string {
  const value = row[index];
  if (value === undefined)
    throw new Error(`fingerprint: missing column ${index} in row ${JSON.stringify(row)}`);
  return value;
}

/**
 * Fingerprints a MariaDB database: per base table its engine, row count, `CHECKSUM TABLE` and
 * `SHOW CREATE TABLE`; views (information_schema.VIEWS definition, definer, security, check
 * option); routines (name, type, body, return type, parameters, characteristics, definer);
 * triggers (event, table, timing, order, statement, definer); events. All keyed by name.
 *
 * @param server a running server
 * @param db database name
 * @returns a JSON-serialisable object; equal for equal databases
 * @throws Error when the database does not exist
 */
export async function mariadbFingerprint(server: MariadbServer, db: string): Promise<MariadbFingerprint> {
  const schema = mdString(db);
  const schemata = await mariadbRows(
    server,
    `SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ${schema};`,
  );
  const [charsetRow] = schemata;
  if (charsetRow === undefined) throw new Error(`mariadbFingerprint: database ${db} does not exist`);

  const tableRows = await mariadbRows(
    server,
    `SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES
     WHERE TABLE_SCHEMA = ${schema} AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME;`,
  );
  const names = tableRows.map((row) => field(row, 0));
  const tables: Record<string, MariadbTableFingerprint> = {};
  if (names.length > 0) {
    const qualified = names.map((name) => `${mdIdent(db)}.${mdIdent(name)}`);
    // Output order of CHECKSUM TABLE and of the UNION follows the input order.
    const checksums = await mariadbRows(server, `CHECKSUM TABLE ${qualified.join(', ')};`);
    const counts = await mariadbRows(
      server,
      qualified.map((q, i) => `SELECT ${i}, COUNT(*) FROM ${q}`).join('\nUNION ALL\n') + ';',
    );
    const creates = await mariadbRows(
      server,
      names.map((name) => `SHOW CREATE TABLE ${mdIdent(name)};`).join('\n'),
      db,
    );
    if (
      checksums.length !== names.length ||
      counts.length !== names.length ||
      creates.length !== names.length
    ) {
      throw new Error(`mariadbFingerprint: table list of ${db} changed while fingerprinting`);
    }
    const rowsByIndex = new Map(counts.map((row) => [Number(field(row, 0)), Number(field(row, 1))]));
    names.forEach((name, i) => {
      tables[name] = {
        engine: field(tableRows[i] ?? [], 1),
        rows: rowsByIndex.get(i) ?? -1,
        checksum: field(checksums[i] ?? [], 1),
        createTable: field(creates[i] ?? [], 1),
      };
    });
  }

  const views: MariadbFingerprint['views'] = {};
  for (const row of await mariadbRows(
    server,
    `SELECT TABLE_NAME, VIEW_DEFINITION, DEFINER, SECURITY_TYPE, CHECK_OPTION FROM information_schema.VIEWS
     WHERE TABLE_SCHEMA = ${schema} ORDER BY TABLE_NAME;`,
  )) {
    views[field(row, 0)] = {
      definition: field(row, 1),
      definer: field(row, 2),
      securityType: field(row, 3),
      checkOption: field(row, 4),
    };
  }

  const parameters = new Map<string, string>();
  for (const row of await mariadbRows(
    server,
    `SELECT SPECIFIC_NAME, ROUTINE_TYPE,
            GROUP_CONCAT(CONCAT_WS(' ', PARAMETER_MODE, PARAMETER_NAME, DTD_IDENTIFIER)
                         ORDER BY ORDINAL_POSITION SEPARATOR ', ')
     FROM information_schema.PARAMETERS
     WHERE SPECIFIC_SCHEMA = ${schema} AND ORDINAL_POSITION > 0
     GROUP BY SPECIFIC_NAME, ROUTINE_TYPE;`,
  )) {
    parameters.set(`${field(row, 1)} ${field(row, 0)}`, field(row, 2));
  }
  const routines: MariadbFingerprint['routines'] = {};
  for (const row of await mariadbRows(
    server,
    `SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION, DTD_IDENTIFIER, IS_DETERMINISTIC, SQL_DATA_ACCESS,
            SECURITY_TYPE, DEFINER
     FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ${schema} ORDER BY ROUTINE_TYPE, ROUTINE_NAME;`,
  )) {
    const key = `${field(row, 0)} ${field(row, 1)}`;
    routines[key] = {
      name: field(row, 1),
      type: field(row, 0),
      definition: field(row, 2),
      returns: field(row, 3),
      parameters: parameters.get(key) ?? '',
      deterministic: field(row, 4),
      dataAccess: field(row, 5),
      securityType: field(row, 6),
      definer: field(row, 7),
    };
  }

  const triggers: MariadbFingerprint['triggers'] = {};
  for (const row of await mariadbRows(
    server,
    `SELECT TRIGGER_NAME, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_TIMING, ACTION_ORDER, ACTION_STATEMENT,
            DEFINER
     FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ${schema} ORDER BY TRIGGER_NAME;`,
  )) {
    triggers[field(row, 0)] = {
      event: field(row, 1),
      table: field(row, 2),
      timing: field(row, 3),
      order: Number(field(row, 4)),
      statement: field(row, 5),
      definer: field(row, 6),
    };
  }

  const events: MariadbFingerprint['events'] = {};
  for (const row of await mariadbRows(
    server,
    `SELECT EVENT_NAME, EVENT_DEFINITION, EVENT_TYPE, EXECUTE_AT, CONCAT_WS(' ', INTERVAL_VALUE, INTERVAL_FIELD),
            STATUS, DEFINER
     FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ${schema} ORDER BY EVENT_NAME;`,
  )) {
    events[field(row, 0)] = {
      definition: field(row, 1),
      type: field(row, 2),
      executeAt: field(row, 3),
      interval: field(row, 4),
      status: field(row, 5),
      definer: field(row, 6),
    };
  }

  return {
    database: { charset: field(charsetRow, 0), collation: field(charsetRow, 1) },
    tables,
    views,
    routines,
    triggers,
    events,
  };
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.

/** One table of a PostgreSQL database (rows of inheritance children are not counted in the parent). */
export interface PostgresTableFingerprint {
  /** `r` table, `p` partitioned table. */
  kind: string;
  rows: number;
  /** md5 of every row's text form, sorted (C collation) and joined with '|' (`FROM ONLY`). */
  md5: string;
  /** `name type [not null] [default expr] [identity/generated]`, in column order. */
  columns: string[];
  /** `name: pg_get_constraintdef`, sorted. */
  constraints: string[];
  /** Parent tables (inheritance), sorted. */
  inherits: string[];
}

/** A PostgreSQL database's content and schema objects, in all non-system schemas, keyed `schema.name`. */
export interface PostgresFingerprint {
  tables: Record<string, PostgresTableFingerprint>;
  /** `pg_indexes.indexdef` keyed by index. */
  indexes: Record<string, string>;
  views: Record<string, { kind: string; definition: string }>;
  /** Keyed `schema.name(identity args)`. */
  functions: Record<
    string,
    { kind: string; result: string; language: string; volatility: string; srcMd5: string }
  >;
  /** Keyed `schema.table.rule`: `pg_get_ruledef` (view `_RETURN` rules excluded). */
  rules: Record<string, string>;
  /** Keyed `schema.table.trigger`: `pg_get_triggerdef` and enabled flag. */
  triggers: Record<string, { definition: string; enabled: string }>;
  /** last_value (null when never called), increment, bounds. */
  sequences: Record<
    string,
    { lastValue: string | null; start: string; increment: string; max: string; type: string }
  >;
  /** Enum labels in sort order. */
  enums: Record<string, string[]>;
  domains: Record<
    string,
    { baseType: string; notNull: boolean; default: string | null; constraints: string[] }
  >;
  /** Extension versions. */
  extensions: Record<string, string>;
}

const USER_SCHEMAS = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'`;

async function pgJson<T>(server: PostgresServer, db: string, sql: string): Promise<T> {
  const out = (await server.psql(sql, db)).trim();
  return JSON.parse(out === '' ? 'null' : out) as T;
}

/**
 * Runs several `SELECT jsonb_object_agg(...) FROM ...` queries (no trailing semicolon) in one
 * psql call and returns each result by name ({} when the query found nothing).
 */
async function pgObjects<K extends string>(
  server: PostgresServer,
  db: string,
  sections: Record<K, string>,
): Promise<Record<K, Record<string, unknown>>> {
  const names = Object.keys(sections) as K[];
  const sql = names.map((name) => `SELECT coalesce((${sections[name]}), '{}'::jsonb);`).join('\n');
  const lines = (await server.psql(sql, db)).split('\n').filter((line) => line !== '');
  if (lines.length !== names.length) {
    throw new Error(`postgresFingerprint: expected ${names.length} result lines, got ${lines.length}`);
  }
  const out = {} as Record<K, Record<string, unknown>>;
  names.forEach((name, i) => {
    out[name] = JSON.parse(lines[i] ?? '{}') as Record<string, unknown>;
  });
  return out;
}

/**
 * Fingerprints a PostgreSQL database (all non-system schemas): per table its row count and an
 * ordered md5 of its rows (`FROM ONLY`, so inheritance children are counted once, in themselves),
 * columns, constraints and parents; indexes; views and materialized views (pg_get_viewdef);
 * functions and aggregates (kind, result, language, volatility, md5 of prosrc); triggers
 * (pg_get_triggerdef); rules (pg_rules); sequences (last_value); enum labels in order; domains; extensions.
 *
 * @param server a running server
 * @param db database name
 * @returns a JSON-serialisable object; equal for equal databases
 */
export async function postgresFingerprint(server: PostgresServer, db: string): Promise<PostgresFingerprint> {
  type TableRow = {
    name: string;
    kind: string;
    columns: string[] | null;
    constraints: string[] | null;
    inherits: string[] | null;
  };
  const tableRows =
    (await pgJson<TableRow[] | null>(
      server,
      db,
      `SELECT jsonb_agg(jsonb_build_object(
         'name', format('%I.%I', n.nspname, c.relname),
         'kind', c.relkind,
         'columns', (SELECT jsonb_agg(concat_ws(' ', quote_ident(a.attname), format_type(a.atttypid, a.atttypmod),
                                      CASE WHEN a.attnotnull THEN 'not null' END,
                                      'default ' || pg_get_expr(d.adbin, d.adrelid),
                                      CASE a.attidentity WHEN 'a' THEN 'identity always' WHEN 'd' THEN 'identity by default' END,
                                      CASE a.attgenerated WHEN 's' THEN 'generated stored' END)
                                      ORDER BY a.attnum)
                     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
         'constraints', (SELECT jsonb_agg(co.conname || ': ' || pg_get_constraintdef(co.oid) ORDER BY co.conname)
                         FROM pg_constraint co WHERE co.conrelid = c.oid),
         'inherits', (SELECT jsonb_agg(format('%I.%I', pn.nspname, pc.relname) ORDER BY pn.nspname, pc.relname)
                      FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
                      JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE i.inhrelid = c.oid)
       ) ORDER BY n.nspname, c.relname)
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind IN ('r', 'p') AND ${USER_SCHEMAS};`,
    )) ?? [];
  const tables: Record<string, PostgresTableFingerprint> = {};
  if (tableRows.length > 0) {
    const hashSql = tableRows
      .map(
        (t) =>
          `SELECT jsonb_build_object('name', ${pgLiteral(t.name)}, 'rows', count(*), ` +
          `'md5', md5(coalesce(string_agg(t::text, '|' ORDER BY t::text COLLATE "C"), ''))) FROM ONLY ${t.name} t;`,
      )
      .join('\n');
    const hashes = new Map<string, { rows: number; md5: string }>();
    for (const line of (await server.psql(hashSql, db)).split('\n')) {
      if (line.trim() === '') continue;
      const h = JSON.parse(line) as { name: string; rows: number; md5: string };
      hashes.set(h.name, { rows: h.rows, md5: h.md5 });
    }
    for (const t of tableRows) {
      const h = hashes.get(t.name);
      if (h === undefined) throw new Error(`postgresFingerprint: no row hash for ${t.name}`);
      tables[t.name] = {
        kind: t.kind,
        rows: h.rows,
        md5: h.md5,
        columns: t.columns ?? [],
        constraints: t.constraints ?? [],
        inherits: t.inherits ?? [],
      };
    }
  }

  // The other sections in one psql call: one jsonb object per line, in this order.
  const sections = {
    indexes: `SELECT jsonb_object_agg(format('%I.%I', schemaname, indexname), indexdef) FROM pg_indexes
       WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND schemaname NOT LIKE 'pg\\_%'`,
    views: `SELECT jsonb_object_agg(format('%I.%I', n.nspname, c.relname),
                               jsonb_build_object('kind', c.relkind, 'definition', pg_get_viewdef(c.oid, true)))
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind IN ('v', 'm') AND ${USER_SCHEMAS}`,
    functions: `SELECT jsonb_object_agg(format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
                               jsonb_build_object('kind', p.prokind, 'result', pg_get_function_result(p.oid),
                                                  'language', l.lanname, 'volatility', p.provolatile,
                                                  'srcMd5', md5(coalesce(p.prosrc, ''))))
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
       WHERE ${USER_SCHEMAS}`,
    triggers: `SELECT jsonb_object_agg(format('%I.%I.%I', n.nspname, c.relname, tg.tgname),
                               jsonb_build_object('definition', pg_get_triggerdef(tg.oid, true), 'enabled', tg.tgenabled))
       FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE NOT tg.tgisinternal AND ${USER_SCHEMAS}`,
    rules: `SELECT jsonb_object_agg(format('%I.%I.%I', schemaname, tablename, rulename), definition) FROM pg_rules
       WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND schemaname NOT LIKE 'pg\\_%'`,
    sequences: `SELECT jsonb_object_agg(format('%I.%I', schemaname, sequencename),
                               jsonb_build_object('lastValue', last_value::text, 'start', start_value::text,
                                                  'increment', increment_by::text, 'max', max_value::text,
                                                  'type', data_type::text))
       FROM pg_sequences WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`,
    enums: `SELECT jsonb_object_agg(name, labels) FROM (
         SELECT format('%I.%I', n.nspname, t.typname) AS name, jsonb_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
         WHERE ${USER_SCHEMAS} GROUP BY 1) s`,
    domains: `SELECT jsonb_object_agg(format('%I.%I', n.nspname, t.typname), jsonb_build_object(
         'baseType', format_type(t.typbasetype, t.typtypmod), 'notNull', t.typnotnull, 'default', t.typdefault,
         'constraints', coalesce((SELECT jsonb_agg(co.conname || ': ' || pg_get_constraintdef(co.oid) ORDER BY co.conname)
                                  FROM pg_constraint co WHERE co.contypid = t.oid), '[]'::jsonb)))
       FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
       WHERE t.typtype = 'd' AND ${USER_SCHEMAS}`,
    extensions: 'SELECT jsonb_object_agg(extname, extversion) FROM pg_extension',
  };
  const objects = await pgObjects(server, db, sections);

  return {
    tables,
    indexes: sortKeys(objects.indexes as Record<string, string>),
    views: sortKeys(objects.views as PostgresFingerprint['views']),
    functions: sortKeys(objects.functions as PostgresFingerprint['functions']),
    triggers: sortKeys(objects.triggers as PostgresFingerprint['triggers']),
    rules: sortKeys(objects.rules as Record<string, string>),
    sequences: sortKeys(objects.sequences as PostgresFingerprint['sequences']),
    enums: sortKeys(objects.enums as Record<string, string[]>),
    domains: sortKeys(objects.domains as PostgresFingerprint['domains']),
    extensions: sortKeys(objects.extensions as Record<string, string>),
  };
}

function pgLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** A copy of `record` whose keys are inserted in code-point order (stable JSON output). */
function sortKeys<T>(record: Record<string, T>): Record<string, T> {
  const out: Record<string, T> = {};
  for (const key of Object.keys(record).sort(compare)) out[key] = record[key]!;
  return out;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Redis.

/** A stream's entries, metadata and consumer groups. */
export interface RedisStreamValue {
  entries: [id: string, fields: string[]][];
  length: number;
  lastGeneratedId: string;
  maxDeletedEntryId: string;
  entriesAdded: number;
  groups: {
    name: string;
    lastDeliveredId: string;
    entriesRead: number | null;
    pending: number;
    consumers: { name: string; pending: number }[];
    /** Pending entries: id, consumer, delivery count (idle times left out). */
    pendingEntries: [id: string, consumer: string, deliveries: number][];
  }[];
}

/** One key: type, canonical value and absolute expiry. */
export interface RedisKeyFingerprint {
  type: string;
  /**
   * string: hex of the raw bytes; list: items; set: sorted members; zset: [member, score] in
   * rank order; hash: [field, value] sorted by field; stream: {@link RedisStreamValue}.
   * Elements are UTF-8 text when valid, else `hex:<bytes>`.
   */
  value: string | string[] | [string, string][] | RedisStreamValue;
  /** PEXPIRETIME: absolute Unix time in ms, -1 for no expiry. */
  expireAt: number;
}

/** Keys per database index (only databases holding keys), keys sorted. */
export type RedisFingerprint = Record<number, Record<string, RedisKeyFingerprint>>;

/** Text when `buf` is valid UTF-8 (round-trips), else `hex:...`. */
function show(buf: Buffer): string {
  const text = buf.toString('utf8');
  return Buffer.from(text, 'utf8').equals(buf) ? text : `hex:${buf.toString('hex')}`;
}

function buffers(reply: unknown, what: string): Buffer[] {
  if (!Array.isArray(reply) || !reply.every((item) => Buffer.isBuffer(item))) {
    throw new Error(`redisFingerprint: unexpected ${what} reply`);
  }
  return reply;
}

function pairs(flat: Buffer[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([show(flat[i]!), show(flat[i + 1]!)]);
  return out;
}

/** Turns a flat `[k1, v1, k2, v2, ...]` reply into a map. */
function flatMap(reply: unknown): Map<string, unknown> {
  const map = new Map<string, unknown>();
  if (!Array.isArray(reply)) return map;
  for (let i = 0; i + 1 < reply.length; i += 2) map.set(String(reply[i]), reply[i + 1]);
  return map;
}

async function streamValue(client: Redis, key: Buffer): Promise<RedisStreamValue> {
  const raw = await client.callBuffer('XRANGE', key, '-', '+');
  if (!Array.isArray(raw)) throw new Error('redisFingerprint: unexpected XRANGE reply');
  const entries = raw.map((entry): [string, string[]] => {
    const [id, fields] = entry as [Buffer, Buffer[]];
    return [id.toString(), buffers(fields, 'XRANGE fields').map(show)];
  });
  const info = flatMap(await client.call('XINFO', 'STREAM', key));
  const groupsReply = await client.call('XINFO', 'GROUPS', key);
  const groups: RedisStreamValue['groups'] = [];
  for (const g of Array.isArray(groupsReply) ? groupsReply : []) {
    const gm = flatMap(g);
    const name = String(gm.get('name'));
    const consumersReply = await client.call('XINFO', 'CONSUMERS', key, name);
    const consumers = (Array.isArray(consumersReply) ? consumersReply : [])
      .map((c) => flatMap(c))
      .map((cm) => ({ name: String(cm.get('name')), pending: Number(cm.get('pending')) }))
      .sort((a, b) => compare(a.name, b.name));
    const pendingReply = await client.call('XPENDING', key, name, '-', '+', '1000000');
    const pendingEntries = (Array.isArray(pendingReply) ? pendingReply : []).map(
      (p): [string, string, number] => {
        const [id, consumer, , deliveries] = p as [string, string, number, number];
        return [String(id), String(consumer), Number(deliveries)];
      },
    );
    const entriesRead = gm.get('entries-read');
    groups.push({
      name,
      lastDeliveredId: String(gm.get('last-delivered-id')),
      entriesRead: entriesRead === null || entriesRead === undefined ? null : Number(entriesRead),
      pending: Number(gm.get('pending')),
      consumers,
      pendingEntries,
    });
  }
  groups.sort((a, b) => compare(a.name, b.name));
  return {
    entries,
    length: Number(info.get('length')),
    lastGeneratedId: String(info.get('last-generated-id')),
    maxDeletedEntryId: String(info.get('max-deleted-entry-id')),
    entriesAdded: Number(info.get('entries-added')),
    groups,
  };
}

async function keyFingerprint(client: Redis, key: Buffer): Promise<RedisKeyFingerprint> {
  const type = await client.type(key);
  let value: RedisKeyFingerprint['value'];
  switch (type) {
    case 'string': {
      const buf = await client.getBuffer(key);
      value = buf === null ? '' : buf.toString('hex');
      break;
    }
    case 'list':
      value = buffers(await client.callBuffer('LRANGE', key, 0, -1), 'LRANGE').map(show);
      break;
    case 'set':
      value = buffers(await client.callBuffer('SMEMBERS', key), 'SMEMBERS')
        .map(show)
        .sort(compare);
      break;
    case 'zset':
      value = pairs(buffers(await client.callBuffer('ZRANGE', key, 0, -1, 'WITHSCORES'), 'ZRANGE'));
      break;
    case 'hash':
      value = pairs(buffers(await client.callBuffer('HGETALL', key), 'HGETALL')).sort((a, b) =>
        compare(a[0], b[0]),
      );
      break;
    case 'stream':
      value = await streamValue(client, key);
      break;
    default:
      throw new Error(`redisFingerprint: key ${show(key)} has unsupported type ${type}`);
  }
  const expireAt = Number(await client.call('PEXPIRETIME', key));
  return { type, value, expireAt };
}

/**
 * Fingerprints every database of a Redis server that holds keys: for each key its type, a
 * canonical value (raw bytes for strings) and its absolute expiry (PEXPIRETIME, Redis 7), so a
 * restore that keeps exact expiries compares equal. Keys are read as bytes (binary names work).
 *
 * @param server a running server
 * @returns `{ [db]: { [key]: { type, value, expireAt } } }`, keys sorted
 */
export async function redisFingerprint(server: RedisServer): Promise<RedisFingerprint> {
  const client = server.client(0);
  try {
    const keyspace = await client.info('keyspace');
    const dbs = [...keyspace.matchAll(/^db(\d+):keys=(\d+)/gm)]
      .filter((m) => Number(m[2]) > 0)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    const out: RedisFingerprint = {};
    for (const db of dbs) {
      await client.select(db);
      const keys: Buffer[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await client.scanBuffer(cursor, 'COUNT', 1000);
        cursor = next.toString();
        keys.push(...batch);
      } while (cursor !== '0');
      const unique = new Map(keys.map((key) => [show(key), key]));
      const entries: Record<string, RedisKeyFingerprint> = {};
      for (const name of [...unique.keys()].sort(compare)) {
        entries[name] = await keyFingerprint(client, unique.get(name) as Buffer);
      }
      out[db] = entries;
    }
    return out;
  } finally {
    client.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------
// Directory trees.

/** One entry of a tree (the root itself is not listed). */
export interface TreeEntry {
  /** Relative path, '/'-separated. */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  /** Permission bits incl. setuid/setgid/sticky (`mode & 0o7777`). */
  mode: number;
  uid: number;
  gid: number;
  /** Whole seconds (lstat, so a symlink's own mtime). */
  mtimeSec: number;
  /** Bytes for files; target length for symlinks; absent for directories (size depends on the file system). */
  size?: number;
  /** Hex SHA-256 of a file's content. */
  sha256?: string;
  /** A symlink's target text, as stored. */
  target?: string;
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * Fingerprints a directory tree: every entry below `dir` (symlinks not followed), sorted by
 * path, with type, mode, owner, mtime in whole seconds, and SHA-256 + size for files or target
 * for symlinks. Nothing is skipped: sockets, FIFOs and devices make it throw.
 *
 * @param dir root directory
 * @returns entries sorted by path (code-point order)
 * @throws Error on an entry of an unsupported type
 */
export async function treeFingerprint(dir: string): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  const walk = async (rel: string): Promise<void> => {
    const names = await readdir(rel === '' ? dir : path.join(dir, rel));
    for (const name of names) {
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const abs = path.join(dir, childRel);
      const st = await lstat(abs);
      const common = {
        path: childRel,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        mtimeSec: Math.floor(st.mtimeMs / 1000),
      };
      if (st.isSymbolicLink()) {
        out.push({ ...common, type: 'symlink', size: st.size, target: await readlink(abs) });
      } else if (st.isDirectory()) {
        out.push({ ...common, type: 'dir' });
        await walk(childRel);
      } else if (st.isFile()) {
        out.push({ ...common, type: 'file', size: st.size, sha256: await sha256File(abs) });
      } else {
        throw new Error(`treeFingerprint: ${abs} is neither file, directory nor symlink`);
      }
    }
  };
  await walk('');
  return out.sort((a, b) => compare(a.path, b.path));
}
