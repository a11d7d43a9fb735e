/**
 * Progress of backup:create and backup:restore as a user sees it: plain lines when stderr is not a
 * terminal (cron, CI), live bars with bytes, rate and ETA on a terminal (a pseudo-terminal from
 * util-linux's `script`), nothing with --quiet. The data is a mount of incompressible files, large
 * enough that a transfer spans several progress events.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/datasets.js';
import { EnvsnapCluster } from '../helpers/envsnap.js';
import { requireBinary } from '../helpers/servers.js';

/** The escape character that starts terminal control sequences. */
const ESC = '\u001b';
const FILES = 4;
const FILE_MIB = 64;

/** Runs `envsnap ARGS` inside a pseudo-terminal (160 columns); resolves with everything it drew. */
async function onTerminal(
  address: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; output: string }> {
  const script = await requireBinary('script', 'util-linux');
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const command = [
    'stty cols 160 rows 40;',
    'exec',
    quote(process.execPath),
    quote(path.join(repoRoot(), 'bin', 'envsnap.js')),
    '--controller',
    address,
    ...args.map(quote),
  ].join(' ');
  return new Promise((resolve, reject) => {
    // -q quiet, -e exit with the command's status, -f flush at once; the typescript goes nowhere.
    const child = spawn(script, ['-qefc', command, '/dev/null'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    const out: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => out.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output: Buffer.concat(out).toString() });
    });
  });
}

/** The terminal output without colour and cursor-movement sequences. */
function visible(output: string): string {
  // Cursor moves and line clears start a new line; colours and cursor hiding go.
  return (
    output
      // eslint-disable-next-line no-control-regex
      .replace(/\u001b\[[0-9;]*[ABGHK]/g, '\n')
      // eslint-disable-next-line no-control-regex
      .replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '')
      .replace(/\r/g, '\n')
  );
}

describe('progress on the terminal and in logs', function () {
  this.timeout(300_000);
  let dir: string;
  let cluster: EnvsnapCluster;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'envsnap-progress-'));
    const media = path.join(dir, 'media');
    await mkdir(media);
    for (let f = 0; f < FILES; f++) {
      const fh = await open(path.join(media, `random-${f}.bin`), 'w');
      for (let i = 0; i < FILE_MIB / 8; i++) await fh.write(randomBytes(8 * 1024 * 1024));
      await fh.close();
    }
    cluster = await EnvsnapCluster.start({
      nodes: ['node-1'],
      environments: [{ name: 'files', mounts: [{ name: 'media', node: 'node-1', path: media }] }],
    });
  });

  after(async () => {
    await cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  let firstBackup = '';

  it('prints plain lines when stderr is not a terminal: artifacts, periodic totals, a summary', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'files'], { ENVSNAP_PROGRESS_INTERVAL: '0.2' });
    assert.equal(r.code, 0, r.stderr);
    firstBackup = /^Backup ID: (\S+)$/m.exec(r.stdout)![1]!;
    // No bar drawing: no escape sequences, no carriage returns.
    assert.ok(!r.stderr.includes(ESC) && !r.stderr.includes('\r'), r.stderr);
    assert.match(r.stderr, /^media\/files\.tar\.zst: 25\d\.\d MiB in \d+s \([\d.]+ [KMG]iB\/s\)$/m);
    assert.match(r.stderr, /^transferred 25\d\.\d MiB in 1 artifact in \d+s \([\d.]+ [KMG]iB\/s\)$/m);
    // The first backup has nothing to estimate from: totals lines carry bytes and rate only.
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('progress:'));
    assert.ok(lines.length > 0, `no progress line in:\n${r.stderr}`);
    for (const line of lines)
      assert.match(line, /^progress: [\d.]+ (B|[KMG]iB), ([\d.]+ [KMG]?i?B\/s|-), ETA \?$/, line);
  });

  it('estimates a backup from the previous one, shown with "~"', async () => {
    const r = await cluster.cli(['backup:create', '-e', 'files'], { ENVSNAP_PROGRESS_INTERVAL: '0.2' });
    assert.equal(r.code, 0, r.stderr);
    const totals = r.stderr.split('\n').filter((l) => l.startsWith('progress:'));
    assert.ok(totals.length > 0, `no progress line in:\n${r.stderr}`);
    for (const line of totals)
      assert.match(
        line,
        /^progress: [\d.]+ (B|[KMG]iB) of ~25\d\.\d MiB \(\d+%\), .*, ETA (\d+s|\d+m\d\ds|\?)$/,
        line,
      );
  });

  it("knows a restore's exact total from the manifest", async () => {
    const r = await cluster.cli(['backup:restore', firstBackup, '--yes'], {
      ENVSNAP_PROGRESS_INTERVAL: '0.2',
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^media\/files\.tar\.zst: 25\d\.\d MiB in \d+s/m);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('progress:'));
    assert.ok(lines.length > 0, `no progress line in:\n${r.stderr}`);
    for (const line of lines)
      assert.match(line, /^progress: [\d.]+ (B|[KMG]iB) of 25\d\.\d MiB \(\d+%\), /, line);
  });

  it('--quiet prints the result only', async () => {
    const r = await cluster.cli(['--quiet', 'backup:create', '-e', 'files'], {
      ENVSNAP_PROGRESS_INTERVAL: '0.2',
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /^Backup ID: \S+\n$/);
  });

  it('draws bars with bytes, rate and ETA on a terminal, with a total line', async () => {
    const r = await onTerminal(cluster.address, ['backup:create', '-e', 'files']);
    assert.equal(r.code, 0, r.output);
    assert.ok(r.output.includes(`${ESC}[`), 'no terminal control sequence: not drawn as bars');
    const screen = visible(r.output);
    // The final frame: the total and the artifact, both done, with their sizes and rates.
    assert.match(screen, /^total +[█░]{20} 100% \| 25\d\.\d MiB \| [\d.]+ [KMG]iB\/s \| done in \d+s$/m);
    assert.match(
      screen,
      /^media\/files\.tar\.zst +[█░]{20} 100% \| 25\d\.\d MiB \| [\d.]+ [KMG]iB\/s \| done in \d+s$/m,
    );
    // Frames drawn while it ran: the estimate from the previous backups, and an ETA.
    assert.match(screen, /\| [\d.]+ (B|[KMG]iB) \/ ~25\d\.\d MiB \| .* \| ETA (\d+s|\d+m\d\ds|\?)/);
    assert.match(screen, /^Backup ID: \S+$/m);
  });

  it('--quiet draws nothing on a terminal either', async () => {
    const r = await onTerminal(cluster.address, ['--quiet', 'backup:create', '-e', 'files']);
    assert.equal(r.code, 0, r.output);
    assert.doesNotMatch(r.output, /ETA|█|░/);
    assert.ok(!r.output.includes(`${ESC}[?25l`), 'the cursor was hidden for bars');
    assert.match(visible(r.output), /^Backup ID: \S+$/m);
  });
});
