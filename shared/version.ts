/**
 * The envsnap version, from package.json; on its own so that `envsnap --help` and `--version`
 * need not load gRPC and the proto file (shared/proto.ts re-exports it).
 */
export const VERSION = '0.1.0';
