import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import type * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { DESCRIPTOR_FILE, PROTO_FILE, describeProto, packageRoot } from '../../shared/proto-descriptor.js';
import { controllerDefinition } from '../../shared/proto.js';

const root = packageRoot();
const protoFile = join(root, PROTO_FILE);

/** What proto-loader made of the .proto at run time before the descriptor was prebuilt. */
function protoLoaderDefinition(): grpc.ServiceDefinition {
  const pkg = protoLoader.loadSync(protoFile, {
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return pkg['envsnap.v1.Controller'] as grpc.ServiceDefinition;
}

/**
 * A message of `type` with every field set (repeated fields twice, a oneof's first member only,
 * nested messages to `depth`), 64-bit integers above 2^32, enums at their last value.
 */
function sample(type: protobuf.Type, depth = 3): Record<string, unknown> {
  const obj: Record<string, unknown> = {};
  const skipped = new Set<string>();
  for (const oneof of type.oneofsArray) for (const name of oneof.oneof.slice(1)) skipped.add(name);
  for (const field of type.fieldsArray) {
    if (skipped.has(field.name)) continue;
    field.resolve();
    const one = (): unknown => {
      if (field.resolvedType instanceof protobuf.Enum) return Object.keys(field.resolvedType.values).at(-1);
      if (field.resolvedType instanceof protobuf.Type)
        return depth > 0 ? sample(field.resolvedType, depth - 1) : {};
      switch (field.type) {
        case 'string':
          return `${field.name} ✓`;
        case 'bool':
          return true;
        case 'bytes':
          return Buffer.from([0, 1, 254, 255]);
        case 'double':
        case 'float':
          return 1.5;
        case 'int64':
        case 'uint64':
        case 'sint64':
        case 'fixed64':
        case 'sfixed64':
          return 2 ** 40 + 3;
        default:
          return 7;
      }
    };
    if (field.map) obj[field.name] = { a: one(), b: one() };
    else obj[field.name] = field.repeated ? [one(), one()] : one();
  }
  return obj;
}

describe('wire definition (prebuilt descriptor)', () => {
  it('the descriptor the build wrote matches proto/ as it is now', () => {
    const built: unknown = JSON.parse(readFileSync(join(root, DESCRIPTOR_FILE), 'utf8'));
    assert.deepEqual(built, JSON.parse(JSON.stringify(describeProto(protoFile))), 'run npm run build');
  });

  it('defines the same methods as proto-loader: paths, streaming, names', () => {
    const ours = controllerDefinition();
    const theirs = protoLoaderDefinition();
    assert.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort());
    for (const [name, m] of Object.entries(theirs)) {
      const o = ours[name]!;
      assert.deepEqual(
        [o.path, o.requestStream, o.responseStream, o.originalName],
        [m.path, m.requestStream, m.responseStream, m.originalName],
        name,
      );
    }
  });

  it('encodes and decodes every message as proto-loader does, full and empty', () => {
    const ours = controllerDefinition();
    const theirs = protoLoaderDefinition();
    const types = protobuf.Root.fromJSON(describeProto(protoFile));
    types.resolveAll();
    const service = types.lookupService('envsnap.v1.Controller');
    for (const method of service.methodsArray) {
      const o = ours[method.name]!;
      const t = theirs[method.name]!;
      for (const [side, type] of [
        ['request', method.resolvedRequestType!],
        ['response', method.resolvedResponseType!],
      ] as const) {
        for (const value of [sample(type), {}]) {
          const label = `${method.name} ${side} ${type.name} ${Object.keys(value).length ? 'full' : 'empty'}`;
          const [serialize, deserialize, theirSerialize, theirDeserialize] =
            side === 'request'
              ? [o.requestSerialize, o.requestDeserialize, t.requestSerialize, t.requestDeserialize]
              : [o.responseSerialize, o.responseDeserialize, t.responseSerialize, t.responseDeserialize];
          const bytes = serialize(value);
          assert.deepEqual(bytes, theirSerialize(value), label);
          assert.deepEqual(deserialize(bytes), theirDeserialize(bytes), label);
        }
      }
    }
  });
});
