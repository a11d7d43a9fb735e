import { readFile } from 'node:fs/promises';
import { SecretUnavailableError } from '../shared/errors.js';
import type { WireConnection } from '../shared/wire.js';
import type { ResolvedConnection } from './engines/engine.js';

/**
 * Resolves a service connection sent by the controller into what the engine
 * needs, reading the secret on this node: `password_file` (first line, trailing
 * newline removed) or the `password_env` variable of the agent's environment.
 * The controller never sees or sends the secret itself.
 *
 * @throws SecretUnavailableError naming the file or variable (never its content).
 */
export async function resolveConnection(c: WireConnection): Promise<ResolvedConnection> {
  const out: ResolvedConnection = {};
  if (c.host) out.host = c.host;
  if (c.port) out.port = c.port;
  if (c.socket) out.socket = c.socket;
  if (c.user) out.user = c.user;
  if (c.passwordFile) {
    try {
      out.password = (await readFile(c.passwordFile, 'utf8')).split(/\r?\n/)[0];
    } catch (err) {
      throw new SecretUnavailableError(
        `cannot read password_file ${c.passwordFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
        { hint: "the file must exist on the agent's node and be readable by the agent's user" },
      );
    }
  } else if (c.passwordEnv) {
    const v = process.env[c.passwordEnv];
    if (v === undefined) {
      throw new SecretUnavailableError(
        `environment variable ${c.passwordEnv} (password_env) is not set for the agent`,
      );
    }
    out.password = v;
  }
  return out;
}
