/**
 * Preloaded with `NODE_OPTIONS=--import=<this file>` by `npm run bench -- --profile` (Node 20 does
 * not accept `--cpu-prof` in NODE_OPTIONS): when `ENVSNAP_BENCH_PROFILE_DIR` is set, profiles the
 * process's main thread with V8's sampling profiler (the one behind `node --cpu-prof`, 1 ms
 * interval) through `node:inspector`, and writes `CPU.bench.0.<pid>.0.1.cpuprofile` into that
 * directory when the process exits. The inspector session of the main thread answers
 * synchronously, so the profile is written inside the `exit` handler.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const dir = process.env.ENVSNAP_BENCH_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 1000 });
  session.post('Profiler.start');
  process.on('exit', () => {
    session.post('Profiler.stop', (err, result) => {
      if (err) return;
      writeFileSync(
        path.join(dir, `CPU.bench.0.${process.pid}.0.1.cpuprofile`),
        JSON.stringify(result.profile),
      );
    });
  });
}
