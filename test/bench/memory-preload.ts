/**
 * Preloaded into the agent with `NODE_OPTIONS=--import=<this file>` by restore-memory.ts: when
 * `ENVSNAP_BENCH_MEMORY_DIR` is set and the process is the agent, `SIGUSR2` runs two full garbage
 * collections and writes `process.memoryUsage()` (bytes) as `mem.<n>.json` (n = 0, 1, ...) into
 * that directory, after a V8 heap snapshot into the path the file `snapshot-request` there names,
 * when that file exists (it is removed). A snapshot and forced collections raise the process's RSS
 * themselves: RSS read after one says little about the runs before it.
 */
import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';

const dir = process.env.ENVSNAP_BENCH_MEMORY_DIR;
if (dir && /envsnap-agent(\.js)?$/.test(process.argv[1] ?? '')) {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  let seq = 0;
  process.on('SIGUSR2', () => {
    gc();
    gc();
    const request = path.join(dir, 'snapshot-request');
    if (existsSync(request)) {
      const file = readFileSync(request, 'utf8').trim();
      unlinkSync(request);
      v8.writeHeapSnapshot(file);
    }
    writeFileSync(path.join(dir, `mem.${seq++}.json`), JSON.stringify(process.memoryUsage()));
  });
}
