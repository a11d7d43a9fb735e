/**
 * Build step (`npm run build`, after tsc): writes the JSON descriptor of the .proto file to
 * `dist/proto/envsnap.v1.json`, which `proto.ts` loads at run time. Run as
 * `node dist/shared/proto-build.js`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DESCRIPTOR_FILE, PROTO_FILE, describeProto, packageRoot } from './proto-descriptor.js';

const root = packageRoot();
const out = join(root, DESCRIPTOR_FILE);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify(describeProto(join(root, PROTO_FILE)))}\n`);
