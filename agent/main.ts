import { Command } from 'commander';
import { loadAgentConfig } from '../shared/config.js';
import { EnvsnapError, errorMessage } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import { VERSION } from '../shared/proto.js';
import { Agent } from './agent.js';

/**
 * `envsnap-agent --config FILE`: runs the agent until SIGTERM or SIGINT.
 * Exits 0 after a clean shutdown; 1 when the config is invalid or start-up fails.
 */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('envsnap-agent')
    .description('envsnap agent: dumps, archives and restores the services and mounts of this node')
    .version(VERSION)
    .requiredOption('-c, --config <file>', 'YAML config file', process.env.ENVSNAP_CONFIG)
    .parse(argv);
  const logger = createLogger('agent');
  let agent: Agent;
  try {
    const config = await loadAgentConfig(program.opts<{ config: string }>().config);
    agent = new Agent(config, logger.child({ node: config.nodeId }));
    await agent.start();
  } catch (err) {
    const msg = errorMessage(err);
    logger.fatal({ code: err instanceof EnvsnapError ? err.code : undefined }, msg);
    process.stderr.write(`envsnap-agent: ${msg}\n`);
    process.exit(1);
  }
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'shutdown requested');
    agent.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGHUP', () => {
    logger.info('reload requested (SIGHUP)');
    void agent.reload();
  });
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}
