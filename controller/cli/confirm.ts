import { createInterface } from 'node:readline/promises';
import { InvalidArgumentError } from '../../shared/errors.js';

/**
 * Asks a yes/no question on the terminal (stderr); only "y" or "yes" is yes.
 * Without `--yes` and without a terminal to ask, refuses.
 *
 * @param what - what is refused, for the error: e.g. "restore".
 * @throws InvalidArgumentError when stdin is not a terminal.
 */
export async function confirm(question: string, what: string): Promise<boolean> {
  if (!process.stdin.isTTY) {
    throw new InvalidArgumentError(`refusing to ${what} without confirmation`, {
      hint: 'there is no terminal to ask; pass --yes to confirm',
    });
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question} [y/N] `);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}
