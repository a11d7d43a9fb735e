/**
 * The checksum an RDB file ends with, checked while the file streams past: CRC-64 with the Jones
 * polynomial (reflected, initial value 0, no final xor; check value of "123456789":
 * e9c6d914c4b8d9ca) over every byte before the last 8, which hold it little-endian (Redis source,
 * crc64.c and rdb.c `rdbSaveRio`; RDB format 5 and later). A stored 0 means the server had
 * `rdbchecksum no`: nothing to check. A loading Redis that finds a wrong checksum, like any
 * corrupt RDB, exits (rdb.c, `rdbReportCorruptRDB`); the agent checks it before it lets a target
 * see the end of a transfer (agent/engines/redis.ts).
 */
import { Transform, type TransformCallback } from 'node:stream';

import { ArtifactCorruptError } from '../../shared/errors.js';

/** The Jones polynomial, reflected, as two 32-bit halves. */
const POLY_HI = 0x95ac9329;
const POLY_LO = 0xac4bc9b5;

/** Slicing-by-8 tables (high and low 32 bits): table k gives the CRC of a byte followed by k zero bytes. */
const TABLES_HI = Array.from({ length: 8 }, () => new Uint32Array(256));
const TABLES_LO = Array.from({ length: 8 }, () => new Uint32Array(256));
for (let n = 0; n < 256; n++) {
  let hi = 0;
  let lo = n;
  for (let k = 0; k < 8; k++) {
    const bit = lo & 1;
    lo = ((lo >>> 1) | (hi << 31)) >>> 0;
    hi >>>= 1;
    if (bit) {
      hi = (hi ^ POLY_HI) >>> 0;
      lo = (lo ^ POLY_LO) >>> 0;
    }
  }
  TABLES_HI[0]![n] = hi;
  TABLES_LO[0]![n] = lo;
}
for (let k = 1; k < 8; k++) {
  for (let n = 0; n < 256; n++) {
    const hi = TABLES_HI[k - 1]![n]!;
    const lo = TABLES_LO[k - 1]![n]!;
    const i = lo & 0xff;
    TABLES_LO[k]![n] = (((lo >>> 8) | (hi << 24)) ^ TABLES_LO[0]![i]!) >>> 0;
    TABLES_HI[k]![n] = ((hi >>> 8) ^ TABLES_HI[0]![i]!) >>> 0;
  }
}

/** A running CRC-64 (see the file comment): `[high 32 bits, low 32 bits]`, updated in place. */
export type Crc64 = [number, number];

/** Adds `buf` to the running CRC `state`. */
export function crc64Update(state: Crc64, buf: Uint8Array): void {
  const [h0, h1, h2, h3, h4, h5, h6, h7] = TABLES_HI as [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
  const [l0, l1, l2, l3, l4, l5, l6, l7] = TABLES_LO as [
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
    Uint32Array,
  ];
  let hi = state[0];
  let lo = state[1];
  const n = buf.length;
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const a = (lo ^ (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24))) >>> 0;
    const b = (hi ^ (buf[i + 4]! | (buf[i + 5]! << 8) | (buf[i + 6]! << 16) | (buf[i + 7]! << 24))) >>> 0;
    lo =
      l7[a & 0xff]! ^
      l6[(a >>> 8) & 0xff]! ^
      l5[(a >>> 16) & 0xff]! ^
      l4[a >>> 24]! ^
      l3[b & 0xff]! ^
      l2[(b >>> 8) & 0xff]! ^
      l1[(b >>> 16) & 0xff]! ^
      l0[b >>> 24]!;
    hi =
      h7[a & 0xff]! ^
      h6[(a >>> 8) & 0xff]! ^
      h5[(a >>> 16) & 0xff]! ^
      h4[a >>> 24]! ^
      h3[b & 0xff]! ^
      h2[(b >>> 8) & 0xff]! ^
      h1[(b >>> 16) & 0xff]! ^
      h0[b >>> 24]!;
  }
  for (; i < n; i++) {
    const x = (lo ^ buf[i]!) & 0xff;
    lo = ((lo >>> 8) | (hi << 24)) ^ l0[x]!;
    hi = (hi >>> 8) ^ h0[x]!;
  }
  state[0] = hi >>> 0;
  state[1] = lo >>> 0;
}

/** The CRC as 16 hex digits. */
export function crc64Hex(state: Crc64): string {
  return state[0].toString(16).padStart(8, '0') + state[1].toString(16).padStart(8, '0');
}

/**
 * A pass-through that fails at the end, instead of ending, when the RDB's stored checksum differs
 * from its bytes' (ArtifactCorruptError). Every byte is passed on as it arrives; the verdict comes
 * with the end of the stream, so a reader that withholds the end of what it sends until this
 * stream ended (the agent's sync, which sends the end mark last) never completes a bad RDB.
 *
 * @param rdbVersion the format version in the RDB's header: before 5 there is no checksum.
 */
export function rdbChecksumCheck(rdbVersion: number, name: string): Transform {
  const crc: Crc64 = [0, 0];
  // The last 8 bytes seen so far (the stored checksum, once the stream ended), not yet in the CRC.
  let tail = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      if (chunk.length >= 8) {
        crc64Update(crc, tail);
        crc64Update(crc, chunk.subarray(0, chunk.length - 8));
        tail = Buffer.from(chunk.subarray(chunk.length - 8));
      } else {
        const joined = Buffer.concat([tail, chunk]);
        crc64Update(crc, joined.subarray(0, Math.max(0, joined.length - 8)));
        tail = joined.subarray(Math.max(0, joined.length - 8));
      }
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      if (rdbVersion < 5) return callback();
      if (tail.length < 8) return callback(new ArtifactCorruptError(`${name}: the rdb is too short`));
      const stored = tail.readBigUInt64LE(0);
      const computed = (BigInt(crc[0]) << 32n) | BigInt(crc[1]);
      if (stored !== 0n && stored !== computed) {
        return callback(
          new ArtifactCorruptError(
            `${name}: the rdb's checksum is ${stored.toString(16).padStart(16, '0')}, its bytes give ${crc64Hex(crc)}`,
            { hint: 'the backup was corrupt when it was taken; restore another backup' },
          ),
        );
      }
      callback();
    },
  });
}
