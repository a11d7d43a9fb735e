import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Creates the process logger: JSON lines on stdout (pino), tagged with `component`.
 *
 * Secrets are redacted by key name as a second line of defence; the first is that
 * envsnap never puts a secret in a log call.
 */
export function createLogger(
  component: string,
  level: string = process.env.ENVSNAP_LOG_LEVEL ?? 'info',
): Logger {
  return pino({
    level,
    base: { component, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['password', '*.password', 'secret', '*.secret', 'token', '*.token'],
      censor: '[redacted]',
    },
  });
}
