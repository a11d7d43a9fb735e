/**
 * The raw pipelines envsnap is compared with: what a sysadmin scripts by hand with the same tools,
 * on the same servers and data, writing into a file on the same disk as envsnap's repository.
 * Each is a bash script (run with `set -e -o pipefail`) timed by GNU time; `setup` runs untimed
 * before it (e.g. `restic init`), `output` is what it wrote (its size is reported).
 */
import path from 'node:path';
import { MARIADB_DUMP_OPTIONS, MARIADB_RESTORE_OPTIONS } from '../../agent/engines/mariadb.js';
import type { MariadbServer, PostgresServer, RedisServer } from '../helpers/servers.js';
import { MARIADB_DATABASE, PG_DATABASE } from './bench-data.js';

/** One raw pipeline of the benchmark. */
export interface RawPipeline {
  /** Stable id (JSON output). */
  id: string;
  /** The command as shown in the table. */
  label: string;
  script: string;
  /** Untimed preparation (e.g. a new restic or borg repository). */
  setup?: string;
  /** File or directory it writes; its size is reported, and it is removed unless `keep` is set. */
  output?: string;
  /** Kept after the run (a later restore reads it). */
  keep?: boolean;
  /** The envsnap run (id) the ratio is taken against. */
  compare: string;
  /** Files removed after the run besides `output`. */
  cleanup?: string[];
  /** Measured `--repeat` times, alternating with envsnap's runs, when true; once otherwise. */
  paired?: boolean;
}

/** Quotes a string for bash. */
export function sh(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** What the pipelines need to reach the servers and where they write. */
export interface RawContext {
  /** Directory for the pipelines' output files. */
  out: string;
  maria?: MariadbServer;
  pg?: PostgresServer;
  redis?: RedisServer;
  /** The mount's directory. */
  mount?: string;
}

const ZSTD = 'zstd -q -T0 -3';

/** `mariadb-dump` as envsnap runs it: the same options, over TCP with an option file. */
function mariadbDump(m: MariadbServer): string {
  return `mariadb-dump --defaults-file=${sh(m.defaultsFile)} ${MARIADB_DUMP_OPTIONS.join(' ')} --databases ${MARIADB_DATABASE}`;
}

function mydumper(m: MariadbServer, dir: string, compress: boolean): string {
  return (
    `mydumper --host ${m.host} --port ${m.port} --user ${m.user} --password ${sh(m.password)} ` +
    `--database ${MARIADB_DATABASE} --threads 2 ${compress ? '--compress ' : ''}--outputdir ${sh(dir)}`
  );
}

/** Paths of the artifacts the restores read. */
export function restoreInputs(ctx: RawContext) {
  return {
    mariadbZst: path.join(ctx.out, 'mariadb.sql.zst'),
    pgCustom: path.join(ctx.out, 'pg.Fc'),
    pgDirectory: path.join(ctx.out, 'pg.Fd'),
    redisZst: path.join(ctx.out, 'redis.rdb.zst'),
    mountZst: path.join(ctx.out, 'mount.tar.zst'),
  };
}

/** MariaDB backups, compared with envsnap's `zstd` run, and the pigz ones with its `gzip` run. */
export function mariadbBackups(ctx: RawContext): RawPipeline[] {
  const m = ctx.maria!;
  const dump = mariadbDump(m);
  const o = (name: string) => path.join(ctx.out, name);
  const inputs = restoreInputs(ctx);
  return [
    {
      id: 'mariadb-dump',
      label: 'mariadb-dump > file',
      script: `${dump} > ${sh(o('m.sql'))}`,
      output: o('m.sql'),
      compare: 'envsnap-zstd',
    },
    {
      id: 'mariadb-dump-zstd',
      label: `mariadb-dump | ${ZSTD}`,
      script: `${dump} | ${ZSTD} > ${sh(inputs.mariadbZst)}`,
      output: inputs.mariadbZst,
      keep: true,
      compare: 'envsnap-zstd',
      paired: true,
    },
    {
      id: 'mariadb-dump-pigz',
      label: 'mariadb-dump | pigz',
      script: `${dump} | pigz > ${sh(o('m.sql.gz'))}`,
      output: o('m.sql.gz'),
      compare: 'envsnap-gzip',
      paired: true,
    },
    {
      id: 'mariadb-dump-gzip',
      label: 'mariadb-dump | gzip',
      script: `${dump} | gzip > ${sh(o('m.sql.gz'))}`,
      output: o('m.sql.gz'),
      compare: 'envsnap-zstd',
    },
    {
      id: 'mydumper',
      label: 'mydumper -t 2',
      script: mydumper(m, o('mydumper'), false),
      output: o('mydumper'),
      compare: 'envsnap-zstd',
    },
    {
      id: 'mydumper-c',
      label: 'mydumper -t 2 -c',
      script: mydumper(m, o('mydumper-c'), true),
      output: o('mydumper-c'),
      compare: 'envsnap-zstd',
    },
  ];
}

/** libpq options for the PostgreSQL tools: the server's socket directory, as envsnap is configured. */
function pgConn(p: PostgresServer): string {
  return `-h ${sh(p.socketDir)} -p ${p.port} -U ${p.user}`;
}

export function postgresBackups(ctx: RawContext): RawPipeline[] {
  const p = ctx.pg!;
  const c = pgConn(p);
  const inputs = restoreInputs(ctx);
  const o = (name: string) => path.join(ctx.out, name);
  return [
    {
      id: 'pg_dump-Fc',
      label: 'pg_dump -Fc > file',
      script: `pg_dump ${c} -Fc ${PG_DATABASE} > ${sh(inputs.pgCustom)}`,
      output: inputs.pgCustom,
      keep: true,
      compare: 'envsnap-zstd',
    },
    {
      id: 'pg_dump-Fc-Z0-zstd',
      label: `pg_dump -Fc -Z0 | ${ZSTD}`,
      script: `pg_dump ${c} -Fc -Z0 ${PG_DATABASE} | ${ZSTD} > ${sh(o('pg.Fc.zst'))}`,
      output: o('pg.Fc.zst'),
      compare: 'envsnap-zstd',
      paired: true,
    },
    {
      id: 'pg_dump-Fd-j2',
      label: 'pg_dump -Fd -j 2',
      script: `rm -rf ${sh(inputs.pgDirectory)}; pg_dump ${c} -Fd -j 2 -f ${sh(inputs.pgDirectory)} ${PG_DATABASE}`,
      output: inputs.pgDirectory,
      keep: true,
      compare: 'envsnap-zstd',
    },
  ];
}

function redisCli(r: RedisServer): string {
  return `REDISCLI_AUTH=${sh(r.password)} redis-cli -h ${r.host} -p ${r.port}`;
}

export function redisBackups(ctx: RawContext): RawPipeline[] {
  const r = ctx.redis!;
  const inputs = restoreInputs(ctx);
  const rdb = path.join(ctx.out, 'redis.rdb');
  return [
    {
      id: 'redis-cli-rdb',
      label: 'redis-cli --rdb file',
      script: `${redisCli(r)} --rdb ${sh(rdb)} >/dev/null`,
      output: rdb,
      compare: 'envsnap-zstd',
    },
    {
      id: 'redis-cli-rdb-zstd',
      label: `redis-cli --rdb file && ${ZSTD} file`,
      script: `${redisCli(r)} --rdb ${sh(rdb)} >/dev/null && ${ZSTD} -f --rm ${sh(rdb)} -o ${sh(inputs.redisZst)}`,
      output: inputs.redisZst,
      keep: true,
      compare: 'envsnap-zstd',
      paired: true,
    },
  ];
}

export function mountBackups(ctx: RawContext): RawPipeline[] {
  const m = sh(ctx.mount!);
  const inputs = restoreInputs(ctx);
  const o = (name: string) => path.join(ctx.out, name);
  const restic = `RESTIC_PASSWORD=bench restic --cache-dir ${sh(o('restic-cache'))} -r ${sh(o('restic'))}`;
  const borg = `BORG_BASE_DIR=${sh(o('borg-home'))} borg`;
  return [
    {
      id: 'tar',
      label: 'tar -cf',
      script: `tar -C ${m} -cf ${sh(o('m.tar'))} .`,
      output: o('m.tar'),
      compare: 'envsnap-zstd',
    },
    {
      id: 'tar-zstd',
      label: `tar -I "${ZSTD}"`,
      script: `tar -C ${m} -I ${sh(ZSTD)} -cf ${sh(inputs.mountZst)} .`,
      output: inputs.mountZst,
      keep: true,
      compare: 'envsnap-zstd',
      paired: true,
    },
    {
      id: 'tar-pigz',
      label: 'tar -I pigz',
      script: `tar -C ${m} -I pigz -cf ${sh(o('m.tgz'))} .`,
      output: o('m.tgz'),
      compare: 'envsnap-gzip',
      paired: true,
    },
    {
      id: 'tar-gzip',
      label: 'tar -czf',
      script: `tar -C ${m} -czf ${sh(o('m.tgz'))} .`,
      output: o('m.tgz'),
      compare: 'envsnap-zstd',
    },
    {
      id: 'restic',
      label: 'restic backup (new repository)',
      setup: `rm -rf ${sh(o('restic'))} ${sh(o('restic-cache'))}; ${restic} init -q`,
      script: `cd ${m} && ${restic} backup -q .`,
      output: o('restic'),
      compare: 'envsnap-zstd',
    },
    {
      id: 'borg',
      label: 'borg create (new repository)',
      setup: `rm -rf ${sh(o('borg'))} ${sh(o('borg-home'))}; ${borg} init -e none ${sh(o('borg'))}`,
      script: `cd ${m} && ${borg} create ${sh(o('borg'))}::bench .`,
      output: o('borg'),
      compare: 'envsnap-zstd',
    },
  ];
}

/**
 * The four matching pipelines (each service's `| zstd` form) run at the same time, for the whole
 * environment: what a hand-written script gets by backgrounding them.
 */
export function concurrentBackups(ctx: RawContext): RawPipeline {
  const parts = [mariadbBackups, postgresBackups, redisBackups, mountBackups].map((f) => f(ctx)[1]!);
  const scripts = parts.map(
    (p, i) => `( ${p.script.split(sh(p.output!)).join(sh(`${p.output!}.concurrent`))} ) & p${i}=$!`,
  );
  return {
    id: 'all-concurrent-zstd',
    label: 'the four | zstd pipelines at once',
    script: `${scripts.join('\n')}\nwait $p0 && wait $p1 && wait $p2 && wait $p3`,
    compare: 'envsnap-zstd',
    cleanup: parts.map((p) => `${p.output!}.concurrent`),
  };
}

/** Restores, each compared with envsnap's restore of its `zstd` backup. */
export function restores(
  ctx: RawContext,
  which: 'mariadb' | 'postgresql' | 'redis' | 'mount',
): RawPipeline[] {
  const inputs = restoreInputs(ctx);
  switch (which) {
    case 'mariadb': {
      const m = ctx.maria!;
      return [
        {
          id: 'zstd-dc-mariadb',
          label: 'zstd -dc | mariadb',
          script: `zstd -q -dc ${sh(inputs.mariadbZst)} | mariadb --defaults-file=${sh(m.defaultsFile)} ${MARIADB_RESTORE_OPTIONS.join(' ')}`,
          compare: 'envsnap-restore',
          paired: true,
        },
      ];
    }
    case 'postgresql': {
      const c = pgConn(ctx.pg!);
      const drop = `psql ${c} -X -q -v ON_ERROR_STOP=1 -d postgres -c 'DROP DATABASE IF EXISTS ${PG_DATABASE} WITH (FORCE)'`;
      return [
        {
          id: 'pg_restore',
          label: 'pg_restore --create (of pg_dump -Fc)',
          script: `${drop} && pg_restore ${c} --create --exit-on-error -d postgres ${sh(inputs.pgCustom)}`,
          compare: 'envsnap-restore',
          paired: true,
        },
        {
          id: 'pg_restore-j2',
          label: 'pg_restore -j 2 --create (of pg_dump -Fd)',
          script: `${drop} && pg_restore ${c} -j 2 --create --exit-on-error -d postgres ${sh(inputs.pgDirectory)}`,
          compare: 'envsnap-restore',
        },
      ];
    }
    case 'redis': {
      // A server can load an RDB only at start: the raw restore is "put dump.rdb in place, start
      // redis-server, wait until it has loaded the file" (on a scratch server on a free port).
      const dir = path.join(ctx.out, 'redis-load');
      const port = 20_000 + Math.floor(Math.random() * 20_000);
      return [
        {
          id: 'redis-server-load',
          label: 'zstd -d dump.rdb && redis-server (load at start)',
          setup: `rm -rf ${sh(dir)} && mkdir -p ${sh(dir)}`,
          script: [
            `zstd -q -d ${sh(inputs.redisZst)} -o ${sh(path.join(dir, 'dump.rdb'))}`,
            `redis-server --port ${port} --bind 127.0.0.1 --dir ${sh(dir)} --dbfilename dump.rdb --save '' --appendonly no --daemonize no --logfile ${sh(path.join(dir, 'log'))} & pid=$!`,
            `until [ "$(redis-cli -p ${port} ping 2>/dev/null)" = PONG ]; do kill -0 $pid; sleep 0.05; done`,
            `redis-cli -p ${port} shutdown nosave >/dev/null || true`,
            'wait $pid || true',
          ].join('\n'),
          compare: 'envsnap-restore',
          paired: true,
        },
      ];
    }
    case 'mount': {
      const m = sh(ctx.mount!);
      return [
        {
          id: 'tar-x-zstd',
          label: 'rm -rf dir && tar -I zstd -xf',
          script: `rm -rf ${m} && mkdir ${m} && tar -C ${m} -I zstd -xpf ${sh(inputs.mountZst)}`,
          compare: 'envsnap-restore',
          paired: true,
        },
      ];
    }
  }
}
