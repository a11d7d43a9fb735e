import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  compileControllerConfig,
  loadAgentConfig,
  loadConfigFile,
  parseAddress,
  parseConfigText,
} from '../../shared/config.js';
import { ConfigError, ConfigUnreadableError } from '../../shared/errors.js';

const FULL = `
controller:
  listen: 127.0.0.1:7700
  metrics_listen: 127.0.0.1:9700
  state_dir: /var/lib/envsnap
storage:
  - name: local
    type: local
    path: /var/lib/envsnap/repository
environments:
  - name: main
    type: production
    active: true
    services:
      - name: db
        kind: mariadb
        nodes: [node-1]
        connection: { host: 127.0.0.1, port: 3306, user: root, password_file: /etc/envsnap/db.pass }
        databases: [main, sales]
      - name: pg
        kind: postgresql
        nodes: [node-1]
        connection: { socket: /run/postgresql, port: 5432, user: postgres }
      - name: cache
        kind: redis
        nodes: [node-1]
        connection: { host: 127.0.0.1, port: 6379 }
    mounts:
      - name: media
        node: node-1
        path: /srv/app/media
agent:
  node_id: node-1
  controller: 127.0.0.1:7700
  metrics_listen: 127.0.0.1:9701
  work_dir: /var/lib/envsnap-agent
`;

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  assert.fail('expected an error');
}

describe('config', () => {
  it('accepts the documented example and compiles controller options', () => {
    const cfg = parseConfigText(FULL, 'envsnap.yaml');
    const c = compileControllerConfig(cfg, 'envsnap.yaml');
    assert.deepEqual(c.listen, { host: '127.0.0.1', port: 7700 });
    assert.equal(c.environments[0]!.services.length, 3);
    assert.equal(c.environments[0]!.mounts[0]!.path, '/srv/app/media');
    assert.equal(c.defaultCompression, 'zstd');
    assert.equal(c.shutdownTimeoutMs, 30_000);
  });

  it('names the file, the field path and the problem', () => {
    const bad = FULL.replace('kind: mariadb', 'kind: oracle');
    const err = errorOf(() => parseConfigText(bad, '/etc/envsnap/envsnap.yaml'));
    assert.ok(err instanceof ConfigError);
    assert.match(
      err.message,
      /^\/etc\/envsnap\/envsnap\.yaml: invalid config: environments\[0\]\.services\[0\]\.kind: /,
    );
  });

  it('takes retention rules on a storage location, without restorable_days', () => {
    const withRules = FULL.replace(
      '    path: /var/lib/envsnap/repository',
      '    path: /var/lib/envsnap/repository\n    retention: { preset: premium, automated: { keep_daily: 60 } }',
    );
    const c = compileControllerConfig(parseConfigText(withRules, 'f.yaml'), 'f.yaml');
    const local = c.storage[0]!;
    assert.deepEqual(local.retention, { preset: 'premium', automated: { keep_daily: 60 }, timezone: 'UTC' });
    const typo = FULL.replace(
      '    path: /var/lib/envsnap/repository',
      '    path: /var/lib/envsnap/repository\n    retention: { restorable_days: 3 }',
    );
    assert.match(errorOf(() => parseConfigText(typo, 'f.yaml')).message, /storage\[0\]/);
  });

  it('refuses unknown fields', () => {
    const err = errorOf(() =>
      parseConfigText(FULL.replace('active: true', 'active: true\n    colour: red'), 'f.yaml'),
    );
    assert.match(err.message, /environments\[0\]/);
    assert.match(err.message, /colour/);
  });

  it('refuses inline passwords without echoing them', () => {
    const bad = FULL.replace('password_file: /etc/envsnap/db.pass', 'password: hunter2');
    const err = errorOf(() => parseConfigText(bad, 'f.yaml'));
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /environments\[0\]\.services\[0\]\.connection\.password/);
    assert.doesNotMatch(err.message + String(err.hint), /hunter2/);
  });

  it('needs host and port, or a socket', () => {
    const err = errorOf(() =>
      parseConfigText(FULL.replace('{ host: 127.0.0.1, port: 6379 }', '{ user: x }'), 'f.yaml'),
    );
    assert.match(err.message, /services\[2\]\.connection: needs host and port, or socket/);
  });

  it('refuses duplicate names and unknown storage', () => {
    const dup = FULL.replace('name: pg', 'name: db');
    assert.match(errorOf(() => parseConfigText(dup, 'f.yaml')).message, /duplicate name "db"/);
    const unknown = FULL.replace('    active: true', '    active: true\n    storage: [offsite]');
    assert.match(errorOf(() => parseConfigText(unknown, 'f.yaml')).message, /unknown storage "offsite"/);
  });

  it('refuses relative paths and bad addresses', () => {
    assert.match(
      errorOf(() => parseConfigText(FULL.replace('path: /srv/app/media', 'path: srv/media'), 'f.yaml'))
        .message,
      /mounts\[0\]\.path: must be an absolute path/,
    );
    assert.match(
      errorOf(() => parseConfigText(FULL.replace('listen: 127.0.0.1:7700', 'listen: localhost'), 'f.yaml'))
        .message,
      /controller\.listen: must be host:port/,
    );
  });

  it('reports YAML syntax errors and unreadable files', async () => {
    assert.ok(errorOf(() => parseConfigText('a: [1, 2', 'f.yaml')) instanceof ConfigUnreadableError);
    await assert.rejects(loadConfigFile('/nonexistent/envsnap.yaml'), (err: Error) => {
      assert.ok(err instanceof ConfigUnreadableError);
      assert.match(err.message, /cannot read config file \/nonexistent\/envsnap\.yaml: ENOENT/);
      return true;
    });
  });

  it('loads the agent section, and says when it is missing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'envsnap-config-'));
    try {
      const file = join(dir, 'envsnap.yaml');
      await writeFile(file, FULL);
      const a = await loadAgentConfig(file);
      assert.equal(a.nodeId, 'node-1');
      assert.equal(a.concurrency, 4);
      assert.equal(a.zstdThreads, 0);
      await writeFile(file, 'controller:\n  state_dir: /tmp/x\n');
      await assert.rejects(loadAgentConfig(file), /agent: section is required/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('parses addresses', () => {
    assert.deepEqual(parseAddress('[::1]:7700'), { host: '::1', port: 7700 });
    assert.equal(parseAddress('host:99999'), undefined);
    assert.equal(parseAddress('nohost'), undefined);
  });
});
