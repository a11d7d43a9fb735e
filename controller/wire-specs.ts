import type { MountConfig, ServiceConfig } from '../shared/config.js';
import type { WireConnection, WireMountSpec, WireServiceSpec } from '../shared/wire.js';

/**
 * Config entries as the agents receive them in tasks. Secrets are never sent:
 * only the names of the files or variables that hold them (the agent reads
 * them on its own node).
 */
export function connectionSpec(c: ServiceConfig['connection']): WireConnection {
  return {
    host: c.host ?? '',
    port: c.port ?? 0,
    socket: c.socket ?? '',
    user: c.user ?? '',
    passwordFile: c.password_file ?? '',
    passwordEnv: c.password_env ?? '',
  };
}

/** A service as a task carries it; `databases` empty means every non-system database. */
export function serviceSpec(s: ServiceConfig): WireServiceSpec {
  return {
    name: s.name,
    kind: s.kind,
    connection: connectionSpec(s.connection),
    databases: s.databases ?? [],
  };
}

/** A mount as a task carries it. */
export function mountSpec(m: MountConfig): WireMountSpec {
  return { name: m.name, path: m.path, exclude: m.exclude ?? [] };
}
