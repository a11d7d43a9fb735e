import type { Command } from 'commander';
import { errorMessage } from '../../../shared/errors.js';
import type { GlobalOptions } from '../client.js';
import { parseFormat } from '../output.js';

/**
 * `envsnap doctor [--config FILE] [--format table|json]`: checks the node whose `agent:` section
 * the config file holds. Prints one line per check (ok, warn, FAIL with what to fix) and exits 1
 * when a check failed. See agent/doctor.ts for the node-side checks and doctor-checks.ts for these: the config, the
 * controller (reachable, same version, this node's agent connected), the clocks, and the list of
 * services and mounts the controller assigns to this node (from the file's own `environments`
 * when the controller does not answer).
 */
export function register(program: Command): void {
  program
    .command('doctor')
    .description(
      "Check this node (the config's agent section): dump tools and versions, connections and credentials, " +
        'mounts, work_dir, the controller, clocks',
    )
    .option('--format <format>', 'table or json', 'table')
    .action(async (opts: { format: string }) => {
      try {
        const format = parseFormat(opts.format);
        // The checks load the config schema, gRPC and the agent's code: only when doctor runs.
        const { doctor } = await import('./doctor-checks.js');
        process.exitCode = await doctor(program.opts<GlobalOptions>(), format);
      } catch (err) {
        process.stderr.write(`error: ${errorMessage(err)}\n`);
        process.exitCode = 1;
      }
    });
}
