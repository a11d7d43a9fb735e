/**
 * pgClient against the real pg_wrapper of this Debian machine: it picks the binary pg_wrapper
 * execs when the server is named by PGHOST (the same program and version, without the Perl
 * start), and leaves names that are not wrapped alone.
 */
import assert from 'node:assert/strict';
import { realpath } from 'node:fs/promises';
import { basename } from 'node:path';

import { pgClient } from '../../agent/engines/pg-client.js';
import { runTool, toolOnPath } from '../../agent/tool-process.js';

describe('pgClient', () => {
  for (const name of ['psql', 'pg_dump', 'pg_dumpall', 'pg_restore']) {
    it(`runs the ${name} that pg_wrapper would run with PGHOST set`, async () => {
      const onPath = await toolOnPath(name);
      assert.ok(onPath, `${name} is not on PATH: install the Debian package postgresql-client`);
      assert.equal(basename(await realpath(onPath)), 'pg_wrapper', `${name} on PATH is not pg_wrapper`);
      const client = await pgClient(name);
      assert.match(client.command, new RegExp(`^/usr/lib/postgresql/\\d+(?:\\.\\d+)?/bin/${name}$`));
      assert.equal(client.env.PGSYSCONFDIR, process.env.PGSYSCONFDIR ?? '/etc/postgresql-common');
      const opts = { env: { PGHOST: '/nonexistent' }, debianPackage: 'postgresql-client' };
      // pg_wrapper execs the binary it chose: both print the same version line.
      assert.equal(
        await runTool(client.command, ['--version'], opts),
        await runTool(name, ['--version'], opts),
      );
    });
  }

  it('leaves a program that is not pg_wrapper, or that is missing, as it is', async () => {
    assert.deepEqual(await pgClient('zstd'), { command: 'zstd', env: {} });
    assert.deepEqual(await pgClient('envsnap-no-such-tool'), { command: 'envsnap-no-such-tool', env: {} });
  });
});
