import * as grpc from '@grpc/grpc-js';
import { parseAddress } from '../../shared/address.js';
import { InvalidArgumentError } from '../../shared/errors.js';
import { describeServiceError } from '../../shared/grpc-errors.js';
import { CHANNEL_OPTIONS, controllerService } from '../../shared/proto.js';
import type { WireActivityEvent } from '../../shared/wire.js';

/** A method of the generated client, before it is cast to its real signature. */
type Method = (...args: never[]) => unknown;

/** Global CLI options. */
export interface GlobalOptions {
  controller?: string;
  config?: string;
  quiet?: boolean;
}

/** Default controller address when nothing else names one. */
export const DEFAULT_CONTROLLER = '127.0.0.1:7700';

/**
 * The controller address: `--controller`, else `ENVSNAP_CONTROLLER`, else the
 * config file (`--config` or `ENVSNAP_CONFIG`), else 127.0.0.1:7700.
 *
 * @throws InvalidArgumentError for a malformed address.
 */
export async function resolveController(opts: GlobalOptions): Promise<string> {
  const file = opts.config ?? process.env.ENVSNAP_CONFIG;
  const addr =
    opts.controller ??
    process.env.ENVSNAP_CONTROLLER ??
    // The config schema (zod, yaml) is loaded only when a file is read.
    (file ? await (await import('../../shared/config.js')).cliControllerFromFile(file) : undefined) ??
    DEFAULT_CONTROLLER;
  if (!parseAddress(addr))
    throw new InvalidArgumentError(`invalid controller address "${addr}"`, { hint: 'use host:port' });
  return addr;
}

/** A thin promise wrapper over the controller's gRPC client, with errors turned into messages. */
export class ControllerClient {
  private readonly client: grpc.Client;
  constructor(readonly address: string) {
    const Client = controllerService();
    this.client = new Client(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  }

  /** Calls a unary RPC; rejects with an Error whose message is ready to print. */
  call<Res>(method: string, req: object, timeoutMs = 30_000): Promise<Res> {
    return new Promise((resolve, reject) => {
      const fn = (this.client as unknown as Record<string, Method>)[method]!.bind(this.client) as (
        req: object,
        opts: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null, res: Res) => void,
      ) => void;
      fn(req, { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(new Error(describeServiceError(err, this.address))) : resolve(res),
      );
    });
  }

  /** Follows an activity's events until it finishes. */
  async *watch(activityId: string): AsyncGenerator<WireActivityEvent> {
    const fn = (this.client as unknown as Record<string, Method>).WatchActivity!.bind(this.client) as (
      req: object,
    ) => grpc.ClientReadableStream<WireActivityEvent>;
    const stream = fn({ activityId });
    try {
      for await (const e of stream as AsyncIterable<WireActivityEvent>) yield e;
    } catch (err) {
      throw new Error(describeServiceError(err, this.address), { cause: err });
    } finally {
      stream.cancel();
    }
  }

  close(): void {
    this.client.close();
  }
}
