import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** Size of one artifact chunk on the wire, bytes; far under grpc-js's 4 MiB message limit. */
export const CHUNK_BYTES = 1024 * 1024;

/** Channel options shared by both ends: keepalive to notice a dead peer on an idle stream. */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.max_pings_without_data': 0,
  'grpc.max_receive_message_length': 8 * 1024 * 1024,
};

function findProtoFile(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'proto', 'envsnap', 'v1', 'envsnap.proto');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new Error('proto/envsnap/v1/envsnap.proto not found beside the installed envsnap');
}

let cached: grpc.GrpcObject | undefined;

/** Loads the envsnap.v1 package (camelCase fields, enums as strings, longs as numbers). */
export function loadEnvsnapPackage(): grpc.GrpcObject {
  if (!cached) {
    const def = protoLoader.loadSync(findProtoFile(), {
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    cached = grpc.loadPackageDefinition(def);
  }
  return cached;
}

type ServiceCtor = grpc.ServiceClientConstructor;

/** The `envsnap.v1.Controller` service definition and client constructor. */
export function controllerService(): ServiceCtor {
  const pkg = loadEnvsnapPackage() as unknown as { envsnap: { v1: { Controller: ServiceCtor } } };
  return pkg.envsnap.v1.Controller;
}

export { VERSION } from './version.js';
