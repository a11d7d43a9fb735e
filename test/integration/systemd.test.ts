/**
 * The systemd units in systemd/ pass `systemd-analyze verify` (Debian package `systemd`; it loads
 * unit files offline, so it works without systemd as PID 1, e.g. in a container).
 *
 * Each unit is copied into a temporary directory with its ExecStart executable rewritten from the
 * installed path (`/usr/bin/envsnap-controller`) to this checkout's `bin/envsnap-controller.js`
 * (resolved through package.json's `bin`), because verify fails a unit whose ExecStart is not an
 * executable file. Everything else in the unit is checked as shipped.
 *
 * verify also loads the units ours depend on (network-online.target, mariadb.service, ...) and
 * prints warnings about *their* files; those depend on the machine, not on envsnap, so only lines
 * about our unit (its path or its name) count, and `--recursive-errors=no` keeps the exit status
 * about our unit only. Any line that names neither our unit nor another unit also fails the test,
 * so nothing unexplained is ignored. `SYSTEMD_LOG_LEVEL=info` pins the verbosity (an inherited
 * `debug` would print the manager's internal tracing). Warnings such as an unknown key do not change
 * verify's exit status, which is why the output is judged as well as the exit code.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { access, chmod, constants, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { SystemdNotifier } from '../../shared/systemd-notify.js';
import { repoRoot } from '../helpers/datasets.js';
import { freePort, requireBinary } from '../helpers/servers.js';

interface Exec {
  code: number | null;
  output: string;
}

function exec(command: string, args: string[]): Promise<Exec> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SYSTEMD_LOG_LEVEL: 'info', SYSTEMD_LOG_COLOR: '0', SYSTEMD_PAGER: '' },
    });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (b: Buffer) => chunks.push(b));
    child.stderr.on('data', (b: Buffer) => chunks.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output: Buffer.concat(chunks).toString() });
    });
  });
}

const unitDir = path.join(repoRoot(), 'systemd');
const UNIT_SUFFIX = /\.(service|socket|timer|path|target|mount|automount|swap|slice)$/;
const units = readdirSync(unitDir)
  .filter((f) => UNIT_SUFFIX.test(f))
  .sort();

/** A line about another unit: `<file>:<line>: ...` or `<unit name>: ...`. */
const OTHER_UNIT =
  /^(\/\S+|[\w:@.\\-]+)\.(service|socket|timer|path|target|mount|automount|swap|slice|scope|device)(:\d+)?: /;

/**
 * Splits verify's output into the lines about `unitFile` (by its path or its name) and lines about
 * no unit at all; lines about other units are dropped (see the file comment).
 */
function judge(output: string, unitFile: string): { ours: string[]; unexplained: string[] } {
  const name = path.basename(unitFile);
  const ours: string[] = [];
  const unexplained: string[] = [];
  for (const line of output.split('\n')) {
    if (line.trim() === '') continue;
    if (line.includes(unitFile) || line.startsWith(`${name}:`)) ours.push(line);
    else if (!OTHER_UNIT.test(line)) unexplained.push(line);
  }
  return { ours, unexplained };
}

/**
 * The unit's text with each ExecStart executable replaced by this checkout's script for it.
 *
 * @throws AssertionError when an ExecStart names a program that is not one of package.json's `bin`
 */
function rewriteExecStart(text: string, bins: Record<string, string>): string {
  let count = 0;
  const out = text.replace(/^ExecStart=(\S+)/gm, (_line, exe: string) => {
    count++;
    const name = path.basename(exe);
    const script = bins[name];
    assert.ok(
      script,
      `ExecStart runs ${exe}, which is not in package.json's bin (${Object.keys(bins).join(', ')})`,
    );
    return `ExecStart=${path.resolve(repoRoot(), script)}`;
  });
  assert.equal(count, 1, 'expected exactly one ExecStart= line');
  return out;
}

describe('systemd units: systemd-analyze verify', function () {
  this.timeout(60_000);
  let analyze = '';
  let tmp = '';
  let bins: Record<string, string> = {};

  before(async () => {
    analyze = await requireBinary('systemd-analyze', 'systemd');
    tmp = await mkdtemp(path.join(tmpdir(), 'envsnap-systemd-'));
    bins = (
      JSON.parse(await readFile(path.join(repoRoot(), 'package.json'), 'utf8')) as {
        bin: Record<string, string>;
      }
    ).bin;
  });

  after(async () => {
    if (tmp !== '') await rm(tmp, { recursive: true, force: true });
  });

  /** Copies the unit (ExecStart rewritten) into the temp dir and verifies it. */
  async function verify(
    unit: string,
    text: string,
  ): Promise<{ r: Exec; ours: string[]; unexplained: string[] }> {
    const file = path.join(tmp, unit);
    await writeFile(file, rewriteExecStart(text, bins));
    const r = await exec(analyze, ['verify', '--man=no', '--recursive-errors=no', file]);
    return { r, ...judge(r.output, file) };
  }

  it('finds the controller and agent units', () => {
    assert.deepEqual(units, ['envsnap-agent.service', 'envsnap-controller.service']);
  });

  for (const unit of units) {
    it(`${unit} passes verify with no warning`, async () => {
      const text = await readFile(path.join(unitDir, unit), 'utf8');
      const { r, ours, unexplained } = await verify(unit, text);
      assert.deepEqual(ours, [], `systemd-analyze verify on ${unit}:\n${r.output}`);
      assert.deepEqual(unexplained, [], `systemd-analyze verify printed lines about no unit:\n${r.output}`);
      assert.equal(r.code, 0, `systemd-analyze verify on ${unit} exited ${r.code}:\n${r.output}`);
    });

    it(`${unit} runs an executable script of this checkout`, async () => {
      const text = rewriteExecStart(await readFile(path.join(unitDir, unit), 'utf8'), bins);
      const exe = /^ExecStart=(\S+)/m.exec(text)![1]!;
      await access(exe, constants.X_OK);
    });
  }

  it('the output filter does not hide problems in our unit (control)', async () => {
    const text = await readFile(path.join(unitDir, units[0]!), 'utf8');
    const broken = text
      .replace(/^NoNewPrivileges=yes$/m, 'NoNewPrivilege=yes')
      .replace(/^Restart=on-failure$/m, 'Restart=sometimes');
    assert.notEqual(broken, text);
    const { r, ours } = await verify(`broken-${units[0]}`, broken);
    assert.equal(ours.length, 2, `expected two warnings about the broken unit:\n${r.output}`);
    assert.match(ours.join('\n'), /Unknown key 'NoNewPrivilege'/);
    assert.match(ours.join('\n'), /restart specifier.*sometimes/);
  });
});

/**
 * The sd_notify side of systemd, played by a small Python program (Debian package python3; Node
 * cannot bind a Unix datagram socket): it binds the socket named by NOTIFY_SOCKET, prints each
 * datagram as a JSON line, and closes the file descriptors that come with `BARRIER=1`, which is how
 * the service manager tells systemd-notify that it has processed the messages (sd_notify(3),
 * sd_notify_barrier). No systemd as PID 1 is needed, so this runs in containers and CI.
 */
const LISTENER = `
import array, json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps({"listening": sys.argv[1]}), flush=True)
while True:
    data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                os.close(fd)
    print(json.dumps({"message": data.decode("utf-8", "replace")}), flush=True)
`;

class NotifyListener {
  readonly messages: string[] = [];
  private constructor(
    readonly socket: string,
    private readonly child: ChildProcess,
  ) {}

  static async start(dir: string): Promise<NotifyListener> {
    const python = await requireBinary('python3', 'python3');
    const socket = path.join(dir, `notify-${Math.random().toString(36).slice(2)}.sock`);
    const child = spawn(python, ['-c', LISTENER, socket], { stdio: ['ignore', 'pipe', 'inherit'] });
    const l = new NotifyListener(socket, child);
    const ready = new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`notify listener exited ${code}`)));
      createInterface({ input: child.stdout }).on('line', (line) => {
        const m = JSON.parse(line) as { listening?: string; message?: string };
        if (m.listening) resolve();
        if (m.message !== undefined) l.messages.push(m.message);
      });
    });
    await ready;
    return l;
  }

  /** Waits for a message (BARRIER=1 ones aside) that `pred` accepts, after the `from`-th. */
  async waitFor(
    pred: (fields: string[]) => boolean,
    what: string,
    from = 0,
    timeoutMs = 30_000,
  ): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.messages.findIndex((m, j) => j >= from && pred(m.split('\n')));
      if (i >= 0) return i;
      if (Date.now() > deadline)
        throw new Error(`no notification ${what}; got ${JSON.stringify(this.messages)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

function startBin(name: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, [path.join(repoRoot(), 'bin', `${name}.js`), ...args], {
    stdio: ['ignore', 'ignore', 'ignore'],
    env: { ...process.env, ...env },
  });
  return child;
}

function exited(child: ChildProcess): Promise<number | null> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve(child.exitCode)
    : new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

function tcpAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('systemd readiness: sd_notify from the controller and the agent', function () {
  this.timeout(120_000);
  let tmp = '';
  let listener: NotifyListener;
  const children: ChildProcess[] = [];

  before(async () => {
    await requireBinary('systemd-notify', 'systemd');
    tmp = await mkdtemp(path.join(tmpdir(), 'envsnap-notify-'));
    listener = await NotifyListener.start(tmp);
  });

  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
  });

  after(async () => {
    listener?.stop();
    if (tmp !== '') await rm(tmp, { recursive: true, force: true });
  });

  async function controllerConfig(port: number): Promise<string> {
    const file = path.join(tmp, `controller-${port}.yaml`);
    await writeFile(
      file,
      stringify({ controller: { listen: `127.0.0.1:${port}`, state_dir: path.join(tmp, `state-${port}`) } }),
    );
    return file;
  }

  async function agentConfig(port: number): Promise<string> {
    const file = path.join(tmp, `agent-${port}.yaml`);
    await writeFile(
      file,
      stringify({
        agent: {
          node_id: 'node-1',
          controller: `127.0.0.1:${port}`,
          work_dir: path.join(tmp, `work-${port}`),
        },
      }),
    );
    return file;
  }

  it('both units are Type=notify with NotifyAccess=all', async () => {
    for (const unit of units) {
      const text = await readFile(path.join(unitDir, unit), 'utf8');
      assert.match(text, /^Type=notify$/m, unit);
      assert.match(text, /^NotifyAccess=all$/m, unit);
    }
  });

  it('the controller sends READY=1 once its gRPC port answers, and STOPPING=1 on SIGTERM', async () => {
    const port = await freePort();
    const from = listener.messages.length;
    const controller = startBin('envsnap-controller', ['--config', await controllerConfig(port)], {
      NOTIFY_SOCKET: listener.socket,
    });
    children.push(controller);
    const i = await listener.waitFor((f) => f.includes('READY=1'), 'READY=1 from the controller', from);
    assert.equal(await tcpAnswers(port), true, 'READY=1 came before the gRPC port answered');
    assert.ok(
      listener.messages[i]!.split('\n').includes(`STATUS=running: gRPC 127.0.0.1:${port}`),
      listener.messages[i],
    );
    controller.kill('SIGTERM');
    await listener.waitFor(
      (f) => f.includes('STOPPING=1') && f.some((l) => l.startsWith('STATUS=draining')),
      'STOPPING=1 from the controller',
      i,
    );
    assert.equal(await exited(controller), 0);
  });

  it('the agent is ready once it tries to connect, then reports the connection in STATUS', async () => {
    const port = await freePort();
    const from = listener.messages.length;
    const agent = startBin('envsnap-agent', ['--config', await agentConfig(port)], {
      NOTIFY_SOCKET: listener.socket,
    });
    children.push(agent);
    // No controller yet: ready anyway (a controller outage must not fail the agent's start).
    const ready = await listener.waitFor(
      (f) => f.includes('READY=1') && f.includes(`STATUS=connecting: controller 127.0.0.1:${port}`),
      'READY=1 from the agent',
      from,
    );
    const controller = startBin('envsnap-controller', ['--config', await controllerConfig(port)], {});
    children.push(controller);
    const connected = await listener.waitFor(
      (f) => f.includes(`STATUS=running: controller 127.0.0.1:${port}`),
      'STATUS=running from the agent',
      ready,
    );
    controller.kill('SIGTERM');
    assert.equal(await exited(controller), 0);
    const lost = await listener.waitFor(
      (f) => f.includes(`STATUS=connecting: controller 127.0.0.1:${port}`),
      'STATUS=connecting once the controller is gone',
      connected,
    );
    agent.kill('SIGTERM');
    await listener.waitFor((f) => f.includes('STOPPING=1'), 'STOPPING=1 from the agent', lost);
    assert.equal(await exited(agent), 0);
  });

  it('STOPPING=1 reaches systemd before the process exits, even when systemd-notify is slow', async () => {
    // On a loaded machine a systemd-notify run may end well after its message arrived (it waits on
    // the barrier, then exits); notifications are sent one after another, and the processes used
    // to exit while one was still running, so the queued STOPPING=1 was never sent. A wrapper
    // first on PATH keeps each run going 0.5 s after the real tool has sent its message.
    const real = await requireBinary('systemd-notify', 'systemd');
    const bin = path.join(tmp, 'slow-bin');
    await mkdir(bin, { recursive: true });
    await writeFile(
      path.join(bin, 'systemd-notify'),
      `#!/bin/sh\n'${real}' "$@"\nrc=$?\nsleep 0.5\nexit $rc\n`,
    );
    await chmod(path.join(bin, 'systemd-notify'), 0o755);
    const env = { NOTIFY_SOCKET: listener.socket, PATH: `${bin}${path.delimiter}${process.env.PATH ?? ''}` };
    const port = await freePort();
    for (const [name, args] of [
      ['envsnap-controller', ['--config', await controllerConfig(port)]],
      ['envsnap-agent', ['--config', await agentConfig(port)]],
    ] as const) {
      const from = listener.messages.length;
      const child = startBin(name, [...args], env);
      children.push(child);
      const ready = await listener.waitFor((f) => f.includes('READY=1'), `READY=1 from ${name}`, from);
      child.kill('SIGTERM');
      assert.equal(await exited(child), 0);
      // Exited: whatever it sent was received (systemd-notify waits on the barrier); give the
      // listener's output a moment to be read.
      await listener.waitFor((f) => f.includes('STOPPING=1'), `STOPPING=1 from ${name}`, ready, 3_000);
    }
  });

  it('without NOTIFY_SOCKET nothing is sent: systemd-notify is never started', async () => {
    // A fake systemd-notify first on PATH records each run.
    const bin = path.join(tmp, 'fake-bin');
    const marker = path.join(tmp, 'fake-systemd-notify-ran');
    await rm(bin, { recursive: true, force: true });
    await mkdir(bin);
    await writeFile(path.join(bin, 'systemd-notify'), `#!/bin/sh\necho "$@" >> '${marker}'\n`);
    await chmod(path.join(bin, 'systemd-notify'), 0o755);
    const PATH = `${bin}${path.delimiter}${process.env.PATH ?? ''}`;
    const run = async (env: NodeJS.ProcessEnv) => {
      const port = await freePort();
      const c = startBin('envsnap-controller', ['--config', await controllerConfig(port)], { PATH, ...env });
      children.push(c);
      const deadline = Date.now() + 30_000;
      while (!(await tcpAnswers(port))) {
        assert.ok(Date.now() < deadline, 'the controller did not start');
        await new Promise((r) => setTimeout(r, 100));
      }
      await new Promise((r) => setTimeout(r, 500));
      c.kill('SIGTERM');
      assert.equal(await exited(c), 0);
    };
    await run({ NOTIFY_SOCKET: '' }); // empty counts as unset, as for sd_notify
    await assert.rejects(stat(marker), 'systemd-notify ran without NOTIFY_SOCKET');
    // Control: with the variable set, the fake is run.
    await run({ NOTIFY_SOCKET: listener.socket });
    assert.match(await readFile(marker, 'utf8'), /--ready --status=running: gRPC/);
  });

  it('takes NOTIFY_SOCKET out of the environment, so that child processes cannot notify', async () => {
    const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: listener.socket };
    const notifier = SystemdNotifier.fromEnv(undefined, env);
    assert.equal(env.NOTIFY_SOCKET, undefined);
    assert.equal(notifier.enabled, true);
    const from = listener.messages.length;
    notifier.notify({ status: 'hello from the test' });
    await notifier.flush();
    await listener.waitFor((f) => f.includes('STATUS=hello from the test'), 'the status', from, 5_000);
    assert.equal(SystemdNotifier.fromEnv(undefined, {}).enabled, false);
  });
});
