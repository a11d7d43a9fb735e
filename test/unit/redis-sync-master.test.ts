/**
 * The agent's side of a Redis full sync (agent/engines/redis-sync-master.ts), spoken to over a
 * socket as a replica would: only the password set as the target's masterauth gets the payload,
 * the payload has the diskless form with its end mark, and the mark goes out only once the input
 * ended without error. A real redis-server replica is in test/integration/engines.test.ts.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { Readable } from 'node:stream';

import { parseCommand, startRdbSyncMaster } from '../../agent/engines/redis-sync-master.js';

/** RESP for a command, as a replica sends it. */
function resp(...args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
}

/** A connection that collects what the server sends, and whether it closed. */
async function open(
  port: number,
): Promise<{ socket: Socket; received: () => Buffer; closed: Promise<void> }> {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, received: () => Buffer.concat(chunks), closed };
}

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('redis sync master', () => {
  it('parses RESP arrays and inline commands', () => {
    assert.deepEqual(parseCommand(Buffer.from(resp('REPLCONF', 'capa', 'eof'))), {
      args: ['REPLCONF', 'capa', 'eof'],
      used: resp('REPLCONF', 'capa', 'eof').length,
    });
    assert.equal(parseCommand(Buffer.from('*2\r\n$4\r\nPING')), undefined);
    assert.deepEqual(parseCommand(Buffer.from('PING\r\n')), { args: ['PING'], used: 6 });
    assert.equal(parseCommand(Buffer.from('*1\r\n:4\r\n')), 'error');
  });

  it('refuses commands before AUTH and a wrong password, and sends nothing of the payload', async () => {
    const master = await startRdbSyncMaster(Readable.from([Buffer.from('REDIS0010secret')]), 0);
    try {
      const a = await open(master.port);
      a.socket.write(resp('PING'));
      await until('the NOAUTH reply', () => a.received().length > 0);
      assert.equal(a.received().toString(), '-NOAUTH Authentication required.\r\n');
      a.socket.write(resp('PSYNC', '?', '-1'));
      await until('the second NOAUTH reply', () => a.received().toString().split('\r\n').length > 2);
      a.socket.write(resp('AUTH', 'not-the-password'));
      await a.closed;
      assert.match(a.received().toString(), /-WRONGPASS/);
      assert.doesNotMatch(a.received().toString(), /FULLRESYNC|secret/);
      assert.equal(master.started(), false);

      // Also with a user name, and a password of the right length.
      const b = await open(master.port);
      b.socket.write(resp('AUTH', 'default', 'x'.repeat(master.password.length)));
      await b.closed;
      assert.match(b.received().toString(), /^-WRONGPASS/);
      assert.equal(master.started(), false);
    } finally {
      master.close();
    }
  });

  it('serves the payload once, in the diskless form, to the replica with the password', async () => {
    const body = Buffer.concat([Buffer.from('REDIS0010'), Buffer.alloc(300_000, 7)]);
    const master = await startRdbSyncMaster(
      Readable.from([body.subarray(0, 100_000), body.subarray(100_000)]),
      0,
    );
    try {
      const r = await open(master.port);
      r.socket.write(resp('PING'));
      r.socket.write(
        resp('AUTH', master.password) +
          resp('REPLCONF', 'listening-port', '6380') +
          resp('REPLCONF', 'capa', 'eof', 'capa', 'psync2'),
      );
      r.socket.write(resp('PSYNC', '?', '-1'));
      await master.sent;
      const header =
        /^-NOAUTH[^\r]*\r\n\+OK\r\n\+OK\r\n\+OK\r\n\+FULLRESYNC ([0-9a-f]{40}) 0\r\n\$EOF:([0-9a-f]{40})\r\n/;
      await until('the whole payload', () => {
        const m = header.exec(r.received().toString('latin1'));
        return m !== null && r.received().length >= m[0].length + body.length + 40;
      });
      const all = r.received();
      const m = header.exec(all.toString('latin1'))!;
      const payload = all.subarray(m[0].length);
      assert.ok(payload.subarray(0, body.length).equals(body));
      assert.equal(payload.subarray(body.length).toString(), m[2]);
      assert.ok(master.started());

      const again = await open(master.port);
      again.socket.write(resp('AUTH', master.password) + resp('PSYNC', '?', '-1'));
      await again.closed;
      assert.match(again.received().toString(), /-ERR the backup was served already/);
      r.socket.destroy();
    } finally {
      master.close();
    }
  });

  it('withholds the end mark and closes the link when the input fails', async () => {
    const master = await startRdbSyncMaster(
      Readable.from(
        (async function* () {
          yield Buffer.from('REDIS0010');
          yield Buffer.alloc(50_000, 1);
          await new Promise((r) => setTimeout(r, 50)); // the replica has read what came before
          throw new Error('sha-256 differs');
        })(),
      ),
      0,
    );
    try {
      const r = await open(master.port);
      r.socket.write(
        resp('AUTH', master.password) + resp('REPLCONF', 'capa', 'eof') + resp('PSYNC', '?', '-1'),
      );
      await assert.rejects(master.sent, /sha-256 differs/);
      await r.closed;
      const text = r.received().toString('latin1');
      const mark = /\$EOF:([0-9a-f]{40})\r\n/.exec(text)![1]!;
      assert.equal(text.indexOf(mark), text.lastIndexOf(mark)); // only in the header
      assert.ok(!text.includes('\x01'.repeat(50_000)), 'the last chunk was held back');
    } finally {
      master.close();
    }
  });
});
