/**
 * The agent as a Redis primary for one full sync: it answers a replica's handshake on a loopback
 * port and sends it the backup's RDB bytes as the sync's payload, so that a local target loads the
 * backup natively (a replica loads its primary's RDB at run time) without a temporary server that
 * loads the RDB first and writes a new one for the target.
 *
 * The replica's side, as Redis 7.0 speaks it (src/replication.c, `syncWithMaster`,
 * `readSyncBulkPayload`): it sends `PING` and waits for the reply (`+PONG`, or an error such as
 * `-NOAUTH`, which it accepts as "the primary wants a password"); then, pipelined, `AUTH
 * [<user>] <masterauth>`, `REPLCONF listening-port <port>`, optionally `REPLCONF ip-address`, and
 * `REPLCONF capa eof capa psync2`, reading one reply for each (only the `AUTH` reply must be
 * `+OK`); then `PSYNC <replid> <offset>` (`PSYNC ? -1` when it has no history), to which a primary
 * answers `+FULLRESYNC <replid> <offset>` for a full sync. The payload follows: an empty line is a
 * keep-alive; then either `$<length>\r\n` and that many bytes, or, for a replica that declared
 * `capa eof`, `$EOF:<40 bytes>\r\n`, the bytes, and the same 40 bytes as the end mark. With
 * `repl-diskless-load disabled` (the default) the replica writes the payload to a temporary file,
 * and only once it is complete flushes its data and loads the file; a connection lost before the
 * end mark (or the announced length) aborts the transfer and leaves its data as it was.
 *
 * Here: only a client that authenticates with the random password set as the target's
 * `masterauth` gets anything; any other command before that is refused with `-NOAUTH`, a wrong
 * password with `-WRONGPASS` and the connection closed; the payload is served once. The input is
 * written with backpressure and its last chunk held back: the end mark (or the last bytes of the
 * `$<length>` form) goes out only after the input ended without error, which for a restore means
 * after the stored artifact matched its manifest's size and SHA-256 (agent/artifact-pipelines.ts,
 * `downloadAndApply`). On any error the socket is destroyed before that, so the replica aborts.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import type { Readable } from 'node:stream';

import { ToolFailedError } from '../../shared/errors.js';

/** Bytes of a diskless payload's end mark (Redis: `RDB_EOF_MARK_SIZE`, the length of a run id). */
const EOF_MARK_BYTES = 40;

/** A command line longer than this before the payload starts is a protocol error (Redis: 64 KiB inline). */
const MAX_COMMAND_BYTES = 64 * 1024;

/** The agent's side of one full sync (see the file comment). */
export interface RdbSyncMaster {
  /** The loopback port it listens on. */
  port: number;
  /** The password the replica must send (`masterauth`): 48 random hex digits. */
  password: string;
  /** Whether a replica authenticated and was answered `+FULLRESYNC` (the payload is on its way). */
  started(): boolean;
  /**
   * Resolves once the whole payload, end mark included, was handed to the socket and the replica
   * keeps the connection open; rejects with the input's error, or ToolFailedError when the replica
   * closed the connection first or did not declare a form the payload can be sent in.
   */
  sent: Promise<void>;
  /**
   * Rejects with ToolFailedError when the replica's connection closes after the payload started
   * (before {@link close}): it aborted the transfer or failed to load it. Never resolves.
   */
  lost: Promise<never>;
  /**
   * Stops listening and destroys every connection; destroys the input too once the payload
   * started, else leaves it unread for another use. Safe to call twice.
   */
  close(): void;
}

/**
 * Listens on 127.0.0.1 (a free port) and serves `payload` (the raw RDB bytes) to the first
 * replica that authenticates with the returned password and asks `PSYNC`.
 *
 * @param rawBytes the payload's exact length, for a replica without `capa eof` (0: not known; such
 *   a replica is then refused).
 */
export async function startRdbSyncMaster(payload: Readable, rawBytes: number): Promise<RdbSyncMaster> {
  const password = randomBytes(24).toString('hex');
  const expected = Buffer.from(password);
  const sockets = new Set<Socket>();
  let replica: Socket | undefined;
  let closed = false;
  let payloadDone = false;
  let settleSent: { resolve: () => void; reject: (err: Error) => void } | undefined;
  const sent = new Promise<void>((resolve, reject) => (settleSent = { resolve, reject }));
  sent.catch(() => {});
  let rejectLost: (err: Error) => void = () => {};
  const lost = new Promise<never>((_resolve, reject) => (rejectLost = reject));
  lost.catch(() => {});

  const fail = (err: Error): void => {
    replica?.destroy(); // before the end mark: the replica aborts the transfer
    payload.destroy();
    settleSent?.reject(err);
    rejectLost(err);
  };

  const stream = async (socket: Socket, eof: boolean): Promise<void> => {
    const mark = eof ? randomBytes(EOF_MARK_BYTES / 2).toString('hex') : '';
    socket.write(eof ? `$EOF:${mark}\r\n` : `$${rawBytes}\r\n`);
    const write = async (chunk: Buffer): Promise<void> => {
      if (socket.write(chunk)) return;
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          socket.off('close', onClose);
          resolve();
        };
        const onClose = (): void => {
          socket.off('drain', onDrain);
          reject(
            new ToolFailedError(
              'redis-server',
              null,
              null,
              'the target closed the replication link during the transfer',
            ),
          );
        };
        socket.once('drain', onDrain);
        socket.once('close', onClose);
      });
    };
    // The last chunk is held back until the input ended without error (see the file comment).
    let held: Buffer | undefined;
    let total = 0;
    for await (const chunk of payload as AsyncIterable<Buffer>) {
      if (socket.destroyed)
        throw new ToolFailedError(
          'redis-server',
          null,
          null,
          'the target closed the replication link during the transfer',
        );
      if (held) await write(held);
      held = chunk;
      total += chunk.length;
    }
    if (!eof && total !== rawBytes) {
      throw new ToolFailedError(
        'redis-server',
        null,
        null,
        `the rdb has ${total} bytes, not the ${rawBytes} recorded`,
      );
    }
    if (held) await write(held);
    if (eof) await write(Buffer.from(mark));
  };

  const onConnection = (socket: Socket): void => {
    if (closed) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on('error', () => {}); // a reset shows as 'close'
    // The handshake's replies are small writes the replica waits for: without this, Nagle's
    // algorithm holds one back for the replica's delayed ACK (40 ms per restore, seen in the
    // target's log between "Master replied to PING" and its PSYNC).
    socket.setNoDelay(true);
    let authenticated = false;
    let capaEof = false;
    let buffer: Buffer = Buffer.alloc(0);
    const reply = (text: string): void => {
      socket.write(text + '\r\n');
    };
    const refuse = (text: string): void => {
      socket.end(text + '\r\n');
      socket.removeListener('data', onData);
    };
    const onCommand = (args: string[]): boolean => {
      const name = (args[0] ?? '').toUpperCase();
      if (name === 'AUTH') {
        const given = Buffer.from(args[args.length - 1] ?? '');
        if (args.length >= 2 && given.length === expected.length && timingSafeEqual(given, expected)) {
          authenticated = true;
          reply('+OK');
          return true;
        }
        refuse('-WRONGPASS invalid username-password pair or user is disabled.');
        return false;
      }
      if (!authenticated) {
        // What a Redis with a password answers; a replica takes it as "send AUTH" after PING.
        reply('-NOAUTH Authentication required.');
        return true;
      }
      if (name === 'PING') {
        reply('+PONG');
        return true;
      }
      if (name === 'REPLCONF') {
        for (let i = 1; i + 1 < args.length; i += 2)
          if (args[i]?.toLowerCase() === 'capa' && args[i + 1]?.toLowerCase() === 'eof') capaEof = true;
        reply('+OK');
        return true;
      }
      if (name === 'PSYNC' || name === 'SYNC') {
        if (replica) {
          refuse('-ERR the backup was served already');
          return false;
        }
        if (!capaEof && !(rawBytes > 0)) {
          refuse('-ERR envsnap sends this rdb only to a replica with capa eof');
          fail(
            new ToolFailedError(
              'redis-server',
              null,
              null,
              'the target did not declare capa eof and the rdb size is not known',
            ),
          );
          return false;
        }
        replica = socket;
        const replid = randomBytes(20).toString('hex');
        // SYNC (before PSYNC existed) gets the payload without this line.
        if (name === 'PSYNC') reply(`+FULLRESYNC ${replid} 0`);
        socket.removeListener('data', onData);
        socket.on('data', () => {}); // REPLCONF ACKs after the load: read and dropped
        socket.once('close', () => {
          if (!closed) {
            const err = new ToolFailedError(
              'redis-server',
              null,
              null,
              payloadDone
                ? 'the target closed the replication link before it loaded the backup; see its log'
                : 'the target closed the replication link during the transfer',
            );
            fail(err);
          }
        });
        stream(socket, capaEof).then(
          () => {
            payloadDone = true;
            settleSent?.resolve();
          },
          (err: unknown) => fail(err instanceof Error ? err : new Error(String(err))),
        );
        return false;
      }
      reply(`-ERR unknown command '${name.slice(0, 32).replace(/[^\x20-\x7e]/g, '?')}'`);
      return true;
    };
    const onData = (data: Buffer): void => {
      buffer = buffer.length ? Buffer.concat([buffer, data]) : data;
      for (;;) {
        const parsed = parseCommand(buffer);
        if (parsed === 'error' || (parsed === undefined && buffer.length > MAX_COMMAND_BYTES)) {
          refuse('-ERR Protocol error');
          return;
        }
        if (parsed === undefined) return;
        buffer = buffer.subarray(parsed.used);
        if (parsed.args.length > 0 && !onCommand(parsed.args)) return;
      }
    };
    socket.on('data', onData);
    socket.once('close', () => sockets.delete(socket));
  };

  const server: Server = createServer(onConnection);
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (typeof address === 'object' && address) resolve(address.port);
      else reject(new Error('no port'));
    });
  });
  const onPayloadError = (err: Error): void => fail(err);
  payload.once('error', onPayloadError);
  return {
    port,
    password,
    started: () => replica !== undefined,
    sent,
    lost,
    close: () => {
      if (closed) return;
      closed = true;
      server.close();
      for (const s of sockets) s.destroy();
      if (replica) payload.destroy();
      else payload.off('error', onPayloadError);
      settleSent?.reject(new ToolFailedError('redis-server', null, null, 'the sync was closed'));
    },
  };
}

/**
 * One command from the start of `buf`: a RESP array of bulk strings (`*2\r\n$4\r\nPING\r\n...`),
 * as a replica sends them, or an inline command line. Undefined when incomplete, 'error' when not
 * RESP.
 */
export function parseCommand(buf: Buffer): { args: string[]; used: number } | undefined | 'error' {
  if (buf.length === 0) return undefined;
  const line = (from: number): { text: string; next: number } | undefined => {
    const end = buf.indexOf('\r\n', from);
    return end < 0 ? undefined : { text: buf.toString('latin1', from, end), next: end + 2 };
  };
  if (buf[0] !== 0x2a /* '*' */) {
    const end = buf.indexOf('\n');
    if (end < 0) return undefined;
    const text = buf.toString('latin1', 0, end).replace(/\r$/, '');
    return { args: text.split(' ').filter((w) => w !== ''), used: end + 1 };
  }
  const head = line(0);
  if (!head) return undefined;
  const count = Number(head.text.slice(1));
  if (!Number.isInteger(count) || count < 0 || count > 64) return 'error';
  const args: string[] = [];
  let at = head.next;
  for (let i = 0; i < count; i++) {
    const len = line(at);
    if (!len) return undefined;
    if (!len.text.startsWith('$')) return 'error';
    const n = Number(len.text.slice(1));
    if (!Number.isInteger(n) || n < 0 || n > MAX_COMMAND_BYTES) return 'error';
    if (buf.length < len.next + n + 2) return undefined;
    args.push(buf.toString('latin1', len.next, len.next + n));
    at = len.next + n + 2;
  }
  return { args, used: at };
}
