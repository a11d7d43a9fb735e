import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
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

/**
 * How messages are turned into plain objects, as @grpc/proto-loader's options of the same names:
 * camelCase fields (the descriptor is made with `keepCase: false`), 64-bit integers as numbers,
 * enums as their names, unset fields as their defaults (`[]`, `''`, 0), a oneof's set member named
 * in a virtual field of the oneof's name.
 */
export const CONVERSION: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** The controller service's full name in the proto file. */
const SERVICE = 'envsnap.v1.Controller';

/** The descriptor `npm run build` writes from proto/ (shared/proto-descriptor.ts). */
const DESCRIPTOR_URL = new URL('./envsnap.v1.json', import.meta.url);

function serializer(type: protobuf.Type): grpc.serialize<object> {
  return (value) => {
    if (Array.isArray(value)) throw new Error(`cannot serialize an array as a ${type.name} message`);
    return type.encode(type.fromObject(value)).finish() as Buffer;
  };
}

function deserializer(type: protobuf.Type): grpc.deserialize<object> {
  return (bytes) => type.toObject(type.decode(bytes), CONVERSION);
}

/**
 * The `envsnap.v1.Controller` service definition, made as @grpc/proto-loader makes it (same paths,
 * serializers and conversion; test/unit/proto.test.ts compares the two) from the prebuilt JSON
 * descriptor with protobufjs/light: no .proto parsing and no parser loaded at run time.
 *
 * @throws Error when the descriptor is missing (run `npm run build`) or lacks the service.
 */
export function controllerServiceDefinition(): grpc.ServiceDefinition {
  let json: protobuf.INamespace;
  try {
    json = JSON.parse(readFileSync(DESCRIPTOR_URL, 'utf8')) as protobuf.INamespace;
  } catch (err) {
    throw new Error(
      `cannot read the protocol descriptor ${DESCRIPTOR_URL.pathname} (hint: run npm run build)`,
      {
        cause: err,
      },
    );
  }
  const service = protobuf.Root.fromJSON(json).lookupService(SERVICE);
  const def: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const method of service.methodsArray) {
    method.resolve();
    const req = method.resolvedRequestType!;
    const res = method.resolvedResponseType!;
    def[method.name] = {
      path: `/${SERVICE}/${method.name}`,
      requestStream: Boolean(method.requestStream),
      responseStream: Boolean(method.responseStream),
      requestSerialize: serializer(req),
      requestDeserialize: deserializer(req),
      responseSerialize: serializer(res),
      responseDeserialize: deserializer(res),
      originalName: method.name.charAt(0).toLowerCase() + method.name.slice(1),
    };
  }
  return def;
}

type ServiceCtor = grpc.ServiceClientConstructor;

let cached: ServiceCtor | undefined;

/** The `envsnap.v1.Controller` service definition and client constructor (made once per process). */
export function controllerService(): ServiceCtor {
  cached ??= grpc.makeClientConstructor(controllerServiceDefinition(), 'Controller');
  return cached;
}

export { VERSION } from './version.js';
