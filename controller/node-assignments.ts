import type { EnvironmentConfig } from '../shared/config.js';
import { VERSION } from '../shared/version.js';
import type { WireControllerInfo } from '../shared/wire.js';
import { serviceSpec } from './wire-specs.js';

/**
 * What one node serves: the services of active environments whose `nodes` list it (any of them
 * may be asked to dump, so all count) and the mounts whose `node` it is, in config order.
 * Inactive environments are left out: they are never backed up or restored.
 *
 * Connections are converted as for tasks (the same fields `jobs.ts` sends): names of password
 * files and variables, never a secret.
 */
export function nodeAssignments(
  environments: readonly EnvironmentConfig[],
  nodeId: string,
): Pick<WireControllerInfo, 'services' | 'mounts'> {
  const out: Pick<WireControllerInfo, 'services' | 'mounts'> = { services: [], mounts: [] };
  if (nodeId === '') return out;
  for (const env of environments) {
    if (!env.active) continue;
    for (const s of env.services) {
      if (s.nodes.includes(nodeId)) out.services.push({ environment: env.name, service: serviceSpec(s) });
    }
    for (const m of env.mounts) {
      if (m.node === nodeId)
        out.mounts.push({
          environment: env.name,
          mount: { name: m.name, path: m.path, exclude: m.exclude ?? [] },
        });
    }
  }
  return out;
}

/**
 * The answer to `GetInfo`: version, the controller's clock now (ISO 8601 with milliseconds), its
 * default compression, and {@link nodeAssignments} for `nodeId` ("" = none).
 */
export function controllerInfo(
  environments: readonly EnvironmentConfig[],
  defaultCompression: string,
  nodeId: string,
): WireControllerInfo {
  return {
    version: VERSION,
    time: new Date().toISOString(),
    defaultCompression,
    ...nodeAssignments(environments, nodeId),
  };
}
