import { Command } from 'commander';
import { VERSION } from '../../shared/version.js';
import { makeRunner, type Runner } from './runner.js';

/** What each command module exports: adds its command to the program. */
type Register = (program: Command, run: Runner) => void;

/** A command: its name and aliases as the module registers them, and the module, loaded on use. */
interface CommandEntry {
  names: readonly string[];
  load: () => Promise<{ register: Register }>;
}

/**
 * Every `envsnap` command, in the order `--help` lists them: one file per command under
 * `commands/`. The names must be those the module gives commander (test/unit/cli-commands.test.ts
 * checks): they pick the one module to load for a command line.
 */
export const COMMANDS: readonly CommandEntry[] = [
  { names: ['backup:create'], load: () => import('./commands/backup-create.js') },
  { names: ['backup:list', 'backups'], load: () => import('./commands/backup-list.js') },
  { names: ['backup:get'], load: () => import('./commands/backup-get.js') },
  { names: ['backup:restore'], load: () => import('./commands/backup-restore.js') },
  { names: ['backup:delete'], load: () => import('./commands/backup-delete.js') },
  { names: ['backup:prune'], load: () => import('./commands/backup-prune.js') },
  { names: ['backup:verify'], load: () => import('./commands/backup-verify.js') },
  { names: ['backup:drill'], load: () => import('./commands/backup-drill.js') },
  { names: ['repository:check'], load: () => import('./commands/repository-check.js') },
  { names: ['schedule:list', 'schedules'], load: () => import('./commands/schedule-list.js') },
  { names: ['db-dump'], load: () => import('./commands/db-dump.js') },
  { names: ['lock:list', 'locks'], load: () => import('./commands/lock-list.js') },
  { names: ['activity:list', 'activities'], load: () => import('./commands/activity-list.js') },
  { names: ['activity:log'], load: () => import('./commands/activity-log.js') },
  { names: ['agent:list', 'agents'], load: () => import('./commands/agent-list.js') },
  { names: ['doctor'], load: () => import('./commands/doctor.js') },
];

/** Global options that take a value in the next argument. */
const GLOBAL_WITH_VALUE = new Set(['--controller', '--config', '-c']);
/** Global options without a value, or with it attached (`--controller=ADDR`). */
const GLOBAL_ALONE = /^(-q|--quiet|--controller=.*|--config=.*)$/;

/**
 * The command a command line names, when it can be told without commander: only global options
 * (in their plain spellings) before a known command name. Undefined for anything else (`--help`,
 * `help X`, no command, an unknown one, combined short options), which then loads every command.
 *
 * @param args the arguments after the program name (`process.argv.slice(2)`).
 */
export function namedCommand(args: readonly string[]): CommandEntry | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (GLOBAL_WITH_VALUE.has(arg)) i++;
    else if (!GLOBAL_ALONE.test(arg)) return COMMANDS.find((c) => c.names.includes(arg));
  }
  return undefined;
}

/**
 * Builds the `envsnap` program with the given commands (every one by default; `--help` and
 * commander's suggestions for a mistyped name need them all).
 */
export async function buildProgram(commands: readonly CommandEntry[] = COMMANDS): Promise<Command> {
  const program = new Command('envsnap')
    .description('envsnap: back up and restore whole application environments')
    .version(VERSION)
    .option(
      '--controller <addr>',
      'controller address host:port (default: $ENVSNAP_CONTROLLER, the config file, 127.0.0.1:7700)',
    )
    .option(
      '-c, --config <file>',
      'config file to read the controller address from (default: $ENVSNAP_CONFIG)',
    )
    .option('-q, --quiet', 'print only results, no progress or logs')
    .showHelpAfterError();
  const run = makeRunner(program);
  const modules = await Promise.all(commands.map((c) => c.load()));
  for (const { register } of modules) register(program, run);
  return program;
}

/**
 * `envsnap …` entry point. Loads only the module of the command the line names (most of the
 * commands' start-up was loading the other fifteen); a command's own `--help` and errors are the
 * same either way, since commander shows a subcommand's help without its siblings.
 */
export async function main(argv: string[]): Promise<void> {
  const one = namedCommand(argv.slice(2));
  await (await buildProgram(one ? [one] : COMMANDS)).parseAsync(argv);
}
