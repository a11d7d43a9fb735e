#!/usr/bin/env node
import module from 'node:module';

// Node >= 22.1 keeps compiled code on disk between runs (the CLI's start-up is mostly loading
// modules); Node 20 has no such cache, and the check keeps it a no-op there.
module.enableCompileCache?.();
const { main } = await import('../dist/controller/cli/main.js');

await main(process.argv);
