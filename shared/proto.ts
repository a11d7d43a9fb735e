import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
// The light build: reflection and codecs without the .proto parser, which only the build step needs.
import protobuf from 'protobufjs/light.js';

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

/** Full name of the one service. */
const SERVICE = 'envsnap.v1.Controller';

/**
 * How messages are turned into objects: camelCase fields (from the descriptor), enums as their
 * names, 64-bit integers as numbers, unset fields as their defaults (`[]`, `''`, `0`, `null` for a
 * message), the name of a oneof's set field in a property named after the oneof. The options that
 * `@grpc/proto-loader` took before (see test/unit/proto.test.ts, which compares both).
 */
const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, enums: String, defaults: true, oneofs: true };

/** Reads the descriptor `npm run build` generated from proto/ (proto-build.ts). */
function readDescriptor(): protobuf.INamespace {
  const file = new URL('../proto/envsnap.v1.json', import.meta.url);
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as protobuf.INamespace;
  } catch (err) {
    throw new Error(`cannot read the wire descriptor ${file.pathname} (hint: run npm run build)`, {
      cause: err,
    });
  }
}

function serializer(type: protobuf.Type): grpc.serialize<object> {
  return (obj) => {
    if (Array.isArray(obj))
      throw new Error(
        `Failed to serialize message: expected object with ${type.name} structure, got array instead`,
      );
    // protobufjs writes into a Buffer under Node (its BufferWriter); a view, never a copy of a
    // 1 MiB artifact chunk, should it hand back a plain Uint8Array.
    const bytes = type.encode(type.fromObject(obj)).finish();
    return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(type: protobuf.Type): grpc.deserialize<object> {
  return (buf) => type.toObject(type.decode(buf), TO_OBJECT);
}

/**
 * The service definition grpc-js needs (paths, streaming, codecs, the camelCase method names),
 * built the way `@grpc/proto-loader` builds it (build/src/index.js, createMethodDefinition) less
 * the reflection descriptors nothing here reads, from the prebuilt JSON descriptor: no .proto
 * parsing at run time.
 *
 * @throws Error when the descriptor is missing (not built) or does not define the service.
 */
export function controllerDefinition(): grpc.ServiceDefinition {
  const root = protobuf.Root.fromJSON(readDescriptor());
  root.resolveAll();
  const service = root.lookupService(SERVICE);
  const def: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const m of service.methodsArray) {
    const req = m.resolvedRequestType!;
    const res = m.resolvedResponseType!;
    def[m.name] = {
      path: `/${SERVICE}/${m.name}`,
      requestStream: Boolean(m.requestStream),
      responseStream: Boolean(m.responseStream),
      requestSerialize: serializer(req),
      requestDeserialize: deserializer(req),
      responseSerialize: serializer(res),
      responseDeserialize: deserializer(res),
      // proto-loader: lodash.camelcase of the method name; every method here is plain PascalCase.
      originalName: m.name.charAt(0).toLowerCase() + m.name.slice(1),
    };
  }
  return def;
}

type ServiceCtor = grpc.ServiceClientConstructor;

let cached: ServiceCtor | undefined;

/** The `envsnap.v1.Controller` service definition and client constructor (built once per process). */
export function controllerService(): ServiceCtor {
  cached ??= grpc.makeGenericClientConstructor(controllerDefinition(), 'Controller');
  return cached;
}

export { VERSION } from './version.js';
