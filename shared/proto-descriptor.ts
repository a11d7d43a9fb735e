/**
 * Build-time half of `proto.ts`: parses proto/envsnap/v1/envsnap.proto with the full protobufjs
 * (its .proto parser) and writes the result as a protobufjs JSON descriptor beside `proto.js` in
 * dist/, which `proto.ts` loads at run time with protobufjs/light (no parser). Parsing the file and
 * loading the parser cost every CLI command about 30 ms of CPU.
 *
 * `npm run build` runs this file after tsc, so the descriptor is always made from proto/, the one
 * contract; test/unit/proto.test.ts fails when dist/ holds a descriptor that no longer matches it.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

/** File name of the generated descriptor, in the directory of the compiled `proto.js`. */
export const DESCRIPTOR_FILE = 'envsnap.v1.json';

/**
 * The path of proto/envsnap/v1/envsnap.proto, found by walking up from this module (src or dist).
 *
 * @throws Error when no ancestor directory has it.
 */
export function findProtoFile(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'proto', 'envsnap', 'v1', 'envsnap.proto');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new Error('proto/envsnap/v1/envsnap.proto not found beside the installed envsnap');
}

/**
 * Parses the proto file into a protobufjs JSON descriptor (`Root.toJSON()`), field names in
 * camelCase as proto-loader's `keepCase: false` gives them.
 *
 * @param protoFile path of envsnap.proto (default: {@link findProtoFile}).
 * @throws Error when the file does not parse or a type does not resolve.
 */
export function protoDescriptor(protoFile = findProtoFile()): protobuf.INamespace {
  const root = new protobuf.Root();
  root.loadSync(protoFile, { keepCase: false });
  root.resolveAll();
  return root.toJSON();
}

/** Writes the descriptor to `<dir>/envsnap.v1.json` (`dir`: this module's directory) and returns its path. */
export function writeProtoDescriptor(dir = dirname(fileURLToPath(import.meta.url))): string {
  const file = join(dir, DESCRIPTOR_FILE);
  writeFileSync(file, `${JSON.stringify(protoDescriptor())}\n`);
  return file;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.stdout.write(`wrote ${writeProtoDescriptor()}\n`);
}
