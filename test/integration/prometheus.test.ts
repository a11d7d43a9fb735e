/**
 * envsnap and Prometheus: the alert rules and the example scrape config in docs/prometheus pass
 * promtool and fire when they should (`promtool test rules` on synthetic series); then a real
 * controller and agent make a real backup, their /metrics pass `promtool check metrics`, and a real
 * Prometheus (Debian package `prometheus`, on a free loopback port with its own temporary storage)
 * scrapes both, sees the backup, and loads and evaluates the rules without error or alert.
 *
 * A missing promtool, prometheus or setpriv fails the tests with the Debian package to install.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { parse, stringify } from 'yaml';
import { repoRoot } from '../helpers/datasets.js';
import { EnvsnapCluster } from '../helpers/envsnap.js';
import { freePort, requireBinary } from '../helpers/servers.js';

/** Exit code and whole output of a finished command. */
interface Exec {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion without judging its exit code; `input` is written to its stdin. */
function exec(command: string, args: string[], opts: { input?: string; cwd?: string } = {}): Promise<Exec> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: opts.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => undefined);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** `command` output for an assertion message. */
function shown(r: Exec): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

const docsDir = path.join(repoRoot(), 'docs', 'prometheus');
const ENV = 'm';

interface RuleFile {
  groups: Array<{
    name: string;
    rules: Array<{ alert?: string; labels?: Record<string, string>; annotations?: Record<string, string> }>;
  }>;
}

/** The alert names alerts.yml defines (commented-out rules are not part of it). */
async function alertNames(): Promise<string[]> {
  const rules = parse(await readFile(path.join(docsDir, 'alerts.yml'), 'utf8')) as RuleFile;
  return rules.groups.flatMap((g) => g.rules.flatMap((r) => (r.alert === undefined ? [] : [r.alert])));
}

/**
 * `promtool test rules` cases for alerts.yml, on synthetic series (time starts at 0, one sample a
 * minute). They run against a copy without annotations: a case has to list an alert's annotations
 * exactly, and their templates are already checked by `promtool check rules`.
 */
const ctl = { job: 'envsnap-controller', instance: 'ctl:9700' };
const agentTarget = { job: 'envsnap-agent', instance: 'node1:9701' };
const sel = (labels: Record<string, string>): string =>
  `{${Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',')}}`;
const ruleTests = {
  rule_files: ['alerts-logic.yml'],
  evaluation_interval: '1m',
  tests: [
    {
      // The last success at time 0: fires only once it is over 26 h old and 10 min have passed.
      interval: '1m',
      input_series: [
        {
          series: `envsnap_last_successful_backup_timestamp_seconds${sel({ ...ctl, environment: 'prod' })}`,
          values: '0+0x1700',
        },
        {
          series: `envsnap_last_successful_backup_timestamp_seconds${sel({ ...ctl, environment: 'dev' })}`,
          values: '0+60x1700',
        },
      ],
      alert_rule_test: [
        { eval_time: '25h', alertname: 'EnvsnapBackupTooOld', exp_alerts: [] },
        { eval_time: '26h5m', alertname: 'EnvsnapBackupTooOld', exp_alerts: [] },
        {
          eval_time: '26h15m',
          alertname: 'EnvsnapBackupTooOld',
          exp_alerts: [{ exp_labels: { ...ctl, environment: 'prod', severity: 'critical' } }],
        },
        { eval_time: '26h15m', alertname: 'EnvsnapNoSuccessfulBackupSinceStart', exp_alerts: [] },
      ],
    },
    {
      // A controller up for 27 h that never completed a backup (e.g. restarted, then every run failed).
      interval: '1m',
      input_series: [
        { series: `envsnap_controller_process_start_time_seconds${sel(ctl)}`, values: '0+0x1700' },
        {
          series: `envsnap_last_failed_backup_timestamp_seconds${sel({ ...ctl, environment: 'prod' })}`,
          values: '0+0x1700',
        },
      ],
      alert_rule_test: [
        { eval_time: '25h', alertname: 'EnvsnapNoSuccessfulBackupSinceStart', exp_alerts: [] },
        {
          eval_time: '27h',
          alertname: 'EnvsnapNoSuccessfulBackupSinceStart',
          exp_alerts: [{ exp_labels: { ...ctl, severity: 'critical' } }],
        },
      ],
    },
    {
      // The same controller, with a success 1 h ago: nothing.
      interval: '1m',
      input_series: [
        { series: `envsnap_controller_process_start_time_seconds${sel(ctl)}`, values: '0+0x1700' },
        {
          series: `envsnap_last_successful_backup_timestamp_seconds${sel({ ...ctl, environment: 'prod' })}`,
          values: '_x1560 93600x100',
        },
      ],
      alert_rule_test: [
        { eval_time: '27h', alertname: 'EnvsnapNoSuccessfulBackupSinceStart', exp_alerts: [] },
        { eval_time: '27h', alertname: 'EnvsnapBackupTooOld', exp_alerts: [] },
      ],
    },
    {
      // First failure since the controller started at 10 min (the counter appears at 1, which
      // increase() cannot see), a second one at 3 h 1 min (both signals: still one alert).
      interval: '1m',
      input_series: [
        {
          series: `envsnap_backups_total${sel({ ...ctl, environment: 'prod', status: 'failed' })}`,
          values: '_x10 1x170 2x100',
        },
        {
          series: `envsnap_last_failed_backup_timestamp_seconds${sel({ ...ctl, environment: 'prod' })}`,
          values: '_x10 600x170 10860x100',
        },
        {
          series: `envsnap_backups_total${sel({ ...ctl, environment: 'prod', status: 'complete' })}`,
          values: '0+1x280',
        },
      ],
      alert_rule_test: [
        { eval_time: '5m', alertname: 'EnvsnapBackupFailed', exp_alerts: [] },
        {
          eval_time: '20m',
          alertname: 'EnvsnapBackupFailed',
          exp_alerts: [{ exp_labels: { ...ctl, environment: 'prod', severity: 'warning' } }],
        },
        { eval_time: '2h', alertname: 'EnvsnapBackupFailed', exp_alerts: [] },
        {
          eval_time: '3h10m',
          alertname: 'EnvsnapBackupFailed',
          exp_alerts: [{ exp_labels: { ...ctl, environment: 'prod', severity: 'warning' } }],
        },
        { eval_time: '4h30m', alertname: 'EnvsnapBackupFailed', exp_alerts: [] },
      ],
    },
    {
      interval: '1m',
      input_series: [
        {
          series: `envsnap_restores_total${sel({ ...ctl, environment: 'staging', status: 'failed' })}`,
          values: '0x30 1x150',
        },
        {
          series: `envsnap_restores_total${sel({ ...ctl, environment: 'staging', status: 'complete' })}`,
          values: '0+1x180',
        },
      ],
      alert_rule_test: [
        { eval_time: '20m', alertname: 'EnvsnapRestoreFailed', exp_alerts: [] },
        {
          eval_time: '40m',
          alertname: 'EnvsnapRestoreFailed',
          exp_alerts: [{ exp_labels: { ...ctl, environment: 'staging', severity: 'critical' } }],
        },
        { eval_time: '2h', alertname: 'EnvsnapRestoreFailed', exp_alerts: [] },
      ],
    },
    {
      // Two backups of prod fail verification at 10 min; at 40 min one verifies again and the
      // other is deleted. dev's backups are fine throughout.
      interval: '1m',
      input_series: [
        {
          series: `envsnap_backups_failing_verification${sel({ ...ctl, environment: 'prod' })}`,
          values: '0x9 2x30 0x20',
        },
        {
          series: `envsnap_backups_failing_verification${sel({ ...ctl, environment: 'dev' })}`,
          values: '0x60',
        },
      ],
      alert_rule_test: [
        { eval_time: '5m', alertname: 'EnvsnapVerificationFailed', exp_alerts: [] },
        {
          eval_time: '15m',
          alertname: 'EnvsnapVerificationFailed',
          exp_alerts: [{ exp_labels: { ...ctl, environment: 'prod', severity: 'critical' } }],
        },
        { eval_time: '45m', alertname: 'EnvsnapVerificationFailed', exp_alerts: [] },
      ],
    },
    {
      // prod's drill fails at 10 min and passes again at 30 min; dev's passes throughout.
      interval: '1m',
      input_series: [
        {
          series: `envsnap_drill_last_result${sel({ ...ctl, environment: 'prod', status: 'fail' })}`,
          values: '0x9 1x20 0x20',
        },
        {
          series: `envsnap_drill_last_result${sel({ ...ctl, environment: 'dev', status: 'fail' })}`,
          values: '0x50',
        },
      ],
      alert_rule_test: [
        { eval_time: '5m', alertname: 'EnvsnapDrillFailed', exp_alerts: [] },
        {
          eval_time: '15m',
          alertname: 'EnvsnapDrillFailed',
          exp_alerts: [{ exp_labels: { ...ctl, environment: 'prod', severity: 'critical' } }],
        },
        { eval_time: '40m', alertname: 'EnvsnapDrillFailed', exp_alerts: [] },
      ],
    },
    {
      // The controller goes down at 6 min: ControllerDown after 2 min; the agent loses its session at
      // the same time, which must not raise EnvsnapAgentDisconnected as well.
      interval: '1m',
      input_series: [
        { series: `up${sel(ctl)}`, values: '1x5 0x30' },
        { series: `up${sel(agentTarget)}`, values: '1x35' },
        { series: `envsnap_agent_connected${sel(agentTarget)}`, values: '1x5 0x30' },
      ],
      alert_rule_test: [
        { eval_time: '7m', alertname: 'EnvsnapControllerDown', exp_alerts: [] },
        {
          eval_time: '10m',
          alertname: 'EnvsnapControllerDown',
          exp_alerts: [{ exp_labels: { ...ctl, severity: 'critical' } }],
        },
        { eval_time: '20m', alertname: 'EnvsnapAgentDisconnected', exp_alerts: [] },
        { eval_time: '20m', alertname: 'EnvsnapAgentDown', exp_alerts: [] },
      ],
    },
    {
      // The controller is fine, the agent runs but has no session from 6 min; then it stops.
      interval: '1m',
      input_series: [
        { series: `up${sel(ctl)}`, values: '1x60' },
        { series: `up${sel(agentTarget)}`, values: '1x30 0x30' },
        { series: `envsnap_agent_connected${sel(agentTarget)}`, values: '1x5 0x25' },
      ],
      alert_rule_test: [
        { eval_time: '9m', alertname: 'EnvsnapAgentDisconnected', exp_alerts: [] },
        {
          eval_time: '15m',
          alertname: 'EnvsnapAgentDisconnected',
          exp_alerts: [{ exp_labels: { ...agentTarget, severity: 'warning' } }],
        },
        { eval_time: '15m', alertname: 'EnvsnapAgentDown', exp_alerts: [] },
        {
          eval_time: '40m',
          alertname: 'EnvsnapAgentDown',
          exp_alerts: [{ exp_labels: { ...agentTarget, severity: 'warning' } }],
        },
        { eval_time: '40m', alertname: 'EnvsnapControllerDown', exp_alerts: [] },
      ],
    },
    {
      // No controller target at all.
      interval: '1m',
      input_series: [{ series: `up${sel(agentTarget)}`, values: '1x30' }],
      alert_rule_test: [
        { eval_time: '5m', alertname: 'EnvsnapControllerMissing', exp_alerts: [] },
        {
          eval_time: '15m',
          alertname: 'EnvsnapControllerMissing',
          exp_alerts: [{ exp_labels: { job: 'envsnap-controller', severity: 'critical' } }],
        },
      ],
    },
  ],
};

/** One series of a Prometheus instant-query answer. */
interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

interface RulesAnswer {
  groups: Array<{
    name: string;
    rules: Array<{ name: string; type: string; health: string; lastError?: string; state?: string }>;
  }>;
}

interface AlertsAnswer {
  alerts: Array<{ labels: Record<string, string>; state: string }>;
}

describe('Prometheus: alert rules, scrape config and a real scrape', function () {
  this.timeout(180_000);
  let promtool = '';
  let tmp = '';

  before(async () => {
    promtool = await requireBinary('promtool', 'prometheus');
    tmp = await mkdtemp(path.join(tmpdir(), 'envsnap-prometheus-'));
  });

  after(async () => {
    if (tmp !== '') await rm(tmp, { recursive: true, force: true });
  });

  describe('docs/prometheus', () => {
    it('promtool check rules accepts alerts.yml and finds every alert', async () => {
      const r = await exec(promtool, ['check', 'rules', path.join(docsDir, 'alerts.yml')]);
      assert.equal(r.code, 0, shown(r));
      const names = await alertNames();
      assert.match(r.stdout, new RegExp(`SUCCESS: ${names.length} rules found`), shown(r));
      for (const name of [
        'EnvsnapBackupTooOld',
        'EnvsnapBackupFailed',
        'EnvsnapRestoreFailed',
        'EnvsnapVerificationFailed',
        'EnvsnapDrillFailed',
        'EnvsnapControllerDown',
        'EnvsnapAgentDown',
        'EnvsnapAgentDisconnected',
      ])
        assert.ok(names.includes(name), `alerts.yml has no ${name}: ${names.join(', ')}`);
    });

    it('every alert has a severity label, a summary and a description', async () => {
      const rules = parse(await readFile(path.join(docsDir, 'alerts.yml'), 'utf8')) as RuleFile;
      for (const rule of rules.groups.flatMap((g) => g.rules)) {
        assert.match(rule.labels?.severity ?? '', /^(critical|warning)$/, `${rule.alert}: severity`);
        assert.ok(rule.annotations?.summary, `${rule.alert}: summary`);
        assert.ok(rule.annotations?.description, `${rule.alert}: description`);
      }
    });

    it('promtool check config accepts the example prometheus.yml with its rule file', async () => {
      const dir = path.join(tmp, 'example');
      await mkdir(dir);
      await copyFile(path.join(docsDir, 'prometheus.yml'), path.join(dir, 'prometheus.yml'));
      await copyFile(path.join(docsDir, 'alerts.yml'), path.join(dir, 'alerts.yml'));
      const r = await exec(promtool, ['check', 'config', path.join(dir, 'prometheus.yml')]);
      assert.equal(r.code, 0, shown(r));
      assert.match(r.stdout, /SUCCESS: 1 rule files found/, shown(r));
      const config = parse(await readFile(path.join(dir, 'prometheus.yml'), 'utf8')) as {
        scrape_configs: Array<{ job_name: string }>;
      };
      assert.deepEqual(
        config.scrape_configs.map((s) => s.job_name),
        ['envsnap-controller', 'envsnap-agent'],
      );
    });

    it('the alerts fire when they should and only then (promtool test rules)', async () => {
      const dir = path.join(tmp, 'logic');
      await mkdir(dir);
      const rules = parse(await readFile(path.join(docsDir, 'alerts.yml'), 'utf8')) as RuleFile;
      for (const rule of rules.groups.flatMap((g) => g.rules)) delete rule.annotations;
      await writeFile(path.join(dir, 'alerts-logic.yml'), stringify(rules));
      await writeFile(path.join(dir, 'tests.yml'), stringify(ruleTests));
      const r = await exec(promtool, ['test', 'rules', 'tests.yml'], { cwd: dir });
      assert.equal(r.code, 0, shown(r));
      // Every alert is exercised by at least one case.
      const tested = new Set(ruleTests.tests.flatMap((t) => t.alert_rule_test.map((a) => a.alertname)));
      for (const name of await alertNames()) assert.ok(tested.has(name), `no promtool test case for ${name}`);
    });
  });

  describe('a real controller and agent scraped by a real Prometheus', () => {
    let cluster: EnvsnapCluster | undefined;
    let prometheus: ChildProcess | undefined;
    let prometheusExited: Promise<void> | undefined;
    let promUrl = '';
    let promLog = '';
    let backupStart = 0;
    let backupEnd = 0;
    const scraped = new Map<string, string>();

    before(async () => {
      const mount = path.join(tmp, 'mount');
      await mkdir(path.join(mount, 'sub'), { recursive: true });
      await writeFile(path.join(mount, 'a.txt'), 'envsnap and prometheus\n');
      await writeFile(path.join(mount, 'sub', 'b.bin'), Buffer.alloc(64 * 1024, 7));
      cluster = await EnvsnapCluster.start({
        nodes: ['node-1'],
        environments: [
          {
            name: ENV,
            type: 'development',
            active: true,
            mounts: [{ name: 'files', node: 'node-1', path: mount }],
          },
        ],
      });
    });

    after(async () => {
      if (prometheus && prometheusExited) {
        prometheus.kill('SIGTERM');
        const killer = setTimeout(() => prometheus?.kill('SIGKILL'), 15_000);
        await prometheusExited;
        clearTimeout(killer);
      }
      if (cluster) await cluster.stop();
    });

    /** The controller's and the agent's /metrics, fetched now. */
    async function scrape(): Promise<void> {
      const c = cluster!;
      for (const [who, port] of [
        ['controller', c.metricsPort],
        ['agent', c.agentMetricsPorts.get('node-1')!],
      ] as const) {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`);
        assert.equal(res.status, 200, `${who} /metrics`);
        scraped.set(who, await res.text());
      }
    }

    it('backup:create makes a backup of a mount-only environment', async () => {
      backupStart = Date.now() / 1000;
      const r = await cluster!.cli(['backup:create', '-e', ENV, '--yes']);
      backupEnd = Date.now() / 1000;
      assert.equal(r.code, 0, `backup:create exited ${r.code}\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /^Backup ID: [0-9a-f]{20}$/m);
      await scrape();
      assert.match(
        scraped.get('controller')!,
        new RegExp(`^envsnap_backups_total\\{environment="${ENV}",status="complete"\\} 1$`, 'm'),
      );
      assert.match(scraped.get('agent')!, /^envsnap_agent_connected 1$/m);
    });

    for (const who of ['controller', 'agent'] as const) {
      const prefix = who === 'controller' ? 'envsnap_controller_' : 'envsnap_agent_';

      /** promtool's findings on this process's /metrics, one a line. */
      const lint = async (): Promise<{ r: Exec; findings: string[] }> => {
        if (!scraped.has(who)) await scrape();
        const r = await exec(promtool, ['check', 'metrics'], { input: scraped.get(who)! });
        const findings = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.trim() !== '');
        return { r, findings };
      };

      it(`promtool check metrics finds nothing wrong with envsnap's own ${who} metrics`, async () => {
        // prom-client's default process and Node.js metrics, under the same prefix envsnap gives them.
        const defaults = new Registry();
        collectDefaultMetrics({ register: defaults, prefix });
        const defaultNames = new Set((await defaults.getMetricsAsJSON()).map((m) => m.name));
        const { findings } = await lint();
        const own = findings.filter((l) => !defaultNames.has(l.split(/\s/)[0]!));
        assert.deepEqual(own, [], `promtool findings about envsnap's ${who} metrics:\n${own.join('\n')}`);
      });

      it(`promtool check metrics exits 0 on the ${who}'s /metrics`, async () => {
        const { r, findings } = await lint();
        assert.equal(r.code, 0, `promtool check metrics on the ${who}'s /metrics:\n${findings.join('\n')}`);
      });
    }

    async function query(expr: string): Promise<Sample[]> {
      const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
      const body = (await res.json()) as { status: string; data: { result: Sample[] }; error?: string };
      assert.equal(body.status, 'success', `query ${expr}: ${body.error}`);
      return body.data.result;
    }

    async function api<T>(what: string): Promise<T> {
      const res = await fetch(`${promUrl}/api/v1/${what}`);
      const body = (await res.json()) as { status: string; data: T; error?: string };
      assert.equal(body.status, 'success', `${what}: ${body.error}`);
      return body.data;
    }

    /** Polls `check` until it returns a value (not undefined) or the time is up. */
    async function until<T>(
      what: string,
      check: () => Promise<T | undefined>,
      timeoutMs = 60_000,
    ): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      let last: unknown;
      while (Date.now() < deadline) {
        if (prometheus && prometheus.exitCode !== null)
          throw new Error(`prometheus exited ${prometheus.exitCode}:\n${await readFile(promLog, 'utf8')}`);
        try {
          const v = await check();
          if (v !== undefined) return v;
        } catch (e) {
          last = e;
        }
        await sleep(250);
      }
      const log = await readFile(promLog, 'utf8').catch(() => '');
      throw new Error(`timed out waiting for ${what} (last error: ${String(last)}); prometheus log:\n${log}`);
    }

    it('prometheus scrapes the controller and the agent (up == 1)', async () => {
      const [prometheusBin, setpriv] = await Promise.all([
        requireBinary('prometheus', 'prometheus'),
        requireBinary('setpriv', 'util-linux'),
      ]);
      const c = cluster!;
      const dir = path.join(tmp, 'prom');
      await mkdir(path.join(dir, 'data'), { recursive: true });
      await copyFile(path.join(docsDir, 'alerts.yml'), path.join(dir, 'alerts.yml'));
      await writeFile(
        path.join(dir, 'prometheus.yml'),
        stringify({
          global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
          rule_files: ['alerts.yml'],
          scrape_configs: [
            {
              job_name: 'envsnap-controller',
              static_configs: [{ targets: [`127.0.0.1:${c.metricsPort}`] }],
            },
            {
              job_name: 'envsnap-agent',
              static_configs: [
                { targets: [`127.0.0.1:${c.agentMetricsPorts.get('node-1')}`], labels: { node: 'node-1' } },
              ],
            },
          ],
        }),
      );
      const port = await freePort();
      promUrl = `http://127.0.0.1:${port}`;
      promLog = path.join(dir, 'prometheus.log');
      // setpriv --pdeathsig: the kernel kills prometheus if this test process dies without `after`.
      const child = spawn(
        setpriv,
        [
          '--pdeathsig',
          'KILL',
          '--',
          prometheusBin,
          `--config.file=${path.join(dir, 'prometheus.yml')}`,
          `--storage.tsdb.path=${path.join(dir, 'data')}`,
          `--web.listen-address=127.0.0.1:${port}`,
        ],
        { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      prometheus = child;
      const log = createWriteStream(promLog);
      child.stdout.pipe(log, { end: false });
      child.stderr.pipe(log, { end: false });
      prometheusExited = new Promise((resolve) => child.once('exit', () => resolve()));
      process.once('exit', () => child.kill('SIGKILL'));

      const up = await until('both targets up', async () => {
        const r = await query('up');
        const jobs = new Set(r.filter((s) => s.value[1] === '1').map((s) => s.metric.job));
        return jobs.has('envsnap-controller') && jobs.has('envsnap-agent') ? r : undefined;
      });
      assert.equal(up.length, 2, JSON.stringify(up));
    });

    it('prometheus sees the backup in envsnap_backups_total and the last-success timestamp', async () => {
      // Scraped every second: the series is there at once when the backup completed.
      const complete = await until(
        'envsnap_backups_total',
        async () => {
          const r = await query('envsnap_backups_total{status="complete"}');
          return r.length > 0 ? r : undefined;
        },
        15_000,
      );
      assert.equal(complete.length, 1, JSON.stringify(complete));
      assert.equal(complete[0]!.metric.environment, ENV);
      assert.equal(complete[0]!.metric.job, 'envsnap-controller');
      assert.equal(complete[0]!.value[1], '1');

      const last = await query('envsnap_last_successful_backup_timestamp_seconds');
      assert.equal(last.length, 1, JSON.stringify(last));
      assert.equal(last[0]!.metric.environment, ENV);
      const t = Number(last[0]!.value[1]);
      assert.ok(
        t >= backupStart - 1 && t <= backupEnd + 1,
        `last success ${t} not in [${backupStart}, ${backupEnd}]`,
      );

      const failed = await query('envsnap_backups_total{status="failed"}');
      assert.deepEqual(failed, []);
      const tasks = await query('envsnap_agent_tasks_total{type="backup",kind="mount",status="ok"}');
      assert.equal(tasks.length, 1, JSON.stringify(tasks));
      assert.equal(tasks[0]!.metric.node, 'node-1');
      assert.equal(tasks[0]!.value[1], '1');
    });

    it('prometheus loads every rule of alerts.yml and evaluates it without error', async () => {
      const names = await alertNames();
      const rules = await until('every rule evaluated', async () => {
        const data = await api<RulesAnswer>('rules');
        const all = data.groups.flatMap((g) => g.rules);
        return all.length === names.length && all.every((r) => r.health !== 'unknown') ? all : undefined;
      });
      assert.deepEqual(rules.map((r) => r.name).sort(), [...names].sort());
      for (const r of rules) {
        assert.equal(r.type, 'alerting', r.name);
        assert.equal(r.health, 'ok', `${r.name}: ${r.lastError}`);
      }
    });

    it('a healthy controller and agent with a fresh backup raise no alert', async () => {
      // A few evaluations after the rules' first one.
      await sleep(3_000);
      const data = await api<AlertsAnswer>('alerts');
      assert.deepEqual(
        data.alerts.map((a) => `${a.labels.alertname} ${a.state}`),
        [],
      );
    });
  });
});
