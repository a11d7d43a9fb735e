/**
 * `npm run demo`: envsnap's main job on this machine, start to finish.
 *
 * Starts throwaway MariaDB, PostgreSQL and Redis servers (temp dirs, free
 * loopback ports; nothing already running is touched), loads them with Sakila
 * and every Redis type, makes a sample mount, then runs a controller and an
 * agent as separate processes with the embedded defaults (LevelDB catalog,
 * local repository) and drives them with the `envsnap` CLI: back up, list,
 * damage the data, restore, and show that the data is back.
 */
import { spawn } from 'node:child_process';
import { isDeepStrictEqual } from 'node:util';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  fillRedis,
  loadSakilaMariadb,
  loadSakilaPostgres,
  makeMountTree,
  repoRoot,
} from '../helpers/datasets.js';
import { EnvsnapCluster } from '../helpers/envsnap.js';
import {
  mariadbFingerprint,
  postgresFingerprint,
  redisFingerprint,
  treeFingerprint,
} from '../helpers/fingerprints.js';
import {
  mariadbConnection,
  postgresConnection,
  redisConnection,
  startMariadb,
  startPostgres,
  startRedis,
} from '../helpers/servers.js';

const say = (s: string) => process.stdout.write(`\n\x1b[1m== ${s}\x1b[0m\n`);

function envsnap(cluster: EnvsnapCluster, args: string[]): Promise<number> {
  process.stdout.write(`$ envsnap ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot(), 'bin', 'envsnap.js'), ...args], {
      env: { ...process.env, ENVSNAP_CONTROLLER: cluster.address },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? 1));
  });
}

async function must(p: Promise<number>): Promise<void> {
  const code = await p;
  if (code !== 0) throw new Error(`envsnap exited ${code}`);
}

async function main(): Promise<void> {
  say('starting throwaway MariaDB, PostgreSQL and Redis servers');
  const [maria, pg, redis] = await Promise.all([
    startMariadb({ name: 'demo' }),
    startPostgres({ name: 'demo' }),
    startRedis({ name: 'demo' }),
  ]);
  const mount = path.join(maria.dir, 'app', 'media');
  let cluster: EnvsnapCluster | undefined;
  try {
    say('loading Sakila into MariaDB and PostgreSQL, every data type into Redis, a sample mount');
    await Promise.all([
      loadSakilaMariadb(maria),
      loadSakilaPostgres(pg),
      fillRedis(redis),
      makeMountTree(mount),
    ]);
    const count = async () =>
      `MariaDB sakila.rental: ${(await maria.query('SELECT COUNT(*) FROM rental', 'sakila').catch(() => 'table missing\n')).trim()} rows; ` +
      `PostgreSQL sakila.rental: ${(await pg.psql('SELECT COUNT(*) FROM rental', 'sakila').catch(() => 'table missing\n')).trim()} rows; ` +
      `Redis keys: ${await (async () => {
        const c = redis.client();
        const n = await c.dbsize();
        c.disconnect();
        return n;
      })()}; ` +
      `mount entries: ${(await treeFingerprint(mount)).length}`;
    const fingerprint = async () => ({
      maria: await mariadbFingerprint(maria, 'sakila'),
      pg: await postgresFingerprint(pg, 'sakila'),
      redis: await redisFingerprint(redis),
      tree: await treeFingerprint(mount),
    });
    process.stdout.write(`${await count()}\n`);

    say('starting envsnap-controller and envsnap-agent (separate processes)');
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [
        {
          name: 'main',
          type: 'production',
          active: true,
          services: [
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
              databases: ['sakila'],
            },
            {
              name: 'cache',
              kind: 'redis',
              nodes: ['node-1'],
              connection: redisConnection(redis),
            },
          ],
          mounts: [{ name: 'media', node: 'node-1', path: mount }],
        },
      ],
    });
    process.stdout.write(`controller at ${cluster.address}, config and logs in ${cluster.dir}\n`);
    await must(envsnap(cluster, ['agent:list']));
    const before = await fingerprint();

    say('taking a backup');
    await must(envsnap(cluster, ['backup:create', '-e', 'main', '--yes']));
    await must(envsnap(cluster, ['backup:list', '-e', 'main']));
    const list = JSON.parse(
      await new Promise<string>((resolve, reject) => {
        const c = spawn(process.execPath, [
          path.join(repoRoot(), 'bin', 'envsnap.js'),
          '--controller',
          cluster!.address,
          'backup:list',
          '-e',
          'main',
          '--format',
          'json',
        ]);
        let out = '';
        c.stdout.on('data', (b: Buffer) => (out += b.toString()));
        c.on('error', reject);
        c.on('close', () => resolve(out));
      }),
    ) as Array<{ id: string }>;
    const id = list[0]!.id;
    await must(envsnap(cluster, ['backup:get', id]));

    say('damaging the data: dropping tables, FLUSHALL, deleting files');
    await maria.query('SET FOREIGN_KEY_CHECKS=0; DROP TABLE payment, rental;', 'sakila');
    await pg.psql('DROP TABLE rental CASCADE;', 'sakila');
    const c = redis.client();
    await c.flushall();
    c.disconnect();
    await rm(path.join(mount, 'docs'), { recursive: true, force: true });
    await writeFile(path.join(mount, 'junk.txt'), 'written after the backup');
    process.stdout.write(`${await count()}\n`);

    say('restoring the backup');
    await must(envsnap(cluster, ['backup:restore', id, '--yes']));
    process.stdout.write(`${await count()}\n`);

    say('comparing with the state before the backup');
    const after = await fingerprint();
    const results = (['maria', 'pg', 'redis', 'tree'] as const).map(
      (k) => [k, isDeepStrictEqual(before[k], after[k])] as const,
    );
    for (const [k, same] of results) {
      const what = {
        maria: 'MariaDB tables, views, routines, triggers',
        pg: 'PostgreSQL rows, sequences, types, views, functions',
        redis: 'Redis keys, types, values, TTLs',
        tree: 'mount files, modes, mtimes, symlinks',
      }[k];
      process.stdout.write(`${same ? 'equal    ' : 'DIFFERENT'} ${what}\n`);
    }
    if (results.some(([, same]) => !same)) throw new Error('restored data differs from the backup');
    say('done: the data is back');
  } finally {
    if (cluster) await cluster.stop();
    await Promise.all([maria.stop(), pg.stop(), redis.stop()]);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
