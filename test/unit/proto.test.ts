import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import * as protoLoader from '@grpc/proto-loader';
import type { MethodDefinition } from '@grpc/grpc-js';
import { DESCRIPTOR_FILE, findProtoFile, protoDescriptor } from '../../shared/proto-descriptor.js';
import { controllerServiceDefinition } from '../../shared/proto.js';

type Method = MethodDefinition<object, object>;

/** What proto-loader, the reference the runtime definition replaces, makes of proto/. */
function referenceDefinition(): Record<string, Method> {
  const pkg = protoLoader.loadSync(findProtoFile(), {
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return pkg['envsnap.v1.Controller'] as unknown as Record<string, Method>;
}

describe('protocol descriptor (shared/proto.ts)', () => {
  it('the descriptor in dist/ is the one proto/ gives now (run npm run build after changing proto/)', async () => {
    const built: unknown = JSON.parse(
      await readFile(new URL(`../../shared/${DESCRIPTOR_FILE}`, import.meta.url), 'utf8'),
    );
    assert.deepEqual(built, JSON.parse(JSON.stringify(protoDescriptor())));
  });

  it('has the methods, paths and stream kinds proto-loader gives', () => {
    const ours = controllerServiceDefinition() as unknown as Record<string, Method>;
    const ref = referenceDefinition();
    assert.deepEqual(Object.keys(ours).sort(), Object.keys(ref).sort());
    for (const [name, m] of Object.entries(ref)) {
      const o = ours[name]!;
      assert.deepEqual(
        [o.path, o.requestStream, o.responseStream, o.originalName],
        [m.path, m.requestStream, m.responseStream, m.originalName],
        name,
      );
    }
  });

  it('encodes and decodes messages as proto-loader does (defaults, oneofs, enums, 64-bit numbers)', () => {
    const ours = controllerServiceDefinition() as unknown as Record<string, Method>;
    const ref = referenceDefinition();
    const samples: Array<[string, 'request' | 'response', object]> = [
      ['ListBackups', 'request', {}],
      ['ListBackups', 'response', {}],
      [
        'GetBackup',
        'response',
        {
          id: '01a232f5216174016477',
          status: 'COMPLETE',
          sizeBytes: 2 ** 40 + 3,
          artifacts: [{ name: 'm/files.tar.zst', sizeBytes: 117, stats: { tree: { files: 1, bytes: 6 } } }],
          copies: ['local'],
        },
      ],
      ['WatchActivity', 'response', { log: { time: 't', level: 'info', message: 'hello' } }],
      ['WatchActivity', 'response', { finished: { id: 'a', state: 'complete' } }],
      ['Connect', 'request', { heartbeat: {} }],
      ['Connect', 'response', { welcome: { controllerVersion: '0.1.0', heartbeatIntervalMs: 1000 } }],
    ];
    for (const [method, side, value] of samples) {
      const o = ours[method]!;
      const r = ref[method]!;
      const [oSer, oDe, rSer, rDe] =
        side === 'request'
          ? [o.requestSerialize, o.requestDeserialize, r.requestSerialize, r.requestDeserialize]
          : [o.responseSerialize, o.responseDeserialize, r.responseSerialize, r.responseDeserialize];
      const bytes = oSer(value);
      assert.deepEqual(Buffer.from(bytes), Buffer.from(rSer(value)), `${method} ${side} bytes`);
      assert.deepEqual(oDe(bytes), rDe(bytes), `${method} ${side} object`);
    }
  });
});
