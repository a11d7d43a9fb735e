import assert from 'node:assert/strict';
import { ProgressTracker, RATE_WINDOW_MS, humanDuration } from '../../controller/cli/progress-tracker.js';

const MiB = 1024 * 1024;

function event(artifact: string, bytes: number, done = false, totalBytes = 0) {
  return { taskId: 't', artifact, bytes, totalBytes, done };
}

describe('ProgressTracker', () => {
  it('measures the rate over a moving window and derives the ETA from an exact total', () => {
    const t = new ProgressTracker({ sizes: new Map([['db/a.sql.zst', 100 * MiB]]), estimated: false });
    assert.equal(t.update(event('db/a.sql.zst', 0), 0).rate, undefined);
    const v = t.update(event('db/a.sql.zst', 10 * MiB), 1000);
    assert.equal(v.rate, 10 * MiB);
    assert.equal(v.total, 100 * MiB);
    assert.equal(v.estimated, false);
    assert.equal(v.fraction, 0.1);
    assert.equal(v.etaSeconds, 9);
    // Slower now: after the window has passed, only the recent speed counts.
    for (let s = 2; s <= 10; s++) t.update(event('db/a.sql.zst', 10 * MiB + (s - 1) * MiB), s * 1000);
    const slow = t.view('db/a.sql.zst', 10_000);
    assert.ok(Math.abs(slow.rate! - MiB) < 0.3 * MiB, `rate ${slow.rate}`);
    assert.ok(RATE_WINDOW_MS <= 6000);
  });

  it('gives no ETA once the bytes pass an estimated total, and never shows 100 % before done', () => {
    const t = new ProgressTracker({ sizes: new Map([['m/files.tar.zst', 10 * MiB]]), estimated: true });
    t.update(event('m/files.tar.zst', 0), 0);
    const over = t.update(event('m/files.tar.zst', 12 * MiB), 1000);
    assert.equal(over.estimated, true);
    assert.equal(over.etaSeconds, undefined);
    assert.equal(over.fraction, 0.99);
    const done = t.update(event('m/files.tar.zst', 12 * MiB, true), 2000);
    assert.equal(done.done, true);
    assert.equal(done.fraction, 1);
    assert.equal(done.total, 12 * MiB);
    assert.equal(done.estimated, false);
    assert.equal(done.rate, 6 * MiB);
  });

  it('sums artifacts seen and expected into the overall view', () => {
    const t = new ProgressTracker({
      sizes: new Map([
        ['a', 10 * MiB],
        ['b', 30 * MiB],
      ]),
      estimated: false,
    });
    t.update(event('a', 0), 0);
    t.update(event('a', 10 * MiB, true), 1000);
    const o = t.overall(1000);
    assert.equal(o.bytes, 10 * MiB);
    assert.equal(o.total, 40 * MiB);
    assert.equal(o.fraction, 0.25);
    assert.equal(o.etaSeconds, 3);
    assert.equal(o.done, false);
    t.update(event('b', 30 * MiB, true), 2000);
    assert.equal(t.overall(2000).done, true);
  });

  it('prefers the total the agent sends, and has no total when nothing is known', () => {
    const t = new ProgressTracker();
    assert.equal(t.update(event('x', 5), 0).total, undefined);
    assert.equal(t.overall(0).total, undefined);
    assert.equal(t.update(event('y', 5, false, 50), 0).total, 50);
  });

  it('formats durations', () => {
    assert.equal(humanDuration(42.4), '42s');
    assert.equal(humanDuration(185), '3m05s');
    assert.equal(humanDuration(3720), '1h02m');
  });
});
