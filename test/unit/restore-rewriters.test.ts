/**
 * The stream rewriters of safe restores, on every way a stream can be cut into chunks: the
 * generic line rewriter, the MariaDB dump rewriter (staging schema, trigger heads), the rewriter
 * of pg_restore's script, and the names of staging and pre-restore databases.
 */
import assert from 'node:assert/strict';
import { Readable, type Transform } from 'node:stream';
import { text as streamText } from 'node:stream/consumers';

import { createLineRewriter } from '../../agent/engines/line-rewriter.js';
import { rewriteDumpToStaging } from '../../agent/engines/mariadb-dump-rewrite.js';
import { unqualifyTriggerHead } from '../../agent/engines/mariadb-trigger-head.js';
import {
  connectLine,
  connectTarget,
  rewritePgScriptToStaging,
} from '../../agent/engines/postgresql-script-rewrite.js';
import {
  isRestoreWorkName,
  MARIADB_NAME_LIMIT,
  POSTGRES_NAME_LIMIT,
  preRestoreName,
  stagingName,
} from '../../agent/engines/staging-names.js';
import { ArtifactCorruptError } from '../../shared/errors.js';

/** Runs `input` through a fresh transform, cut into chunks of `size` bytes. */
async function through(make: () => Transform, input: string, size: number): Promise<string> {
  const bytes = Buffer.from(input, 'utf8');
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  return streamText(Readable.from(chunks).pipe(make()));
}

/** The same output for every chunk size (1, 2, 3, 5, 7, 64 bytes and whole). */
async function rewriteAll(make: () => Transform, input: string): Promise<string> {
  const outputs = new Set<string>();
  for (const size of [1, 2, 3, 5, 7, 64, input.length + 1]) outputs.add(await through(make, input, size));
  assert.equal(outputs.size, 1, 'output depends on how the input is cut');
  return [...outputs][0] ?? '';
}

async function rejectsAll(make: () => Transform, input: string, match: RegExp): Promise<void> {
  for (const size of [1, 3, 64, input.length + 1]) {
    await assert.rejects(through(make, input, size), (err: unknown) => {
      assert.ok(err instanceof ArtifactCorruptError, String(err));
      assert.match(err.message, match);
      return true;
    });
  }
}

describe('restore rewriters', () => {
  describe('line rewriter', () => {
    const make = (): Transform =>
      createLineRewriter(
        {
          wants: (head) => head.toString('latin1').startsWith('EDIT '),
          edit: (line) => (line === 'EDIT keep' ? undefined : line.replace('EDIT', 'DONE')),
        },
        { maxLineBytes: 16, peekBytes: 8 },
      );

    it('replaces wanted lines and passes every other byte on, long lines included', async () => {
      const long = 'x'.repeat(100);
      const input = `EDIT one\n${long}\nEDIT keep\ncafé ☕\r\nEDIT last`;
      assert.equal(await rewriteAll(make, input), `DONE one\n${long}\nEDIT keep\ncafé ☕\r\nDONE last`);
      assert.equal(await rewriteAll(make, ''), '');
      assert.equal(await rewriteAll(make, '\n\n'), '\n\n');
    });

    it('fails on a wanted line longer than the limit', async () => {
      await assert.rejects(through(make, `EDIT ${'y'.repeat(40)}\n`, 3), /line too long to check/);
    });

    it('skips bulk data up to a terminator line, wherever the chunks are cut', async () => {
      let inData = false;
      const copy = (): Transform =>
        createLineRewriter(
          {
            skipUntilLine: () => (inData ? '\\.' : undefined),
            wants: () => true,
            edit: (line) => {
              if (inData) {
                // Skipped data never reaches the editor: only its terminator line does.
                if (line !== '\\.') throw new Error(`data line handed to the editor: ${line}`);
                inData = false;
                return undefined;
              }
              if (line.startsWith('COPY')) inData = true;
              return line.toUpperCase();
            },
          },
          { maxLineBytes: 64 },
        );
      const data =
        'copy t;\nCOPY x\nedit me\n\\.x\n \\.\n\\\\.\n' + 'z'.repeat(300) + '\n\\.\nafter\nCOPY y\n\\.\nend';
      const out = await rewriteAll(() => {
        inData = false;
        return copy();
      }, data);
      assert.equal(
        out,
        'COPY T;\nCOPY X\nedit me\n\\.x\n \\.\n\\\\.\n' + 'z'.repeat(300) + '\n\\.\nAFTER\nCOPY Y\n\\.\nEND',
      );
    });
  });

  describe('mariadb dump to staging', () => {
    const make = (): Transform => rewriteDumpToStaging('shop', 'shop__envsnap_staging');
    const head =
      '-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n\n--\n-- Current Database: `shop`\n--\n\n' +
      '/*!40000 DROP DATABASE IF EXISTS `shop`*/;\n\n' +
      'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n\nUSE `shop`;\n';

    it('points the database statements at the staging schema and leaves data alone', async () => {
      const body =
        "INSERT INTO `t` VALUES (1,'USE `shop`;'),(2,'x');\n" +
        'ALTER DATABASE `shop` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;;\n' +
        '/*!50003 ALTER DATABASE `shop` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci */ ;\n' +
        'CREATE DEFINER=`root`@`%` PROCEDURE `p`()\nSELECT 1 ;;\n' +
        `INSERT INTO \`big\` VALUES ('${'q'.repeat(200_000)}');\n` +
        '--\n-- Current Database: `shop`\n--\n\nUSE `shop`;\n';
      const out = await rewriteAll(make, head + body);
      assert.equal(
        out,
        head.replace(/`shop`(?=\*\/;|\s\/\*!40100|;)/g, '`shop__envsnap_staging`') +
          body
            .replace(
              'ALTER DATABASE `shop` CHARACTER SET latin1',
              'ALTER DATABASE `shop__envsnap_staging` CHARACTER SET latin1',
            )
            .replace('/*!50003 ALTER DATABASE `shop`', '/*!50003 ALTER DATABASE `shop__envsnap_staging`')
            .replace(/\nUSE `shop`;\n$/, '\nUSE `shop__envsnap_staging`;\n'),
      );
      assert.match(out, /^-- Current Database: `shop`$/m, 'comments are left as they are');
    });

    it('takes the schema qualifier out of trigger heads, on one line or several', async () => {
      const one =
        '/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER shop.ins AFTER INSERT ON `shop`.`orders` FOR EACH ROW INSERT INTO shop.log VALUES (1) */;;\n';
      const several =
        '/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER\n  `shop` . upd -- a comment\n  BEFORE UPDATE\n  ON shop.orders\n  FOR EACH ROW SET NEW.x = 1 */;;\n';
      const plain =
        '/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER t2 BEFORE DELETE ON orders FOR EACH ROW SET @a = 1 */;;\n';
      const out = await rewriteAll(make, head + one + several + plain);
      assert.ok(
        out.includes(
          '/*!50003 TRIGGER ins AFTER INSERT ON `orders` FOR EACH ROW INSERT INTO shop.log VALUES (1) */;;\n',
        ),
        out,
      );
      assert.ok(
        out.includes(
          '\n\n\n\n/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER\n  upd -- a comment\n  BEFORE UPDATE\n  ON orders\n  FOR EACH ROW',
        ),
        out,
      );
      assert.ok(out.endsWith(plain), out);
    });

    it('refuses a statement for another database, an unknown form, or a dump without CREATE and USE', async () => {
      await rejectsAll(make, head + 'USE `mysql`;\n', /statement for another database \(mysql\)/);
      await rejectsAll(make, head + 'DROP DATABASE other;\n', /unexpected database statement/);
      await rejectsAll(
        make,
        head +
          '/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER other.t AFTER INSERT ON other.x FOR EACH ROW SET @a = 1 */;;\n',
        /trigger that cannot be loaded elsewhere/,
      );
      await rejectsAll(make, 'CREATE TABLE t (x INT);\n', /no CREATE DATABASE and USE lines/);
      await rejectsAll(make, 'USE `shop`;\n', /uses the database before creating it/);
      await rejectsAll(make, `USE \`shop\`; -- ${'z'.repeat(70_000)}\n`, /overlong database statement/);
    });
  });

  describe('trigger heads', () => {
    it('removes a qualifier naming the schema from the trigger and its table, and nothing else', () => {
      const cases: [string, string][] = [
        [
          'CREATE DEFINER=`root`@`localhost` TRIGGER sakila.x AFTER INSERT ON sakila.film FOR EACH ROW INSERT INTO sakila.log SET a = 1',
          'CREATE DEFINER=`root`@`localhost` TRIGGER x AFTER INSERT ON film FOR EACH ROW INSERT INTO sakila.log SET a = 1',
        ],
        [
          'CREATE TRIGGER IF NOT EXISTS `sakila`.`we ird` BEFORE UPDATE ON /* c */ `sakila` . `t` FOR EACH ROW SET @a = 1',
          'CREATE TRIGGER IF NOT EXISTS `we ird` BEFORE UPDATE ON /* c */ `t` FOR EACH ROW SET @a = 1',
        ],
        [
          'CREATE TRIGGER t BEFORE DELETE ON film FOR EACH ROW SET @a = 1',
          'CREATE TRIGGER t BEFORE DELETE ON film FOR EACH ROW SET @a = 1',
        ],
        [
          "CREATE DEFINER='a'@'%' TRIGGER sakila.t BEFORE INSERT ON film FOR EACH ROW SET @a = 'sakila.x'",
          "CREATE DEFINER='a'@'%' TRIGGER t BEFORE INSERT ON film FOR EACH ROW SET @a = 'sakila.x'",
        ],
        [
          '/*!50003 CREATE*/ /*!50020 DEFINER=`root`@`%`*/ /*!50003 PROCEDURE `p`() BEGIN END */;;',
          '/*!50003 CREATE*/ /*!50020 DEFINER=`root`@`%`*/ /*!50003 PROCEDURE `p`() BEGIN END */;;',
        ],
      ];
      for (const [input, output] of cases)
        assert.deepEqual(unqualifyTriggerHead(input, 'sakila'), { kind: 'done', text: output });
    });

    it('says when the head is cut short or names another schema', () => {
      assert.deepEqual(unqualifyTriggerHead('CREATE TRIGGER sakila.t AFTER INSERT ON', 'sakila'), {
        kind: 'incomplete',
      });
      assert.deepEqual(unqualifyTriggerHead('CREATE TRIGGER `sakila', 'sakila'), { kind: 'incomplete' });
      assert.equal(
        unqualifyTriggerHead('CREATE TRIGGER other.t AFTER INSERT ON t FOR', 'sakila').kind,
        'refused',
      );
      assert.equal(
        unqualifyTriggerHead('CREATE TRIGGER t AFTER INSERT ON other.t FOR', 'sakila').kind,
        'refused',
      );
    });
  });

  describe('pg_restore script to staging', () => {
    const key = 'HGq124xX54WdwhoZSdI8d8ojJDliAVGd3JBQMx6dtmxmQLv3dfY8tJU0IS19kZR';
    const settings =
      "SET statement_timeout = 0;\nSET client_encoding = 'UTF8';\nSELECT pg_catalog.set_config('search_path', '', false);\n";
    const script = (db: string, connect: string): string =>
      `--\n-- PostgreSQL database dump\n--\n\n\\restrict ${key}\n\n${settings}\n` +
      `--\n-- Name: ${db}; Type: DATABASE; Schema: -; Owner: app\n--\n\n` +
      `CREATE DATABASE ${connect === 'simple' ? db : `"${db}"`} WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';\n\n\n` +
      `ALTER DATABASE ${connect === 'simple' ? db : `"${db}"`} OWNER TO app;\n\n` +
      `\\unrestrict ${key}\n\\encoding SQL_ASCII\n${connect === 'simple' ? `\\connect ${db}` : connectLine(db)}\n\\restrict ${key}\n\n${settings}\n`;
    const appDb = (): string =>
      script('app db', 'general') +
      `--\n-- Name: DATABASE "app db"; Type: COMMENT; Schema: -; Owner: app\n--\n\n` +
      `COMMENT ON DATABASE "app db" IS 'the app:\nDATABASE "app db" stays in the text';\n\n\n` +
      `--\n-- Name: app db; Type: DATABASE PROPERTIES; Schema: -; Owner: app\n--\n\n` +
      `ALTER DATABASE "app db" SET work_mem TO '8MB';\nALTER ROLE reader IN DATABASE "app db" SET work_mem TO '4MB';\n\n\n` +
      `\\unrestrict ${key}\n\\encoding SQL_ASCII\n${connectLine('app db')}\n\\restrict ${key}\n\n${settings}\n` +
      `--\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: postgres\n--\n\n` +
      `CREATE FUNCTION public.f() RETURNS integer\n    LANGUAGE sql\n    AS $$ select 1 $$;\n\n\n` +
      `--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: postgres\n--\n\n` +
      `COPY public.t (id, v) FROM stdin;\n1\tx\n2\tCREATE DATABASE "app db" x\n\\\\connect other\n-- Name: a; Type: DATABASE; Schema: -\n\\.\n\n\n` +
      `--\n-- Name: DATABASE "app db"; Type: ACL; Schema: -; Owner: app\n--\n\n` +
      `GRANT CONNECT ON DATABASE "app db" TO reader;\n\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict ${key}\n\n`;

    it('points the database, its properties, comment, grants and connections at the staging name', async () => {
      const staged = 'app db__envsnap_staging';
      const out = await rewriteAll(() => rewritePgScriptToStaging('app db', staged), appDb());
      const expected = appDb()
        .replace('CREATE DATABASE "app db" WITH', `CREATE DATABASE "${staged}" WITH`)
        .replace('ALTER DATABASE "app db" OWNER', `ALTER DATABASE "${staged}" OWNER`)
        .replaceAll(connectLine('app db'), connectLine(staged))
        .replace(`COMMENT ON DATABASE "app db" IS`, `COMMENT ON DATABASE "${staged}" IS`)
        .replace(`ALTER DATABASE "app db" SET`, `ALTER DATABASE "${staged}" SET`)
        .replace(`IN DATABASE "app db" SET`, `IN DATABASE "${staged}" SET`)
        .replace(`ON DATABASE "app db" TO`, `ON DATABASE "${staged}" TO`);
      assert.equal(out, expected);
      assert.ok(out.includes('DATABASE "app db" stays in the text'));
      assert.ok(
        out.includes('2\tCREATE DATABASE "app db" x\n\\\\connect other\n'),
        'COPY rows are left alone',
      );

      const simple = await rewriteAll(
        () => rewritePgScriptToStaging('sakila', 'sakila__envsnap_staging'),
        script('sakila', 'simple'),
      );
      assert.ok(simple.includes('CREATE DATABASE "sakila__envsnap_staging" WITH'), simple);
      assert.ok(simple.includes(connectLine('sakila__envsnap_staging')), simple);
    });

    it('refuses a script that would run anywhere but in the staging database', async () => {
      const make = (): Transform => rewritePgScriptToStaging('app db', 'app db__envsnap_staging');
      await rejectsAll(make, script('other', 'general'), /creates another database/);
      await rejectsAll(
        make,
        script('app db', 'general').replace(connectLine('app db'), '\\connect postgres'),
        /reconnects to another database/,
      );
      await rejectsAll(
        make,
        `${settings}CREATE TABLE t (x int);\n`,
        /runs a statement before creating the database/,
      );
      await rejectsAll(make, script('app db', 'general') + 'DROP DATABASE x;\n', /drops a database/);
      await rejectsAll(make, settings, /has no CREATE DATABASE and \\connect/);
    });

    it('reads every form of \\connect pg_restore writes', () => {
      assert.equal(connectTarget('\\connect sakila'), 'sakila');
      assert.equal(connectTarget('\\connect "Sakila"'), 'Sakila');
      assert.equal(connectTarget(`\\connect -reuse-previous=on "dbname='app db'"`), 'app db');
      assert.equal(
        connectTarget(`\\connect -reuse-previous=on "dbname='it\\'s ""x"" \\\\ y'"`),
        `it's "x" \\ y`,
      );
      assert.equal(connectTarget(connectLine(`it's "x" \\ y`)), `it's "x" \\ y`);
      assert.equal(connectTarget('\\connect a b'), undefined);
    });
  });

  describe('staging names', () => {
    it('appends the suffixes, and shortens long names with a hash within the server limit', () => {
      assert.equal(stagingName('sakila', MARIADB_NAME_LIMIT), 'sakila__envsnap_staging');
      assert.equal(preRestoreName('sakila', POSTGRES_NAME_LIMIT), 'sakila__envsnap_pre_restore');
      const long = 'a'.repeat(60);
      const [one, two] = [stagingName(long, MARIADB_NAME_LIMIT), stagingName(long + 'b', MARIADB_NAME_LIMIT)];
      assert.equal([...one].length, 64);
      assert.notEqual(one, two);
      assert.match(one, /^a+_[0-9a-f]{8}__envsnap_staging$/);
      const wide = 'ü'.repeat(40); // 80 bytes
      const pg = preRestoreName(wide, POSTGRES_NAME_LIMIT);
      assert.ok(Buffer.byteLength(pg) <= 63, pg);
      assert.ok(pg.startsWith('ü') && pg.endsWith('__envsnap_pre_restore'));
      assert.ok(isRestoreWorkName(pg) && isRestoreWorkName(one) && !isRestoreWorkName('sakila'));
    });
  });
});
