/**
 * Mixed releases (README, "Storage locations and replicas"): a restore or drill leaves an artifact
 * to the agent's own SHA-256 check only when the agent says in its `hello` that it holds back its
 * input's end until that check passed (`Hello.checks_artifact_stream`). A controller process and a real
 * agent make a backup; then the agent is stopped and a raw gRPC client, speaking the proto as an
 * agent of an older release would (its `hello` without the field), takes the node's place. Its
 * restores and drills get the controller's read of every artifact first: a corrupt artifact fails
 * them before any task reaches it, and the controller logs once per connection that the agent
 * lacks the check. The same peer declaring the check is handed the restore at once.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { EnvsnapCluster } from '../helpers/envsnap.js';
import { CHANNEL_OPTIONS, controllerService } from '../../shared/proto.js';
import type { WireAgentMessage, WireControllerMessage, WireTask } from '../../shared/wire.js';

const NODE = 'node-1';

/**
 * An agent session spoken by hand over the proto: `hello`, heartbeats at the interval the
 * controller's `welcome` gives, and a result for each task, from `answer`.
 */
class RawAgent {
  readonly tasks: WireTask[] = [];
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly client: grpc.Client,
    private readonly call: grpc.ClientDuplexStream<WireAgentMessage, WireControllerMessage>,
  ) {}

  static async connect(
    address: string,
    hello: Extract<WireAgentMessage, { hello: unknown }>['hello'],
    answer: (task: WireTask) => { ok: boolean; error: string },
  ): Promise<RawAgent> {
    const Client = controllerService();
    const client = new Client(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    const call = (
      client as unknown as Record<
        string,
        () => grpc.ClientDuplexStream<WireAgentMessage, WireControllerMessage>
      >
    ).Connect!.call(client);
    const agent = new RawAgent(client, call);
    call.on('error', () => undefined); // the controller ends the stream when the test closes it
    const welcomed = new Promise<number>((resolve) => {
      call.on('data', (msg: WireControllerMessage) => {
        if ('welcome' in msg && msg.welcome) resolve(msg.welcome.heartbeatIntervalMs);
        if ('task' in msg && msg.task) {
          agent.tasks.push(msg.task);
          call.write({
            msg: 'result',
            result: { taskId: msg.task.taskId, artifacts: [], files: [], drilled: [], ...answer(msg.task) },
          });
        }
      });
    });
    call.write({ msg: 'hello', hello });
    const interval = await welcomed;
    agent.timer = setInterval(
      () => call.write({ msg: 'heartbeat', heartbeat: { runningTasks: 0, runningTaskIds: [] } }),
      interval,
    );
    return agent;
  }

  close(): void {
    clearInterval(this.timer);
    this.call.end();
    this.client.close();
  }
}

describe('mixed releases: an agent that does not declare its artifact check (raw gRPC peer)', function () {
  this.timeout(120_000);
  let work: string;
  let tree: string;
  let cluster: EnvsnapCluster;
  let raw: RawAgent | undefined;
  let id = '';
  let artifact = '';

  const connected = async (want: boolean) =>
    cluster.waitFor(
      async () => {
        const agents = await cluster.json<Array<{ node_id: string; connected: boolean }>>(['agent:list']);
        return agents.some((a) => a.node_id === NODE && a.connected === want);
      },
      `${NODE} to be ${want ? 'connected' : 'disconnected'}`,
    );

  /** Controller log lines saying an agent lacks the check. */
  const lackingLines = async () =>
    (await readFile(path.join(cluster.dir, 'controller.log'), 'utf8'))
      .split('\n')
      .filter((l) => l.includes('agent does not declare that it checks artifacts'));

  const restoreSource = (t: WireTask) => t.artifactSources?.find((s) => s.artifact === artifact);

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'envsnap-mixed-'));
    tree = path.join(work, 'files');
    await mkdir(tree, { recursive: true });
    await writeFile(path.join(tree, 'a.txt'), 'alpha\n'.repeat(5000));
    cluster = await EnvsnapCluster.start({
      nodes: [NODE],
      environments: [{ name: 'app', mounts: [{ name: 'files', node: NODE, path: tree }] }],
    });
    const made = await cluster.cli(['backup:create', '-e', 'app']);
    assert.equal(made.code, 0, made.stderr);
    id = /Backup ID: (\w+)/.exec(made.stdout)![1]!;
    artifact = (await cluster.json<{ artifacts: Array<{ name: string }> }>(['backup:get', id])).artifacts[0]!
      .name;
    // The real agent (which declares the check) leaves; the raw peer takes the node.
    const agent = cluster.agents.get(NODE)!;
    agent.child.kill('SIGTERM');
    await agent.exited;
    await connected(false);
    assert.deepEqual(await lackingLines(), [], 'the real agent declares the check');
  });

  after(async () => {
    raw?.close();
    await cluster?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('an agent without the capability gets the pre-read: the artifact is read before its restore, and a corrupt one fails restore and drill before any task reaches it', async () => {
    raw = await RawAgent.connect(
      cluster.address,
      { nodeId: NODE, version: '0.0.9', hostname: hostname(), runningTaskIds: [] },
      () => ({ ok: true, error: '' }),
    );
    await connected(true);
    const ok = await cluster.cli(['backup:restore', id, '--yes']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /the agent on node-1 does not declare that it checks artifacts as it restores/);
    assert.match(ok.stderr, /verifying 1 artifacts before anything is applied/);
    assert.match(ok.stderr, /every artifact read matches its manifest size and SHA-256/);
    assert.equal(raw.tasks.length, 1);
    assert.equal(raw.tasks[0]!.restoreMount?.artifact.name, artifact);

    const file = path.join(cluster.repository, 'backups', id, artifact);
    const corrupt = Buffer.from(await readFile(file));
    corrupt[corrupt.length >> 1] = corrupt[corrupt.length >> 1]! ^ 0xff;
    await writeFile(file, corrupt);
    const refused = await cluster.cli(['backup:restore', id, '--yes']);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /no good copy of files\/\S+ in any location: .*is corrupt/);
    const drill = await cluster.cli(['backup:drill', id, '--format', 'json']);
    assert.equal(drill.code, 1, drill.stderr);
    const out = JSON.parse(drill.stdout) as { artifacts: Array<{ result: string; detail: string }> };
    assert.equal(out.artifacts[0]!.result, 'error');
    assert.match(out.artifacts[0]!.detail, /no good copy of files\/\S+ in any location: .*is corrupt/);
    assert.equal(raw.tasks.length, 1, 'no task reached the agent after the corrupt read');
    assert.equal((await lackingLines()).length, 1, 'logged once for the connection');
  });

  it('the same peer declaring the capability is handed the restore without a pre-read; its check failing ends in the fallback', async () => {
    raw?.close();
    await connected(false);
    raw = await RawAgent.connect(
      cluster.address,
      {
        nodeId: NODE,
        version: '0.1.0',
        hostname: hostname(),
        runningTaskIds: [],
        checksArtifactStream: true,
      },
      (t) => ({
        ok: false,
        error: `artifact ${t.restoreMount?.artifact.name} arrived as 0 bytes, manifest says more`,
      }),
    );
    await connected(true);
    const r = await cluster.cli(['backup:restore', id, '--yes']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /verifying 0 of 1 artifacts before anything is applied; the agent checks/);
    assert.match(r.stderr, /no good copy of files\/\S+ in any location: .*is corrupt/);
    assert.equal(raw.tasks.length, 1, 'the task went to the agent before the controller read anything');
    assert.equal(restoreSource(raw.tasks[0]!)?.location?.name, 'local');
    assert.equal((await lackingLines()).length, 1, 'nothing logged for an agent that declares it');
  });
});
