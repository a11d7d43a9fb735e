/**
 * The RDB checksum check (agent/engines/redis-rdb-checksum.ts): Redis's CRC-64 check value, and a
 * pass-through that ends only when the stored checksum matches, whatever the chunking. Real RDBs
 * written by redis-server are checked in test/integration/engines.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import {
  crc64Hex,
  crc64Update,
  rdbChecksumCheck,
  type Crc64,
} from '../../agent/engines/redis-rdb-checksum.js';
import { ArtifactCorruptError } from '../../shared/errors.js';

/** An RDB-like buffer: `body` and its CRC-64, little-endian. */
function withChecksum(body: Buffer): Buffer {
  const crc: Crc64 = [0, 0];
  crc64Update(crc, body);
  const sum = Buffer.alloc(8);
  sum.writeBigUInt64LE(BigInt(`0x${crc64Hex(crc)}`));
  return Buffer.concat([body, sum]);
}

async function run(data: Buffer, chunk: number, version = 10): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) parts.push(data.subarray(i, i + chunk));
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(parts),
    rdbChecksumCheck(version, 'dump.rdb'),
    new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

describe('redis rdb checksum', () => {
  it('gives Redis\'s check value (crc64.c: "123456789" is e9c6d914c4b8d9ca), in one piece or many', () => {
    const whole: Crc64 = [0, 0];
    crc64Update(whole, Buffer.from('123456789'));
    assert.equal(crc64Hex(whole), 'e9c6d914c4b8d9ca');
    const pieces: Crc64 = [0, 0];
    for (const c of '123456789') crc64Update(pieces, Buffer.from(c));
    assert.equal(crc64Hex(pieces), 'e9c6d914c4b8d9ca');
  });

  it('passes every byte on and ends when the checksum matches, whatever the chunking', async () => {
    const rdb = withChecksum(Buffer.concat([Buffer.from('REDIS0010'), randomBytes(100_003)]));
    for (const chunk of [1, 3, 7, 8, 9, 4096, 65536, rdb.length])
      assert.ok((await run(rdb, chunk)).equals(rdb));
  });

  it('fails at the end, with ArtifactCorruptError, when one byte differs', async () => {
    const rdb = withChecksum(Buffer.concat([Buffer.from('REDIS0010'), randomBytes(50_000)]));
    rdb.writeUInt8(rdb.readUInt8(20_000) ^ 0x01, 20_000);
    for (const chunk of [5, 65536])
      await assert.rejects(
        run(rdb, chunk),
        (err: unknown) => err instanceof ArtifactCorruptError && /checksum/.test(err.message),
      );
  });

  it('accepts a stored 0 (rdbchecksum no) and format versions before 5 (no checksum)', async () => {
    const body = Buffer.concat([Buffer.from('REDIS0010'), randomBytes(1000)]);
    await run(Buffer.concat([body, Buffer.alloc(8)]), 100);
    await run(Buffer.concat([Buffer.from('REDIS0004'), randomBytes(1000)]), 100, 4);
  });
});
