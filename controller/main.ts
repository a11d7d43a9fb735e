import { Command } from 'commander';
import { loadControllerConfig } from '../shared/config.js';
import { EnvsnapError, errorMessage } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';
import { VERSION } from '../shared/proto.js';
import { Controller } from './controller.js';

/**
 * `envsnap-controller --config FILE`: runs the controller until SIGTERM or SIGINT.
 * Exits 0 after a clean shutdown; 1 when the config is invalid or start-up fails.
 */
export async function main(argv: string[]): Promise<void> {
  const program = new Command('envsnap-controller')
    .description('envsnap controller: gRPC server, catalog, schedules and retention')
    .version(VERSION)
    .requiredOption('-c, --config <file>', 'YAML config file', process.env.ENVSNAP_CONFIG)
    .parse(argv);
  const logger = createLogger('controller');
  let controller: Controller;
  try {
    const config = await loadControllerConfig(program.opts<{ config: string }>().config);
    controller = new Controller(config, logger);
    await controller.start();
  } catch (err) {
    const msg = errorMessage(err);
    logger.fatal({ code: err instanceof EnvsnapError ? err.code : undefined }, msg);
    process.stderr.write(`envsnap-controller: ${msg}\n`);
    process.exit(1);
  }
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'shutdown requested');
    controller.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGHUP', () => {
    logger.info('reload requested (SIGHUP)');
    void controller.reload();
  });
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}
