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
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { access, constants, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/datasets.js';
import { requireBinary } from '../helpers/servers.js';

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
