/**
 * Preloaded with `NODE_OPTIONS=--import=<this file>` by `npm run bench -- --profile` (Node 20 does
 * not accept `--cpu-prof` in NODE_OPTIONS): when `ENVSNAP_BENCH_PROFILE_DIR` is set, profiles the
 * process's main thread with V8's sampling profiler (the one behind `node --cpu-prof`, 1 ms
 * interval) through `node:inspector`, and writes `CPU.bench.<n>.<pid>.0.1.cpuprofile` into that
 * directory when the process exits. The inspector session of the main thread answers
 * synchronously, so the profile is written inside the `exit` handler.
 *
 * `SIGUSR2` cuts the profile: what was sampled since the start (or the previous cut) is written
 * at once as profile `<n>` (0, 1, ...), and sampling starts again. The timeline script
 * (timeline.ts `--profile`) sends it before and after each command to profile that command alone.
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
  let seq = 0;
  const write = (): void => {
    session.post('Profiler.stop', (err, result) => {
      if (err) return;
      writeFileSync(
        path.join(dir, `CPU.bench.${seq++}.${process.pid}.0.1.cpuprofile`),
        JSON.stringify(result.profile),
      );
    });
  };
  process.on('SIGUSR2', () => {
    write();
    session.post('Profiler.start');
  });
  process.on('exit', write);
}
