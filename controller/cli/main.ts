import { Command } from 'commander';
import { VERSION } from '../../shared/version.js';
import { register as activityList } from './commands/activity-list.js';
import { register as activityLog } from './commands/activity-log.js';
import { register as agentList } from './commands/agent-list.js';
import { register as backupCreate } from './commands/backup-create.js';
import { register as backupDrill } from './commands/backup-drill.js';
import { register as backupDelete } from './commands/backup-delete.js';
import { register as backupGet } from './commands/backup-get.js';
import { register as backupList } from './commands/backup-list.js';
import { register as backupPrune } from './commands/backup-prune.js';
import { register as backupRestore } from './commands/backup-restore.js';
import { register as doctor } from './commands/doctor.js';
import { register as backupVerify } from './commands/backup-verify.js';
import { register as repositoryCheck } from './commands/repository-check.js';
import { register as dbDump } from './commands/db-dump.js';
import { register as lockList } from './commands/lock-list.js';
import { register as scheduleList } from './commands/schedule-list.js';
import { makeRunner } from './runner.js';

/** Builds the `envsnap` program: one file per command under `commands/`. */
export function buildProgram(): Command {
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
  for (const register of [
    backupCreate,
    backupList,
    backupGet,
    backupRestore,
    backupDelete,
    backupPrune,
    backupVerify,
    backupDrill,
    repositoryCheck,
    scheduleList,
    dbDump,
    lockList,
    activityList,
    activityLog,
    agentList,
    doctor,
  ]) {
    register(program, run);
  }
  return program;
}

/** `envsnap …` entry point. */
export async function main(argv: string[]): Promise<void> {
  await buildProgram().parseAsync(argv);
}
