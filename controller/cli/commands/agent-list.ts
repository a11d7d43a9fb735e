import type { Command } from 'commander';
import type { WireAgentInfo } from '../../../shared/wire.js';
import type { Runner } from '../runner.js';
import { parseFormat, printList } from '../output.js';

/** `envsnap agent:list`: every agent the controller has seen. */
export function register(program: Command, run: Runner): void {
  program
    .command('agent:list')
    .alias('agents')
    .description('List agents: node, connected, last seen, version')
    .option('--format <format>', 'table or json', 'table')
    .action((opts: { format: string }) =>
      run(async (client) => {
        const format = parseFormat(opts.format);
        const res = await client.call<{ agents: WireAgentInfo[] }>('ListAgents', {});
        const items = res.agents.map((a) => ({
          node_id: a.nodeId,
          connected: a.connected,
          last_seen: a.lastSeen,
          version: a.version,
          hostname: a.hostname,
          running_tasks: a.runningTasks,
        }));
        printList(format, items, [
          ['Node', (a) => a.node_id],
          ['Connected', (a) => String(a.connected)],
          ['Last seen', (a) => a.last_seen],
          ['Version', (a) => a.version],
          ['Host', (a) => a.hostname],
          ['Tasks', (a) => String(a.running_tasks)],
        ]);
        return 0;
      }),
    );
}
