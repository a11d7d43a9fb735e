import assert from 'node:assert/strict';
import {
  checkManualCapacity,
  DEFAULT_NON_PRODUCTION_MANUAL_LIMIT,
  isWithinRestorableWindow,
  manualLimit,
  manualLimitError,
  PRESETS,
  resolvePolicy,
  selectCopyRetention,
  selectRetention,
  type CopyCandidate,
  type LocationRetention,
  type RetentionCandidate,
  type RetentionPolicy,
  type RetentionRules,
  type RetentionSelection,
} from '../../controller/retention.js';
import { retentionConfigSchema } from '../../shared/config.js';
import { InvalidArgumentError } from '../../shared/errors.js';

const HOUR = 3600_000;
const DAY = 24 * HOUR;

/** Friday 2026-11-20, ISO week 2026-W47. */
const NOW = new Date('2026-11-20T09:15:00Z');

type Tag = RetentionCandidate['tag'];

/** Ids name the tag and the minute: `a-2026-11-20T06:00` (automated), `m-...` (manual). */
const idOf = (tag: Tag, iso: string) => `${tag === 'manual' ? 'm' : 'a'}-${iso.slice(0, 16)}`;

function backup(tag: Tag, iso: string, status = 'complete'): RetentionCandidate {
  const created = new Date(iso).toISOString();
  return { id: idOf(tag, created), created, tag, status };
}

/** One backup every `stepHours` hours from `from` up to `to` (both ISO, inclusive), oldest first. */
function series(tag: Tag, from: string, to: string, stepHours: number): RetentionCandidate[] {
  const out: RetentionCandidate[] = [];
  for (let t = Date.parse(from); t <= Date.parse(to); t += stepHours * HOUR)
    out.push(backup(tag, new Date(t).toISOString()));
  return out;
}

/** `count` ids at `time` on consecutive days going back from `lastDay` (YYYY-MM-DD). */
function daysBack(tag: Tag, lastDay: string, count: number, time: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < count; i++)
    out.push(idOf(tag, new Date(Date.parse(`${lastDay}T${time}Z`) - i * DAY).toISOString()));
  return out;
}

const ids = (list: Array<{ id: string }>) => list.map((b) => b.id);
const keptOf = (sel: RetentionSelection, tag: Tag) =>
  ids(sel.keep).filter((id) => id.startsWith(tag === 'manual' ? 'm-' : 'a-'));
const reasonsOf = (sel: RetentionSelection, id: string) => sel.keep.find((k) => k.id === id)?.reasons;
const removalOf = (sel: RetentionSelection, id: string) => sel.remove.find((r) => r.id === id)?.reason;
const policy = (automated: RetentionRules, manual: RetentionRules = {}): RetentionPolicy => ({
  manual,
  automated,
});

/** Every input backup appears exactly once, both lists newest first. */
function assertPartition(input: RetentionCandidate[], sel: RetentionSelection): void {
  const all = [...ids(sel.keep), ...ids(sel.remove)];
  assert.equal(all.length, input.length);
  assert.deepEqual(new Set(all), new Set(ids(input)));
  const time = new Map(input.map((b) => [b.id, Date.parse(b.created)]));
  for (const list of [sel.keep, sel.remove])
    for (let i = 1; i < list.length; i++) assert.ok(time.get(list[i - 1]!.id)! >= time.get(list[i]!.id)!);
}

/** Deterministic pseudo-random numbers in [0, 1) (a linear congruential generator). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Irregular automated history: 0-4 backups a day at random times, with gaps of up to 5 days. */
function irregular(seed: number, days: number, end: Date): RetentionCandidate[] {
  const rand = lcg(seed);
  const out = new Map<string, RetentionCandidate>();
  const start = Date.UTC(end.getUTCFullYear(), end.getUTCMonth(), end.getUTCDate()) - days * DAY;
  for (let day = start; day < end.getTime();) {
    const perDay = Math.floor(rand() * 5);
    for (let i = 0; i < perDay; i++) {
      const t = day + Math.floor(rand() * 24 * 60) * 60_000;
      if (t <= end.getTime()) {
        const b = backup('automated', new Date(t).toISOString());
        out.set(b.id, b);
      }
    }
    day += (rand() < 0.15 ? 1 + Math.floor(rand() * 5) : 1) * DAY;
  }
  return [...out.values()];
}

describe('retention', () => {
  describe('presets', () => {
    const total = (r: RetentionRules) =>
      Object.entries(r)
        .filter(([k]) => k.startsWith('keep_'))
        .reduce((sum: number, [, v]) => sum + Number(v ?? 0), 0);

    it('document 2/2, 4/21 and 4/44 manual/automated backups', () => {
      assert.deepEqual(PRESETS.essential, { manual: { keep_last: 2 }, automated: { keep_daily: 2 } });
      assert.deepEqual(PRESETS.advanced, {
        manual: { keep_last: 4 },
        automated: { keep_daily: 6, keep_weekly: 4, keep_monthly: 11 },
      });
      assert.deepEqual(PRESETS.premium, {
        manual: { keep_last: 4 },
        automated: { keep_6hourly: 4, keep_daily: 29, keep_monthly: 11 },
      });
      assert.deepEqual(
        [PRESETS.essential, PRESETS.advanced, PRESETS.premium].map((p) => [
          total(p.manual),
          total(p.automated),
        ]),
        [
          [2, 2],
          [4, 21],
          [4, 44],
        ],
      );
      assert.ok(Object.isFrozen(PRESETS.advanced.automated));
    });

    it('essential keeps 2 manual and 2 daily automated backups of 120 days of hourly backups', () => {
      const input = [
        ...series('automated', '2026-07-23T00:00:00Z', NOW.toISOString(), 1),
        ...series('manual', '2026-11-10T12:30:00Z', '2026-11-19T12:30:00Z', 24),
      ];
      assert.equal(input.length, 120 * 24 + 10 + 10);
      const sel = selectRetention(input, resolvePolicy('essential'), NOW);
      assertPartition(input, sel);
      assert.deepEqual(keptOf(sel, 'automated'), ['a-2026-11-20T09:00', 'a-2026-11-19T23:00']);
      assert.deepEqual(keptOf(sel, 'manual'), ['m-2026-11-19T12:30', 'm-2026-11-18T12:30']);
      assert.deepEqual(reasonsOf(sel, 'a-2026-11-20T09:00'), ['daily 2026-11-20']);
      assert.deepEqual(reasonsOf(sel, 'm-2026-11-18T12:30'), ['last #2']);
      assert.equal(removalOf(sel, 'm-2026-11-17T12:30'), 'not kept by any manual rule (last 2)');
      assert.equal(
        removalOf(sel, 'a-2026-11-20T08:00'),
        'daily 2026-11-20 is kept by newer backup a-2026-11-20T09:00',
      );
      assert.equal(removalOf(sel, 'a-2026-11-18T23:00'), 'not kept by any automated rule (daily 2)');
    });

    it('advanced keeps exactly 6 daily, 4 weekly and 11 monthly of 400 days of hourly backups', () => {
      const input = series('automated', '2025-10-16T00:00:00Z', NOW.toISOString(), 1);
      const sel = selectRetention(input, resolvePolicy('advanced'), NOW);
      assertPartition(input, sel);
      const daily = ['a-2026-11-20T09:00', ...daysBack('automated', '2026-11-19', 5, '23:00:00')];
      const weekly = ['08', '01']
        .map((d) => `a-2026-11-${d}T23:00`)
        .concat(['25', '18'].map((d) => `a-2026-10-${d}T23:00`));
      const monthly = [
        'a-2026-10-31T23:00',
        'a-2026-09-30T23:00',
        'a-2026-08-31T23:00',
        'a-2026-07-31T23:00',
        'a-2026-06-30T23:00',
        'a-2026-05-31T23:00',
        'a-2026-04-30T23:00',
        'a-2026-03-31T23:00',
        'a-2026-02-28T23:00',
        'a-2026-01-31T23:00',
        'a-2025-12-31T23:00',
      ];
      const expected = [...daily, ...weekly, ...monthly];
      assert.equal(expected.length, 21);
      // Newest first: the monthly 31 October sits between the weekly 1 and 25 October.
      assert.deepEqual(keptOf(sel, 'automated'), [...expected].sort().reverse());
      assert.equal(keptOf(sel, 'automated')[8], 'a-2026-10-31T23:00');
      assert.deepEqual(reasonsOf(sel, 'a-2026-11-20T09:00'), [
        'daily 2026-11-20',
        'weekly 2026-W47',
        'monthly 2026-11',
      ]);
      // Sunday 15 November closes ISO week 46: kept as daily, and stands for that week too.
      assert.deepEqual(reasonsOf(sel, 'a-2026-11-15T23:00'), ['daily 2026-11-15', 'weekly 2026-W46']);
      assert.deepEqual(reasonsOf(sel, 'a-2026-11-08T23:00'), ['weekly 2026-W45']);
      assert.deepEqual(reasonsOf(sel, 'a-2026-11-01T23:00'), ['weekly 2026-W44']);
      assert.deepEqual(reasonsOf(sel, 'a-2026-10-31T23:00'), ['monthly 2026-10']);
      assert.deepEqual(reasonsOf(sel, 'a-2025-12-31T23:00'), ['monthly 2025-12']);
    });

    it('premium keeps exactly 4 6-hourly, 29 daily and 11 monthly of 400 days of 6-hourly backups', () => {
      const input = series('automated', '2025-10-16T00:00:00Z', NOW.toISOString(), 6);
      const sel = selectRetention(input, resolvePolicy('premium'), NOW);
      assertPartition(input, sel);
      const sixHourly = [
        'a-2026-11-20T06:00',
        'a-2026-11-20T00:00',
        'a-2026-11-19T18:00',
        'a-2026-11-19T12:00',
      ];
      const daily = daysBack('automated', '2026-11-18', 29, '18:00:00');
      assert.equal(daily.at(-1), 'a-2026-10-21T18:00');
      const monthly = [
        'a-2026-09-30T18:00',
        'a-2026-08-31T18:00',
        'a-2026-07-31T18:00',
        'a-2026-06-30T18:00',
        'a-2026-05-31T18:00',
        'a-2026-04-30T18:00',
        'a-2026-03-31T18:00',
        'a-2026-02-28T18:00',
        'a-2026-01-31T18:00',
        'a-2025-12-31T18:00',
        'a-2025-11-30T18:00',
      ];
      assert.deepEqual(keptOf(sel, 'automated'), [...sixHourly, ...daily, ...monthly]);
      assert.equal(keptOf(sel, 'automated').length, 44);
      assert.deepEqual(reasonsOf(sel, 'a-2026-11-20T06:00'), [
        '6-hourly 2026-11-20T06',
        'daily 2026-11-20',
        'monthly 2026-11',
      ]);
      assert.deepEqual(reasonsOf(sel, 'a-2026-11-19T18:00'), ['6-hourly 2026-11-19T18', 'daily 2026-11-19']);
      assert.deepEqual(reasonsOf(sel, 'a-2026-10-31T18:00'), ['daily 2026-10-31', 'monthly 2026-10']);
      assert.deepEqual(reasonsOf(sel, 'a-2025-11-30T18:00'), ['monthly 2025-11']);
    });

    it('keep exactly the documented totals whatever the weekday or month boundary of now', () => {
      const nows = [
        ...Array.from({ length: 7 }, (_, i) => new Date(Date.parse('2026-11-16T03:00:00Z') + i * DAY)),
        new Date('2026-12-01T00:30:00Z'),
        new Date('2027-01-01T03:00:00Z'),
        new Date('2028-02-29T23:59:00Z'),
      ];
      for (const now of nows) {
        const from = new Date(now.getTime() - 420 * DAY).toISOString();
        const manual = series('manual', from, now.toISOString(), 24 * 9);
        for (const [preset, step, expected] of [
          ['essential', 24, 2],
          ['advanced', 24, 21],
          ['advanced', 6, 21],
          ['premium', 6, 44],
          ['premium', 4, 44],
        ] as const) {
          const input = [...series('automated', from, now.toISOString(), step), ...manual];
          const sel = selectRetention(input, resolvePolicy(preset), now);
          const label = `${preset} every ${step}h at ${now.toISOString()}`;
          assert.equal(keptOf(sel, 'automated').length, expected, label);
          assert.equal(keptOf(sel, 'manual').length, preset === 'essential' ? 2 : 4, label);
        }
      }
    });

    it('keep exactly the documented totals of irregular histories, each backup the newest of its bucket', () => {
      for (const seed of [1, 2, 3, 42, 2026]) {
        const input = irregular(seed, 730, NOW);
        for (const [preset, expected] of [
          ['essential', 2],
          ['advanced', 21],
          ['premium', 44],
        ] as const) {
          const sel = selectRetention(input, resolvePolicy(preset), NOW);
          assertPartition(input, sel);
          assert.equal(sel.keep.length, expected, `${preset}, seed ${seed}`);
          for (const k of sel.keep) {
            const created = input.find((b) => b.id === k.id)!.created;
            for (const reason of k.reasons) {
              const [rule, bucket] = reason.split(' ') as [string, string];
              const key: Record<string, (iso: string) => string> = {
                daily: (iso) => iso.slice(0, 10),
                monthly: (iso) => iso.slice(0, 7),
                '6-hourly': (iso) =>
                  `${iso.slice(0, 11)}${String(Math.floor(Number(iso.slice(11, 13)) / 6) * 6).padStart(2, '0')}`,
              };
              if (!key[rule]) continue;
              assert.equal(key[rule](created), bucket, `${k.id}: ${reason}`);
              const newer = input.filter((b) => b.created > created && key[rule]!(b.created) === bucket);
              assert.deepEqual(newer, [], `${k.id} is not the newest of ${reason}`);
            }
          }
        }
      }
    });

    it('keep everything of a history shorter than the counts', () => {
      const input = series('automated', '2026-11-15T02:00:00Z', NOW.toISOString(), 24);
      const sel = selectRetention(input, resolvePolicy('premium'), NOW);
      assert.equal(sel.remove.length, 0);
      assert.equal(sel.keep.length, 6);
    });
  });

  describe('selectRetention', () => {
    it('keep_last keeps the N newest and nothing else', () => {
      const input = series('automated', '2026-11-20T00:00:00Z', '2026-11-20T05:00:00Z', 1);
      const sel = selectRetention(input, policy({ keep_last: 3 }), NOW);
      assert.deepEqual(sel.keep, [
        { id: 'a-2026-11-20T05:00', reasons: ['last #1'] },
        { id: 'a-2026-11-20T04:00', reasons: ['last #2'] },
        { id: 'a-2026-11-20T03:00', reasons: ['last #3'] },
      ]);
      assert.deepEqual(sel.remove.at(-1), {
        id: 'a-2026-11-20T00:00',
        reason: 'not kept by any automated rule (last 3)',
      });
    });

    it('keep_hourly keeps the newest backup of each of the N most recent hours with a backup', () => {
      const input = ['08:10', '08:50', '07:05', '07:55', '05:30'].map((t) =>
        backup('automated', `2026-11-20T${t}:00Z`),
      );
      const sel = selectRetention(input, policy({ keep_hourly: 3 }), NOW);
      assert.deepEqual(sel.keep, [
        { id: 'a-2026-11-20T08:50', reasons: ['hourly 2026-11-20T08'] },
        { id: 'a-2026-11-20T07:55', reasons: ['hourly 2026-11-20T07'] },
        { id: 'a-2026-11-20T05:30', reasons: ['hourly 2026-11-20T05'] },
      ]);
      assert.equal(
        removalOf(sel, 'a-2026-11-20T08:10'),
        'hourly 2026-11-20T08 is kept by newer backup a-2026-11-20T08:50',
      );
    });

    it('keep_6hourly uses the blocks 00-06, 06-12, 12-18 and 18-24', () => {
      const input = [
        '2026-11-20T05:59',
        '2026-11-20T00:00',
        '2026-11-19T23:00',
        '2026-11-19T18:00',
        '2026-11-19T17:59',
      ].map((t) => backup('automated', `${t}:00Z`));
      const sel = selectRetention(input, policy({ keep_6hourly: 3 }), NOW);
      assert.deepEqual(sel.keep, [
        { id: 'a-2026-11-20T05:59', reasons: ['6-hourly 2026-11-20T00'] },
        { id: 'a-2026-11-19T23:00', reasons: ['6-hourly 2026-11-19T18'] },
        { id: 'a-2026-11-19T17:59', reasons: ['6-hourly 2026-11-19T12'] },
      ]);
    });

    it('keep_daily counts days that have a backup, skipping gaps', () => {
      const input = [
        '2026-11-20T01:00',
        '2026-11-17T10:00',
        '2026-11-17T22:00',
        '2026-11-10T00:00',
        '2026-11-01T00:00',
      ].map((t) => backup('automated', `${t}:00Z`));
      const sel = selectRetention(input, policy({ keep_daily: 3 }), NOW);
      assert.deepEqual(ids(sel.keep), ['a-2026-11-20T01:00', 'a-2026-11-17T22:00', 'a-2026-11-10T00:00']);
      assert.deepEqual(ids(sel.remove), ['a-2026-11-17T10:00', 'a-2026-11-01T00:00']);
    });

    it('keep_weekly uses ISO weeks, across a year boundary (2026 has 53)', () => {
      const now = new Date('2027-01-05T12:00:00Z');
      const input = [
        '2027-01-04T10:00',
        '2027-01-01T10:00',
        '2026-12-28T10:00',
        '2026-12-27T10:00',
        '2026-12-20T10:00',
      ].map((t) => backup('automated', `${t}:00Z`));
      const sel = selectRetention(input, policy({ keep_weekly: 3 }), now);
      assert.deepEqual(sel.keep, [
        { id: 'a-2027-01-04T10:00', reasons: ['weekly 2027-W01'] },
        { id: 'a-2027-01-01T10:00', reasons: ['weekly 2026-W53'] },
        { id: 'a-2026-12-27T10:00', reasons: ['weekly 2026-W52'] },
      ]);
      assert.equal(
        removalOf(sel, 'a-2026-12-28T10:00'),
        'weekly 2026-W53 is kept by newer backup a-2027-01-01T10:00',
      );
    });

    it('keep_monthly and keep_yearly keep the newest of each month and year', () => {
      const input = [
        '2026-11-02',
        '2026-10-31',
        '2026-10-01',
        '2026-01-15',
        '2025-12-31',
        '2025-06-01',
        '2024-03-03',
      ].map((d) => backup('automated', `${d}T12:00:00Z`));
      const monthly = selectRetention(input, policy({ keep_monthly: 3 }), NOW);
      assert.deepEqual(ids(monthly.keep), ['a-2026-11-02T12:00', 'a-2026-10-31T12:00', 'a-2026-01-15T12:00']);
      const yearly = selectRetention(input, policy({ keep_yearly: 10 }), NOW);
      assert.deepEqual(yearly.keep, [
        { id: 'a-2026-11-02T12:00', reasons: ['yearly 2026'] },
        { id: 'a-2025-12-31T12:00', reasons: ['yearly 2025'] },
        { id: 'a-2024-03-03T12:00', reasons: ['yearly 2024'] },
      ]);
    });

    it('does not count backups kept by earlier rules towards later ones, but lists their buckets', () => {
      const input = series('automated', '2026-11-01T12:00:00Z', '2026-11-20T06:00:00Z', 6);
      const sel = selectRetention(input, policy({ keep_last: 2, keep_daily: 2 }), NOW);
      assert.deepEqual(sel.keep, [
        { id: 'a-2026-11-20T06:00', reasons: ['last #1', 'daily 2026-11-20'] },
        { id: 'a-2026-11-20T00:00', reasons: ['last #2'] },
        { id: 'a-2026-11-19T18:00', reasons: ['daily 2026-11-19'] },
        { id: 'a-2026-11-18T18:00', reasons: ['daily 2026-11-18'] },
      ]);
    });

    it('applies max_age as a hard cap, even over keep rules, the edge inside', () => {
      const input = series('automated', '2026-10-01T09:15:00Z', NOW.toISOString(), 24);
      const sel = selectRetention(input, policy({ keep_daily: 30, max_age: 7 * 86400 }), NOW);
      assert.deepEqual(ids(sel.keep), daysBack('automated', '2026-11-20', 8, '09:15:00'));
      assert.equal(keptOf(sel, 'automated').at(-1), 'a-2026-11-13T09:15'); // exactly 7 days old
      assert.equal(removalOf(sel, 'a-2026-11-12T09:15'), 'older than max_age 7d');
      assert.equal(sel.remove.length, input.length - 8);
      assert.ok(sel.remove.every((r) => r.reason === 'older than max_age 7d'));

      const old = selectRetention(
        input,
        policy({ keep_last: 5, max_age: 3600 }),
        new Date('2026-12-31T00:00:00Z'),
      );
      assert.equal(old.keep.length, 0, 'max_age removes even the newest backups');
      assert.equal(old.remove[0]!.reason, 'older than max_age 1h');
    });

    it('keeps everything of a tag without keep rules, max_age still applying', () => {
      const input = series('automated', '2026-11-01T00:00:00Z', '2026-11-20T00:00:00Z', 24);
      const none = selectRetention(input, policy({}), NOW);
      assert.equal(none.keep.length, input.length);
      assert.ok(none.keep.every((k) => k.reasons[0] === 'no retention rules'));
      const zero = selectRetention(input, policy({ keep_daily: 0 }), NOW);
      assert.equal(zero.keep.length, input.length);
      const capped = selectRetention(input, policy({ max_age: 90 }), new Date('2026-11-20T00:01:00Z'));
      assert.deepEqual(capped.keep, [{ id: 'a-2026-11-20T00:00', reasons: ['within max_age 90s'] }]);
      assert.equal(capped.remove.length, input.length - 1);
    });

    it('always removes failed backups and never touches unfinished ones', () => {
      const input = [
        backup('automated', '2026-11-20T09:00:00Z', 'in_progress'),
        backup('automated', '2026-11-20T08:00:00Z', 'failed'),
        backup('automated', '2026-11-20T07:00:00Z', 'pending'),
        backup('automated', '2026-11-20T06:00:00Z'),
        backup('automated', '2026-11-20T05:00:00Z'),
        backup('manual', '2026-11-01T05:00:00Z', 'failed'),
      ];
      const sel = selectRetention(input, policy({ keep_last: 1 }), NOW);
      assertPartition(input, sel);
      assert.deepEqual(sel.keep, [
        { id: 'a-2026-11-20T09:00', reasons: ['not finished (in_progress)'] },
        { id: 'a-2026-11-20T07:00', reasons: ['not finished (pending)'] },
        { id: 'a-2026-11-20T06:00', reasons: ['last #1'] },
      ]);
      assert.deepEqual(sel.remove, [
        { id: 'a-2026-11-20T08:00', reason: 'failed backup' },
        { id: 'a-2026-11-20T05:00', reason: 'not kept by any automated rule (last 1)' },
        { id: 'm-2026-11-01T05:00', reason: 'failed backup' },
      ]);
      // Even with no rules at all, and even when fresh.
      assert.deepEqual(ids(selectRetention(input, policy({}), NOW).remove), [
        'a-2026-11-20T08:00',
        'm-2026-11-01T05:00',
      ]);
    });

    it('applies the rules per tag', () => {
      const input = [
        ...series('automated', '2026-11-18T00:00:00Z', '2026-11-20T00:00:00Z', 12),
        ...series('manual', '2026-11-18T01:00:00Z', '2026-11-20T01:00:00Z', 12),
      ];
      const sel = selectRetention(input, policy({ keep_last: 1 }, { keep_last: 2 }), NOW);
      assert.deepEqual(keptOf(sel, 'automated'), ['a-2026-11-20T00:00']);
      assert.deepEqual(keptOf(sel, 'manual'), ['m-2026-11-20T01:00', 'm-2026-11-19T13:00']);
    });

    it('uses the time zone for bucket boundaries: 23:30 UTC is the next day in Europe/Berlin', () => {
      const input = ['2026-11-20T08:00', '2026-11-19T23:30', '2026-11-19T22:30'].map((t) =>
        backup('automated', `${t}:00Z`),
      );
      const utc = selectRetention(input, policy({ keep_daily: 2 }), NOW);
      assert.deepEqual(utc.keep, [
        { id: 'a-2026-11-20T08:00', reasons: ['daily 2026-11-20'] },
        { id: 'a-2026-11-19T23:30', reasons: ['daily 2026-11-19'] },
      ]);
      const berlin = selectRetention(input, policy({ keep_daily: 2 }), NOW, { timeZone: 'Europe/Berlin' });
      assert.deepEqual(berlin.keep, [
        { id: 'a-2026-11-20T08:00', reasons: ['daily 2026-11-20'] },
        { id: 'a-2026-11-19T22:30', reasons: ['daily 2026-11-19'] },
      ]);
      assert.equal(
        removalOf(berlin, 'a-2026-11-19T23:30'),
        'daily 2026-11-20 is kept by newer backup a-2026-11-20T08:00',
      );
      const tokyo = selectRetention(input, policy({ keep_hourly: 1 }), NOW, { timeZone: 'Asia/Tokyo' });
      assert.deepEqual(tokyo.keep, [{ id: 'a-2026-11-20T08:00', reasons: ['hourly 2026-11-20T17'] }]);
    });

    it('uses 00 for midnight and treats the repeated hour of a DST change as one hour', () => {
      const midnight = selectRetention(
        [backup('automated', '2026-11-19T23:10:00Z')],
        policy({ keep_hourly: 1 }),
        NOW,
        { timeZone: 'Europe/Berlin' },
      );
      assert.deepEqual(midnight.keep[0]!.reasons, ['hourly 2026-11-20T00']);
      // 2026-10-25: Berlin goes back from 03:00 CEST to 02:00 CET at 01:00 UTC.
      const input = ['2026-10-25T02:30', '2026-10-25T01:30', '2026-10-25T00:30'].map((t) =>
        backup('automated', `${t}:00Z`),
      );
      const sel = selectRetention(input, policy({ keep_hourly: 5 }), NOW, { timeZone: 'Europe/Berlin' });
      assert.deepEqual(sel.keep, [
        { id: 'a-2026-10-25T02:30', reasons: ['hourly 2026-10-25T03'] },
        { id: 'a-2026-10-25T01:30', reasons: ['hourly 2026-10-25T02'] },
      ]);
      assert.deepEqual(ids(sel.remove), ['a-2026-10-25T00:30']);
    });

    it('does not depend on input order and does not change its input', () => {
      const input = irregular(7, 200, NOW);
      const copy = structuredClone(input);
      const shuffled = [...input].sort((a, b) =>
        a.id.split('').reverse().join('') < b.id.split('').reverse().join('') ? -1 : 1,
      );
      assert.deepEqual(
        selectRetention(shuffled, resolvePolicy('advanced'), NOW),
        selectRetention(input, resolvePolicy('advanced'), NOW),
      );
      assert.deepEqual(input, copy);
    });

    it('breaks ties on created by id, higher first', () => {
      const input = [
        { id: 'b1', created: '2026-11-20T01:00:00Z', tag: 'automated' as const, status: 'complete' },
        { id: 'b2', created: '2026-11-20T01:00:00Z', tag: 'automated' as const, status: 'complete' },
      ];
      assert.deepEqual(ids(selectRetention(input, policy({ keep_last: 1 }), NOW).keep), ['b2']);
    });

    it('rejects bad input with InvalidArgumentError', () => {
      const good = [backup('automated', '2026-11-20T01:00:00Z')];
      const cases: Array<[() => unknown, RegExp]> = [
        [
          () => selectRetention(good, policy({ keep_daily: -1 }), NOW),
          /retention\.automated\.keep_daily must be/,
        ],
        [() => selectRetention(good, policy({ keep_daily: 1.5 }), NOW), /non-negative integer/],
        [() => selectRetention(good, policy({ max_age: 0 }), NOW), /max_age must be a positive/],
        [
          () => selectRetention(good, policy({ keep_dayly: 1 } as RetentionRules), NOW),
          /unknown retention rule retention\.automated\.keep_dayly/,
        ],
        [
          () => selectRetention([...good, ...good], policy({}), NOW),
          /duplicate backup id a-2026-11-20T01:00/,
        ],
        [
          () => selectRetention([{ ...good[0]!, created: 'yesterday' }], policy({}), NOW),
          /invalid created time "yesterday"/,
        ],
        [() => selectRetention(good, policy({}), new Date(Number.NaN)), /now is not a valid date/],
        [
          () => selectRetention(good, policy({}), NOW, { timeZone: 'Mars/Olympus' }),
          /unknown time zone "Mars\/Olympus"/,
        ],
      ];
      for (const [fn, message] of cases)
        assert.throws(fn, (err: unknown) => {
          assert.ok(err instanceof InvalidArgumentError);
          assert.match(err.message, message);
          return true;
        });
    });
  });

  describe('resolvePolicy', () => {
    it('returns a fresh copy of a preset', () => {
      const p = resolvePolicy('advanced');
      assert.deepEqual(p, PRESETS.advanced);
      p.automated.keep_daily = 1;
      assert.equal(PRESETS.advanced.automated.keep_daily, 6);
    });

    it('replaces a preset tag as a whole and keeps the other', () => {
      assert.deepEqual(resolvePolicy({ preset: 'advanced', automated: { keep_daily: 7 } }), {
        manual: { keep_last: 4 },
        automated: { keep_daily: 7 },
      });
      assert.deepEqual(resolvePolicy({ preset: 'premium', manual: {} }), {
        manual: {},
        automated: { keep_6hourly: 4, keep_daily: 29, keep_monthly: 11 },
      });
    });

    it('keeps everything without a preset or rules', () => {
      assert.deepEqual(resolvePolicy(), { manual: {}, automated: {} });
      assert.deepEqual(resolvePolicy(retentionConfigSchema.parse({ restorable_days: 7 })), {
        manual: {},
        automated: {},
      });
      assert.deepEqual(resolvePolicy({ manual: { keep_last: 3 } }), {
        manual: { keep_last: 3 },
        automated: {},
      });
    });

    it('rejects an unknown preset', () => {
      assert.throws(
        () => resolvePolicy('gold' as 'premium'),
        (err: unknown) =>
          err instanceof InvalidArgumentError && /unknown retention preset "gold"/.test(err.message),
      );
    });
  });

  describe('retentionConfigSchema', () => {
    it('accepts a full section', () => {
      const cfg = retentionConfigSchema.parse({
        preset: 'advanced',
        automated: { keep_daily: 7, keep_weekly: 4, keep_monthly: 12, max_age: 31536000 },
        manual: { keep_last: 3 },
        restorable_days: 14,
        timezone: 'Europe/Berlin',
      });
      assert.deepEqual(resolvePolicy(cfg).automated, {
        keep_daily: 7,
        keep_weekly: 4,
        keep_monthly: 12,
        max_age: 31536000,
      });
      assert.deepEqual(retentionConfigSchema.parse({}), { timezone: 'UTC' });
    });

    it('rejects invalid sections with the path of the field', () => {
      const cases: Array<[unknown, Array<string | number>, RegExp?]> = [
        [{ automated: { keep_daily: -1 } }, ['automated', 'keep_daily']],
        [{ automated: { keep_daily: 2.5 } }, ['automated', 'keep_daily']],
        [{ manual: { max_age: 0 } }, ['manual', 'max_age']],
        [{ manual: { keep_last: '4' } }, ['manual', 'keep_last']],
        [{ preset: 'gold' }, ['preset']],
        [{ restorable_days: 0 }, ['restorable_days']],
        [{ restorable_days: '7' }, ['restorable_days']],
        [{ timezone: 'Mars/Olympus' }, ['timezone'], /IANA time zone/],
        [{ automated: { keep_dayly: 2 } }, ['automated'], /keep_dayly/],
        [{ keep_daily: 2 }, [], /keep_daily/],
      ];
      for (const [input, path, message] of cases) {
        const result = retentionConfigSchema.safeParse(input);
        assert.equal(result.success, false, JSON.stringify(input));
        const issue = result.error.issues[0];
        assert.deepEqual(issue!.path, path, JSON.stringify(input));
        if (message) assert.match(issue!.message, message);
      }
    });
  });

  describe('manual limits', () => {
    it('default to unlimited in production and 2 elsewhere; configured values win', () => {
      assert.equal(manualLimit('production'), Number.POSITIVE_INFINITY);
      assert.equal(manualLimit('staging'), 2);
      assert.equal(manualLimit('development'), DEFAULT_NON_PRODUCTION_MANUAL_LIMIT);
      assert.equal(manualLimit('production', 4), 4);
      assert.equal(manualLimit('staging', 5), 5);
      assert.equal(manualLimit('development', 0), 0);
      assert.throws(() => manualLimit('staging', -1), InvalidArgumentError);
      assert.throws(() => manualLimit('staging', 1.5), InvalidArgumentError);
    });

    it('count manual backups that hold a slot and name the oldest', () => {
      const backups = [
        backup('manual', '2026-11-19T10:00:00Z'),
        backup('manual', '2026-11-18T10:00:00Z'),
        backup('manual', '2026-11-17T10:00:00Z', 'failed'),
        backup('automated', '2026-11-16T10:00:00Z'),
      ];
      const cap = checkManualCapacity(backups, manualLimit('staging'));
      assert.deepEqual(cap, {
        count: 2,
        limit: 2,
        full: true,
        oldest: { id: 'm-2026-11-18T10:00', created: '2026-11-18T10:00:00.000Z' },
        replace: ['m-2026-11-18T10:00'],
      });
      const err = manualLimitError('shop-staging', 'staging', cap);
      assert.ok(err instanceof InvalidArgumentError);
      assert.equal(
        err.message,
        'environment "shop-staging" has 2 manual backups, the limit for staging environments is 2; ' +
          'the oldest is m-2026-11-18T10:00 (created 2026-11-18T10:00:00.000Z)',
      );
      assert.match(err.describe(), /--replace-oldest/);

      assert.deepEqual(checkManualCapacity(backups, manualLimit('production')).full, false);
      assert.deepEqual(checkManualCapacity(backups, 3), { ...cap, limit: 3, full: false, replace: [] });
      // A lowered limit: two must go for one more to fit.
      assert.deepEqual(checkManualCapacity(backups, 1).replace, ['m-2026-11-18T10:00', 'm-2026-11-19T10:00']);
      // Unfinished backups hold a slot but cannot be replaced.
      const busy = [backup('manual', '2026-11-20T09:00:00Z', 'in_progress'), backups[0]];
      assert.deepEqual(checkManualCapacity(busy as RetentionCandidate[], 2).replace, ['m-2026-11-19T10:00']);
      assert.deepEqual(checkManualCapacity([], 0), { count: 0, limit: 0, full: true, replace: [] });
    });
  });

  describe('isWithinRestorableWindow', () => {
    it('is inclusive at exactly restorable_days days', () => {
      const edge = new Date(NOW.getTime() - 7 * DAY).toISOString();
      const past = new Date(NOW.getTime() - 7 * DAY - 1).toISOString();
      assert.equal(isWithinRestorableWindow(edge, 7, NOW), true);
      assert.equal(isWithinRestorableWindow(past, 7, NOW), false);
      assert.equal(isWithinRestorableWindow(past, 14, NOW), true);
      assert.equal(isWithinRestorableWindow(NOW.toISOString(), 7, NOW), true);
      assert.equal(isWithinRestorableWindow('2026-11-21T00:00:00Z', 7, NOW), true);
    });

    it('is always true without a window and rejects bad input', () => {
      assert.equal(isWithinRestorableWindow('2000-01-01T00:00:00Z', undefined, NOW), true);
      assert.throws(() => isWithinRestorableWindow('2026-11-01T00:00:00Z', 0, NOW), InvalidArgumentError);
      assert.throws(() => isWithinRestorableWindow('2026-11-01T00:00:00Z', -7, NOW), InvalidArgumentError);
      assert.throws(() => isWithinRestorableWindow('soon', 7, NOW), /invalid created time "soon"/);
    });
  });

  describe('per location (selectCopyRetention)', () => {
    /** Hourly automated backups, both in `local` (primary) and `offsite`, oldest first. */
    const copies = (n: number, extra: Partial<CopyCandidate> = {}): CopyCandidate[] =>
      series(
        'automated',
        '2026-11-20T00:00:00Z',
        new Date(Date.parse('2026-11-20T00:00:00Z') + (n - 1) * HOUR).toISOString(),
        1,
      ).map((b) => ({ ...b, locations: ['local', 'offsite'], ...extra }));
    const rules =
      (map: Record<string, RetentionRules | undefined>) =>
      (location: string): LocationRetention | undefined =>
        map[location] ? { policy: policy(map[location]) } : undefined;
    const decision = (d: ReturnType<typeof selectCopyRetention>[number], location: string) =>
      d.locations.find((l) => l.location === location)!;

    it('decides each location by its own rules: the primary keeps 2, the off-site copy 5', () => {
      const input = copies(8);
      const out = selectCopyRetention(
        input,
        rules({ local: { keep_last: 2 }, offsite: { keep_last: 5 } }),
        NOW,
      );
      assert.equal(out.length, 8);
      assert.deepEqual(
        out.map((d) => d.id),
        ids(input).reverse(),
        'newest first',
      );
      assert.deepEqual(
        out.map((d) => [decision(d, 'local').keep, decision(d, 'offsite').keep]),
        [
          [true, true],
          [true, true],
          [false, true],
          [false, true],
          [false, true],
          [false, false],
          [false, false],
          [false, false],
        ],
      );
      // The backup stays while any location keeps its copy.
      assert.deepEqual(
        out.map((d) => d.keep),
        [true, true, true, true, true, false, false, false],
      );
      assert.deepEqual(out[0]!.reasons, ['last #1'], 'locations that agree give plain reasons');
      assert.deepEqual(out[2]!.reasons, [
        'local: not kept by any automated rule (last 2)',
        'offsite: last #3',
      ]);
    });

    it('counts only the copies a location holds: a copy pruned earlier does not use up its count', () => {
      const input = copies(4).map((b, i) => (i < 2 ? { ...b, locations: ['offsite'] } : b));
      const out = selectCopyRetention(
        input,
        rules({ local: { keep_last: 1 }, offsite: { keep_last: 3 } }),
        NOW,
      );
      // local holds the two newest and keeps one; offsite holds all four and keeps three.
      assert.deepEqual(
        out.map((d) => d.locations.map((l) => `${l.location}:${l.keep ? 'keep' : 'go'}`).join(' ')),
        ['local:keep offsite:keep', 'local:go offsite:keep', 'offsite:keep', 'offsite:go'],
      );
    });

    it('a location without rules of its own or of the environment keeps every copy', () => {
      const out = selectCopyRetention(copies(3), rules({ local: { keep_last: 1 } }), NOW);
      assert.ok(out.every((d) => decision(d, 'offsite').keep));
      assert.ok(out.every((d) => d.keep));
      assert.deepEqual(decision(out[2]!, 'offsite').reasons, ['no retention configured']);
      assert.equal(decision(out[2]!, 'local').keep, false);
    });

    it('never deletes the last usable copy of a backup that stays', () => {
      // The off-site copy of the oldest failed its verification; the primary's rules would drop it.
      const input = copies(3).map((b, i) => (i === 0 ? { ...b, unusable: ['offsite'] } : b));
      const out = selectCopyRetention(
        input,
        rules({ local: { keep_last: 1 }, offsite: { keep_last: 5 } }),
        NOW,
      );
      const oldest = out[2]!;
      assert.equal(decision(oldest, 'local').keep, true);
      assert.match(decision(oldest, 'local').reasons[0]!, /^only usable copy \(offsite unusable\)/);
      // When no location keeps it, the backup goes whole: nothing is kept for a backup nobody wants.
      const gone = selectCopyRetention(
        input,
        rules({ local: { keep_last: 1 }, offsite: { keep_last: 1 } }),
        NOW,
      );
      assert.equal(gone[2]!.keep, false);
    });

    it('leaves unfinished backups alone everywhere and removes failed ones everywhere', () => {
      const input: CopyCandidate[] = [
        ...copies(3),
        { ...backup('automated', '2026-11-20T05:00:00Z', 'in_progress'), locations: ['local', 'offsite'] },
        { ...backup('automated', '2026-11-20T04:00:00Z', 'failed'), locations: ['local'] },
      ];
      const out = selectCopyRetention(
        input,
        rules({ local: { keep_last: 1 }, offsite: { keep_last: 1 } }),
        NOW,
      );
      const running = out.find((d) => d.id === idOf('automated', '2026-11-20T05:00:00Z'))!;
      assert.equal(running.keep, true);
      assert.deepEqual(running.reasons, ['not finished (in_progress)']);
      const failed = out.find((d) => d.id === idOf('automated', '2026-11-20T04:00:00Z'))!;
      assert.equal(failed.keep, false);
      assert.deepEqual(failed.reasons, ['failed backup']);
      // The newest complete backup is kept by every location.
      const newest = out.find((d) => d.id === idOf('automated', '2026-11-20T02:00:00Z'))!;
      assert.ok(newest.locations.every((l) => l.keep));
    });

    it('a backup with no copy left goes', () => {
      const [b] = copies(1, { locations: [] });
      const out = selectCopyRetention([b!], rules({}), NOW);
      assert.deepEqual(out, [{ id: b!.id, keep: false, reasons: ['no copy left'], locations: [] }]);
    });
  });
});
