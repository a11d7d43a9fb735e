import assert from 'node:assert/strict';
import { Command } from 'commander';
import { COMMANDS, buildProgram, namedCommand } from '../../controller/cli/main.js';
import type { Runner } from '../../controller/cli/runner.js';

const noRun: Runner = () => Promise.resolve();

describe('CLI command table (one module loaded per command line)', () => {
  it('names each command as its module registers it', async () => {
    for (const entry of COMMANDS) {
      const program = new Command('envsnap');
      (await entry.load()).register(program, noRun);
      assert.equal(program.commands.length, 1, entry.names[0]);
      const cmd = program.commands[0]!;
      assert.deepEqual([cmd.name(), ...cmd.aliases()], entry.names);
    }
  });

  it('lists every command in the full program, in table order', async () => {
    const program = await buildProgram();
    assert.deepEqual(
      program.commands.map((c) => c.name()),
      COMMANDS.map((c) => c.names[0]),
    );
  });

  it('picks the command after plain global options, and none when commander must decide', () => {
    const pick = (...args: string[]) => namedCommand(args)?.names[0];
    assert.equal(pick('backup:create', '-e', 'x'), 'backup:create');
    assert.equal(pick('backups'), 'backup:list');
    assert.equal(pick('--controller', 'backups', 'locks'), 'lock:list');
    assert.equal(pick('-c', 'f.yml', '-q', 'backup:restore', 'id'), 'backup:restore');
    assert.equal(pick('--controller=h:1', '--quiet', 'doctor'), 'doctor');
    for (const args of [
      [],
      ['--help'],
      ['help', 'backups'],
      ['backup:creat'],
      ['-qc', 'f', 'backups'],
      ['-V'],
    ])
      assert.equal(pick(...args), undefined, args.join(' '));
  });
});
