/**
 * The engines, by service kind.
 */
import { InvalidArgumentError } from '../../shared/errors.js';
import type { Engine, ServiceTarget } from './engine.js';
import { MariadbEngine } from './mariadb.js';
import { PostgresqlEngine } from './postgresql.js';
import { RedisEngine } from './redis.js';

export type * from './engine.js';
export { artifactFileName } from './artifact-name.js';
export { MariadbEngine } from './mariadb.js';
export { PostgresqlEngine } from './postgresql.js';
export { RedisEngine } from './redis.js';

const ENGINES: Record<ServiceTarget['kind'], Engine> = {
  mariadb: new MariadbEngine('mariadb'),
  mysql: new MariadbEngine('mysql'),
  postgresql: new PostgresqlEngine(),
  redis: new RedisEngine(),
};

/**
 * The engine for a service kind. Engines hold no state between calls, so one instance per kind is
 * shared. Throws InvalidArgumentError for an unknown kind (the config schema should have caught it).
 */
export function engineFor(kind: ServiceTarget['kind']): Engine {
  const engine = ENGINES[kind];
  if (!engine) throw new InvalidArgumentError(`unknown service kind "${String(kind)}"`);
  return engine;
}
