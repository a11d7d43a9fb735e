import type { Server as HttpServer } from 'node:http';
import { errorMessage } from './errors.js';
import type { Logger } from './logger.js';

/** One named step of a shutdown. */
export type ShutdownStep = [name: string, step: () => Promise<void> | void];

/**
 * Runs shutdown steps in order; a step that throws is logged and the next one
 * still runs (BullMQ's `close()` rule: every cleanup runs even if one fails).
 */
export async function runShutdownSteps(steps: readonly ShutdownStep[], logger: Logger): Promise<void> {
  for (const [name, step] of steps) {
    try {
      await step();
    } catch (err) {
      logger.error({ step: name, err: errorMessage(err) }, 'shutdown step failed');
    }
  }
}

/** Closes an HTTP server (the metrics endpoint); resolves at once when there is none. */
export function closeHttpServer(server: HttpServer | undefined): Promise<void> {
  return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
}
