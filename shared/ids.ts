import { randomBytes } from 'node:crypto';
import { InvalidArgumentError } from './errors.js';

/**
 * Backup and activity IDs: 20 lowercase hex characters, 12 of milliseconds
 * since the epoch then 8 random, so that sorting IDs sorts by creation time
 * (the platform CLIs show IDs of the same length and alphabet).
 */
export const ID_PATTERN = /^[0-9a-f]{20}$/;

/** A new time-ordered ID. */
export function newId(now: number = Date.now()): string {
  return now.toString(16).padStart(12, '0').slice(-12) + randomBytes(4).toString('hex');
}

/**
 * Checks a user-supplied ID.
 *
 * @throws InvalidArgumentError naming the bad value.
 */
export function checkId(id: string, what: 'backup' | 'activity'): string {
  const trimmed = id.trim().toLowerCase();
  if (!ID_PATTERN.test(trimmed)) {
    throw new InvalidArgumentError(`invalid ${what} id "${id}"`, {
      hint: `${what} ids are 20 hex characters; list them with envsnap ${what === 'backup' ? 'backup:list' : 'activity:list'}`,
    });
  }
  return trimmed;
}
