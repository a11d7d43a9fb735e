/**
 * The build-time half of the wire definition: `proto/envsnap/v1/envsnap.proto` (the one source of
 * truth) parsed once by protobufjs into its JSON descriptor, which `npm run build` writes to
 * `dist/proto/envsnap.v1.json` (see proto-build.ts) and `proto.ts` reads at run time, so that no
 * process parses the .proto text on start.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

/** Path of the .proto file, relative to the package root. */
export const PROTO_FILE = join('proto', 'envsnap', 'v1', 'envsnap.proto');

/** Path of the generated descriptor, relative to the package root. */
export const DESCRIPTOR_FILE = join('dist', 'proto', 'envsnap.v1.json');

/**
 * The package root: the nearest directory up from this module that holds `proto/`.
 *
 * @throws Error when no parent directory (six levels up) holds the .proto file.
 */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, PROTO_FILE))) return dir;
    dir = dirname(dir);
  }
  throw new Error(`${PROTO_FILE} not found beside the installed envsnap`);
}

/**
 * Parses a .proto file the way `@grpc/proto-loader` did with `keepCase: false` (field and oneof
 * names in camelCase; the wire format uses field numbers, so names do not reach it) and returns
 * protobufjs's JSON descriptor of it (`Root#toJSON`, the input of `Root.fromJSON`).
 *
 * @param file path of the .proto file; its imports are resolved beside it.
 * @throws Error from protobufjs for a syntax error or an unresolvable type.
 */
export function describeProto(file: string): protobuf.INamespace {
  const root = new protobuf.Root().loadSync(file, { keepCase: false });
  root.resolveAll();
  return root.toJSON();
}
