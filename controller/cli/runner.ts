import type { Command } from 'commander';
import { errorMessage } from '../../shared/errors.js';
import type { ControllerClient, GlobalOptions } from './client.js';

/** Runs a command body with a connected client; sets the exit code and prints errors as `error: …`. */
export type Runner = (
  body: (client: ControllerClient, globals: GlobalOptions) => Promise<number>,
) => Promise<void>;

/** Makes the Runner for a program (it reads the global options at run time). */
export function makeRunner(program: Command): Runner {
  return async (body) => {
    const globals = program.opts<GlobalOptions>();
    let client: ControllerClient | undefined;
    try {
      // Loaded here, not at start-up: gRPC and the proto file are most of the CLI's start-up CPU
      // and `--help` or a bad option needs neither.
      const { ControllerClient, resolveController } = await import('./client.js');
      client = new ControllerClient(await resolveController(globals));
      process.exitCode = await body(client, globals);
    } catch (err) {
      process.stderr.write(`error: ${errorMessage(err)}\n`);
      process.exitCode = 1;
    } finally {
      client?.close();
    }
  };
}
