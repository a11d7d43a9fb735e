/**
 * Reloading the configuration (SIGHUP, what `systemctl reload` sends through
 * the units' ExecReload): the controller takes new environments and schedules
 * without dropping a running backup; options that need a restart, and invalid
 * files, are refused and the running configuration stays; the agent takes new
 * task settings.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { EnvsnapCluster } from '../helpers/envsnap.js';

interface BackupJson {
  id: string;
  status: string;
  tag: string;
}

describe('configuration reload (SIGHUP)', function () {
  this.timeout(120_000);
  let work: string;
  let cluster: EnvsnapCluster;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'envsnap-reload-'));
    const tree = path.join(work, 'files');
    await mkdir(tree, { recursive: true });
    // Big enough that a backup is still running when the reload arrives.
    await writeFile(path.join(tree, 'big.bin'), Buffer.alloc(200 * 1024 * 1024, 1));
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [{ name: 'app', mounts: [{ name: 'files', node: 'node-1', path: tree }] }],
    });
  });

  after(async () => {
    await cluster?.stop();
    await rm(work, { recursive: true, force: true });
  });

  async function editConfig(who: string, change: (cfg: Record<string, Record<string, unknown>>) => void) {
    const file = cluster.configFile(who);
    const cfg = parse(await readFile(file, 'utf8')) as Record<string, Record<string, unknown>>;
    change(cfg);
    await writeFile(file, stringify(cfg));
  }

  async function logHas(file: string, text: string): Promise<boolean> {
    return (await readFile(path.join(cluster.dir, file), 'utf8')).includes(text);
  }

  it('takes a new schedule without dropping the backup that runs', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'app', '--no-wait']);
    assert.equal(r.code, 0, r.stderr);
    const running = /Backup ID: (\w+)/.exec(r.stdout)![1]!;
    await editConfig('controller', (cfg) => {
      const envs = cfg.environments as unknown as Array<Record<string, unknown>>;
      envs[0]!.schedules = [{ cron: '*/3 * * * * *' }];
    });
    cluster.controller.child.kill('SIGHUP');
    await cluster.waitFor(() => logHas('controller.log', 'configuration reloaded'), 'the reload');
    await cluster.waitFor(
      async () =>
        (await cluster.json<BackupJson[]>(['backup:list', '-e', 'app'])).some(
          (b) => b.tag === 'automated' && b.status === 'complete',
        ),
      'an automated backup from the new schedule',
      60_000,
    );
    const first = (await cluster.json<BackupJson[]>(['backup:list', '-e', 'app'])).find(
      (b) => b.id === running,
    );
    assert.equal(first?.status, 'complete', 'the backup that ran during the reload completed');
  });

  it('refuses a change that needs a restart, and an invalid file, keeping the running configuration', async () => {
    await editConfig('controller', (cfg) => {
      cfg.controller!.listen = '127.0.0.1:1';
    });
    cluster.controller.child.kill('SIGHUP');
    await cluster.waitFor(
      () => logHas('controller.log', 'reload refused: controller.listen changed, which needs a restart'),
      'the refusal',
    );
    await writeFile(cluster.configFile('controller'), 'controller: [not, a, mapping');
    cluster.controller.child.kill('SIGHUP');
    await cluster.waitFor(
      () => logHas('controller.log', 'reload refused: the configuration is invalid'),
      'the refusal of the invalid file',
    );
    const agents = await cluster.cli(['agent:list']);
    assert.equal(agents.code, 0, 'the controller still serves on its address');
  });

  it('the agent takes new task settings', async () => {
    await editConfig('node-1', (cfg) => {
      cfg.agent!.concurrency = 2;
    });
    cluster.agents.get('node-1')!.child.kill('SIGHUP');
    await cluster.waitFor(() => logHas('agent-node-1.log', 'configuration reloaded'), 'the agent reload');
  });
});
