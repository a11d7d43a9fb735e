/**
 * `envsnap doctor` against real throwaway servers and a real controller: a node whose every
 * check passes, and the failures a sysadmin meets first (a wrong password, a missing mount, a
 * database that is not there, an unreachable controller), each reported on its own line with what
 * to fix, exit status 1, and no secret in the output.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { EnvsnapCluster, runBin, type CliResult } from '../helpers/envsnap.js';
import { repoRoot } from '../helpers/datasets.js';
import {
  freePort,
  mariadbConnection,
  postgresConnection,
  redisConnection,
  requireBinary,
  startMariadb,
  startPostgres,
  startRedis,
  type MariadbServer,
  type PostgresServer,
  type RedisServer,
} from '../helpers/servers.js';

interface Check {
  check: string;
  status: 'ok' | 'warn' | 'fail';
  message: string;
  fix?: string;
}
interface Report {
  node: string;
  config: string;
  ok: boolean;
  checks: Check[];
}

const WRONG_PASSWORD = 'not-the-password-9f3e';

describe('envsnap doctor', function () {
  this.timeout(180_000);
  let maria: MariadbServer;
  let pg: PostgresServer;
  let redis: RedisServer;
  let cluster: EnvsnapCluster;
  let dir: string;
  let mount: string;
  let wrongPasswordFile: string;

  const goodServices = () => [
    {
      name: 'db',
      kind: 'mariadb',
      nodes: ['node-1'],
      connection: mariadbConnection(maria),
    },
    {
      name: 'pg',
      kind: 'postgresql',
      nodes: ['node-1'],
      connection: postgresConnection(pg),
      databases: ['postgres'],
    },
    {
      name: 'cache',
      kind: 'redis',
      nodes: ['node-1'],
      connection: redisConnection(redis),
    },
  ];

  before(async () => {
    [maria, pg, redis] = await Promise.all([startMariadb(), startPostgres(), startRedis()]);
    dir = await mkdtemp(path.join(tmpdir(), 'envsnap-doctor-'));
    mount = path.join(dir, 'media');
    await mkdir(mount);
    await writeFile(path.join(mount, 'a.txt'), 'a\n');
    wrongPasswordFile = path.join(dir, 'wrong-password');
    await writeFile(wrongPasswordFile, WRONG_PASSWORD, { mode: 0o600 });
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [
        {
          name: 'shop',
          services: goodServices(),
          mounts: [{ name: 'media', node: 'node-1', path: mount }],
        },
        // Served by node-bad, which runs no agent: doctor checks a node, not a running agent.
        {
          name: 'broken',
          services: [
            {
              name: 'db',
              kind: 'mariadb',
              nodes: ['node-bad'],
              connection: mariadbConnection(maria, { password_file: wrongPasswordFile }),
            },
            {
              name: 'pg',
              kind: 'postgresql',
              nodes: ['node-bad'],
              connection: postgresConnection(pg),
              databases: ['postgres', 'no_such_db'],
            },
          ],
          mounts: [{ name: 'files', node: 'node-bad', path: path.join(dir, 'no-such-dir') }],
        },
      ],
    });
    await writeFile(
      path.join(dir, 'node-bad.yaml'),
      stringify({
        agent: { node_id: 'node-bad', controller: cluster.address, work_dir: path.join(dir, 'work-bad') },
      }),
    );
  });

  after(async () => {
    await cluster?.stop();
    await Promise.all([maria?.stop(), pg?.stop(), redis?.stop()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function doctor(configFile: string, format?: 'json'): Promise<CliResult> {
    return runBin('envsnap', ['doctor', '--config', configFile, ...(format ? ['--format', format] : [])]);
  }

  function find(report: Report, check: string): Check[] {
    return report.checks.filter((c) => c.check === check);
  }

  it('passes on a node whose tools, services, mounts, work_dir, controller and clock are fine', async () => {
    const r = await doctor(cluster.configFile('node-1'));
    assert.equal(r.code, 0, `doctor failed:\n${r.stdout}${r.stderr}`);
    const lines = r.stdout.trim().split('\n');
    for (const line of lines.slice(0, -1)) assert.match(line, /^(ok {2}|warn) {2}\S/, line);
    assert.match(r.stdout, /^ok {4}controller: 127\.0\.0\.1:\d+ answers: envsnap /m);
    assert.match(r.stdout, /^ok {4}clock: controller clock [+-]\d+\.\d{3} s from this node's/m);
    assert.match(r.stdout, /^ok {4}agent: node-1 is connected to the controller/m);
    assert.match(r.stdout, /^ok {4}assignment: 3 services and 1 mount on this node, per the controller$/m);
    for (const tool of [
      'mariadb-dump',
      'mariadb',
      'pg_dump',
      'pg_dumpall',
      'pg_restore',
      'psql',
      'redis-cli',
      'redis-server',
      'zstd',
      'pigz',
    ])
      assert.match(
        r.stdout,
        new RegExp(`^ok {4}tool ${tool}: \\d+\\.\\d+`, 'm'),
        `tool ${tool}:\n${r.stdout}`,
      );
    assert.match(
      r.stdout,
      /^ok {4}service shop\/db: mariadb 10\.\S+ at root@127\.0\.0\.1:\d+ accepts the credentials/m,
    );
    assert.match(
      r.stdout,
      /^ok {4}service shop\/pg: postgresql \d+.* at postgres@socket \S+ accepts the credentials; dumps postgres$/m,
    );
    assert.match(
      r.stdout,
      /^ok {4}service shop\/cache: redis 7\.\S+ at 127\.0\.0\.1:\d+ accepts the credentials$/m,
    );
    // The throwaway Redis keeps Redis 7's defaults: diskless sync with a 5 s delay.
    assert.match(
      r.stdout,
      /^warn {2}service shop\/cache: every backup waits 5 s before the server sends its snapshot \(repl-diskless-sync-delay.* -> fix: set repl-diskless-sync-max-replicas 1 /m,
    );
    assert.match(r.stdout, /^ok {4}mount shop\/media: .* is a readable and writable directory$/m);
    assert.match(r.stdout, /^ok {4}work_dir: .* is writable, [\d.]+ GiB free$/m);
    assert.match(lines.at(-1)!, /^node-1: \d+ ok, \d+ warnings?, 0 failed$/);
    assert.ok(
      !r.stdout.includes(maria.password) && !r.stdout.includes(redis.password),
      'a password was printed',
    );
  });

  it('--format json gives the same checks as objects', async () => {
    const r = await doctor(cluster.configFile('node-1'), 'json');
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as Report;
    assert.equal(report.node, 'node-1');
    assert.equal(report.ok, true);
    assert.deepEqual(
      report.checks.filter((c) => c.status === 'fail'),
      [],
    );
    assert.equal(find(report, 'service shop/db')[0]?.status, 'ok');
    assert.equal(find(report, 'controller')[0]?.status, 'ok');
    // Tests run as root: doctor says its file checks may not hold for the agent's user.
    if (process.getuid?.() === 0) assert.equal(find(report, 'user')[0]?.status, 'warn');
  });

  it('reports a wrong password, a missing mount and a missing database, with fixes, and exits 1', async () => {
    const r = await doctor(path.join(dir, 'node-bad.yaml'), 'json');
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout) as Report;
    assert.equal(report.ok, false);
    const db = find(report, 'service broken/db');
    assert.equal(db.length, 1);
    assert.equal(db[0]!.status, 'fail');
    assert.match(db[0]!.message, /Access denied for user 'root'/);
    assert.match(db[0]!.fix ?? '', /password_file or password_env/);
    const pgChecks = find(report, 'service broken/pg');
    assert.deepEqual(
      pgChecks.map((c) => c.status),
      ['ok', 'fail'],
    );
    assert.match(pgChecks[1]!.message, /^database no_such_db not on the server$/);
    const files = find(report, 'mount broken/files');
    assert.equal(files[0]?.status, 'fail');
    assert.match(files[0].message, /no-such-dir does not exist/);
    assert.match(files[0].fix ?? '', /create it/);
    // node-bad runs no agent.
    assert.equal(find(report, 'agent')[0]?.status, 'warn');
    assert.ok(
      !r.stdout.includes(WRONG_PASSWORD) && !r.stdout.includes(maria.password),
      'a password was printed',
    );

    const table = await doctor(path.join(dir, 'node-bad.yaml'));
    assert.equal(table.code, 1);
    assert.match(table.stdout, /^FAIL {2}service broken\/db: .*Access denied.* -> fix: check connection/m);
    assert.match(table.stdout, /^FAIL {2}mount broken\/files: .* -> fix: create it/m);
    assert.match(table.stdout, /^node-bad: \d+ ok, \d+ warnings?, 3 failed$/m);
    assert.ok(!table.stdout.includes(WRONG_PASSWORD), 'the wrong password was printed');
  });

  it('reports an unreachable controller, and still checks the services the file lists', async () => {
    const file = path.join(dir, 'unreachable.yaml');
    const nowhere = `127.0.0.1:${await freePort()}`;
    await writeFile(
      file,
      stringify({
        agent: { node_id: 'node-1', controller: nowhere, work_dir: path.join(dir, 'work-u') },
        environments: [{ name: 'shop', services: goodServices(), mounts: [] }],
      }),
    );
    const r = await doctor(file);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      new RegExp(
        `^FAIL {2}controller: cannot reach the controller at ${nowhere} -> fix: start envsnap-controller`,
        'm',
      ),
    );
    assert.match(r.stdout, /^warn {2}clock: not checked: the controller did not answer$/m);
    assert.match(r.stdout, /^warn {2}assignment: 3 services and 0 mounts per .*unreachable\.yaml/m);
    assert.match(r.stdout, /^ok {4}service shop\/db: /m);
    assert.match(r.stdout, /^warn {2}work_dir: .*work-u does not exist yet/m);
    assert.match(r.stdout, /^node-1: \d+ ok, \d+ warnings, 1 failed$/m);
  });

  it('warns about a clock a few seconds off, and fails one minutes off (libfaketime)', async () => {
    const faketime = await requireBinary('faketime', 'faketime');
    // A controller whose clock runs OFFSET ahead (libfaketime; timers use CLOCK_MONOTONIC, not
    // shifted). Shifting the controller rather than doctor keeps the node's tools out of it:
    // redis-cli and redis-server hang under libfaketime.
    const withControllerAhead = async (offset: string) => {
      const port = await freePort();
      const controllerFile = path.join(dir, `clock-controller-${port}.yaml`);
      const nodeFile = path.join(dir, `clock-node-${port}.yaml`);
      await writeFile(
        controllerFile,
        stringify({
          controller: { listen: `127.0.0.1:${port}`, state_dir: path.join(dir, `clock-state-${port}`) },
        }),
      );
      await writeFile(
        nodeFile,
        stringify({
          agent: { node_id: 'node-c', controller: `127.0.0.1:${port}`, work_dir: path.join(dir, 'work-c') },
        }),
      );
      const controller = spawn(
        faketime,
        [
          '-f',
          offset,
          process.execPath,
          path.join(repoRoot(), 'bin', 'envsnap-controller.js'),
          '--config',
          controllerFile,
        ],
        // faketime forks the controller: a process group of its own, killed as a whole.
        { env: { ...process.env, FAKETIME_DONT_FAKE_MONOTONIC: '1' }, stdio: 'ignore', detached: true },
      );
      try {
        await cluster.waitFor(
          async () => (await runBin('envsnap', ['--controller', `127.0.0.1:${port}`, 'agents'])).code === 0,
          'the shifted controller',
        );
        return await doctor(nodeFile);
      } finally {
        process.kill(-controller.pid!, 'SIGKILL');
      }
    };
    const warn = await withControllerAhead('+10s');
    assert.equal(warn.code, 0, warn.stdout);
    assert.match(
      warn.stdout,
      /^warn {2}clock: controller clock \+(9|10)\.\d{3} s from this node's .* -> fix: synchronise both clocks with NTP/m,
    );
    const fail = await withControllerAhead('+300s');
    assert.equal(fail.code, 1, fail.stdout);
    assert.match(fail.stdout, /^FAIL {2}clock: controller clock \+(299|300)\.\d{3} s from this node's/m);
  });

  it('fails with a clear line when the config has no agent section', async () => {
    const file = path.join(dir, 'cli-only.yaml');
    await writeFile(file, stringify({ cli: { controller: cluster.address } }));
    const r = await doctor(file);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^FAIL {2}config: .*agent: section is required/m);
  });
});
