import { InvalidArgumentError } from '../shared/errors.js';
import type { EnvironmentConfig, RetentionConfig } from '../shared/config.js';

/**
 * Retention: which backups to keep and which to prune, decided by pure functions.
 *
 * Nothing here reads the catalog, the clock or storage: callers pass the backups,
 * the policy and `now`, and act on the answer (`backup:prune`, `backup:prune
 * --dry-run`, the manual-backup limit of `backup:create`, the `Restorable`
 * column).
 *
 * Rules come in the style of grandfather-father-son tools (restic `forget`,
 * borg `prune`, Proxmox prune options): `keep_last`, `keep_hourly`,
 * `keep_6hourly`, `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`,
 * plus `max_age`. They apply per tag: `manual` and `automated` backups are
 * selected separately, each by its own rules.
 *
 * Counting follows borg `prune` (and Proxmox): rules are applied in the order
 * last, hourly, 6-hourly, daily, weekly, monthly, yearly, and a backup already
 * kept by an earlier rule does not count towards a later one. So the counts of
 * a policy add up: with enough history, `keep_daily: 6, keep_weekly: 4,
 * keep_monthly: 11` keeps exactly 21 backups, whatever the weekday or the date
 * of `now`. (restic counts overlaps twice, so its totals vary with the clock.)
 */

const SECOND = 1000;
const HOUR = 3600 * SECOND;
const DAY = 24 * HOUR;

/** The names of the built-in presets. */
export const PRESET_NAMES = ['essential', 'advanced', 'premium'] as const;

/** A built-in preset: `essential`, `advanced` or `premium`. */
export type RetentionPreset = (typeof PRESET_NAMES)[number];

/** The tags a backup carries; retention rules apply per tag. */
export type BackupTag = 'manual' | 'automated';

/** The environment types of the config (`environments[].type`). */
export type EnvironmentType = EnvironmentConfig['type'];

/**
 * Retention rules for the backups of one tag. Every field is optional; an absent field, or a count of
 * 0, switches that rule off. A tag with no `keep_*` rule on keeps everything (`max_age` still applies).
 *
 * Counts are numbers of backups (non-negative integers); bucket rules keep the newest complete backup of
 * each of the N most recent buckets (hour, 6-hour block, day, ISO week, month, year in the selection's
 * time zone) that hold a backup not already kept by an earlier rule.
 */
export interface RetentionRules {
  /** Keep the N newest complete backups. */
  keep_last?: number;
  /** Keep the newest backup of each of the N most recent clock hours (`hourly 2026-11-20T13`). */
  keep_hourly?: number;
  /** Keep the newest backup of each of the N most recent 6-hour blocks: 00-06, 06-12, 12-18, 18-24. */
  keep_6hourly?: number;
  /** Keep the newest backup of each of the N most recent calendar days (`daily 2026-11-20`). */
  keep_daily?: number;
  /** Keep the newest backup of each of the N most recent ISO 8601 weeks, Monday to Sunday (`weekly 2026-W47`). */
  keep_weekly?: number;
  /** Keep the newest backup of each of the N most recent calendar months (`monthly 2026-11`). */
  keep_monthly?: number;
  /** Keep the newest backup of each of the N most recent calendar years (`yearly 2026`). */
  keep_yearly?: number;
  /**
   * Seconds. A hard cap: a backup created more than `max_age` seconds before `now` is removed even when a
   * `keep_*` rule would keep it (age exactly `max_age` is still kept). Use it for data that must not be
   * held longer; note that it removes the newest backups too once they are that old.
   */
  max_age?: number;
}

/** The retention of one environment: rules for manual and for automated backups. */
export interface RetentionPolicy {
  manual: RetentionRules;
  automated: RetentionRules;
}

/**
 * The built-in presets, after the plans of the reference platforms.
 *
 * | preset      | manual         | automated                                                      |
 * | ----------- | -------------- | -------------------------------------------------------------- |
 * | `essential` | `keep_last: 2` | 2 = `keep_daily: 2`                                            |
 * | `advanced`  | `keep_last: 4` | 21 = `keep_daily: 6` + `keep_weekly: 4` + `keep_monthly: 11`   |
 * | `premium`   | `keep_last: 4` | 44 = `keep_6hourly: 4` + `keep_daily: 29` + `keep_monthly: 11` |
 *
 * The totals (2/2, 4/21, 4/44) are the platforms' documented counts; the splits are envsnap's. Advanced:
 * six days, then four weeks (together about the first five weeks), then eleven months, so a year is
 * covered at one point a month at least. Premium: one day in 6-hour steps, then 29 days (the first
 * month at daily steps), then eleven months (the rest of the year). Because earlier rules' backups do
 * not count towards later ones, a long enough history keeps exactly these totals.
 */
export const PRESETS: Readonly<Record<RetentionPreset, Readonly<RetentionPolicy>>> = deepFreeze({
  essential: { manual: { keep_last: 2 }, automated: { keep_daily: 2 } },
  advanced: { manual: { keep_last: 4 }, automated: { keep_daily: 6, keep_weekly: 4, keep_monthly: 11 } },
  premium: { manual: { keep_last: 4 }, automated: { keep_6hourly: 4, keep_daily: 29, keep_monthly: 11 } },
});

/** Manual backups an environment that is not production may hold by default (the reference platforms' 2). */
export const DEFAULT_NON_PRODUCTION_MANUAL_LIMIT = 2;

/** The parts of a `retention` config section that make the policy. */
export type PolicyConfig = Pick<RetentionConfig, 'preset' | 'manual' | 'automated'>;

/**
 * The policy for a preset name or a `retention` config section.
 *
 * Merge rule: start from the preset's rules (no preset: no rules, which keeps everything); then each
 * tag given in the config (`manual`, `automated`) replaces that tag's rules as a whole; fields are not
 * merged one by one. So `{ preset: 'advanced', automated: { keep_daily: 7 } }` keeps 4 manual backups
 * and 7 daily automated ones, with no weekly or monthly rule; `automated: {}` keeps every automated
 * backup. The result is a fresh copy, never the frozen preset.
 *
 * @throws InvalidArgumentError for an unknown preset or a rule that is not a non-negative integer
 *   (`max_age`: a positive integer).
 */
export function resolvePolicy(config?: RetentionPreset | PolicyConfig): RetentionPolicy {
  const cfg: PolicyConfig = typeof config === 'string' ? { preset: config } : (config ?? {});
  let base: RetentionPolicy = { manual: {}, automated: {} };
  if (cfg.preset !== undefined) {
    if (!(PRESET_NAMES as readonly string[]).includes(cfg.preset))
      throw new InvalidArgumentError(`unknown retention preset "${String(cfg.preset)}"`, {
        hint: `use one of ${PRESET_NAMES.join(', ')}`,
      });
    base = PRESETS[cfg.preset];
  }
  const policy: RetentionPolicy = {
    manual: { ...(cfg.manual ?? base.manual) },
    automated: { ...(cfg.automated ?? base.automated) },
  };
  validatePolicy(policy);
  return policy;
}

/** What {@link selectRetention} needs of a backup; `BackupRecord` fits. */
export interface RetentionCandidate {
  id: string;
  /** ISO 8601 time the backup was started. */
  created: string;
  tag: BackupTag;
  /** `complete`, `failed`, `pending` or `in_progress`. */
  status: string;
}

/** A backup that stays, with every reason (see {@link selectRetention}). */
export interface KeptBackup {
  id: string;
  reasons: string[];
}

/** A backup to delete, with the reason. */
export interface RemovedBackup {
  id: string;
  reason: string;
}

/** The answer of {@link selectRetention}; both lists newest first. */
export interface RetentionSelection {
  keep: KeptBackup[];
  remove: RemovedBackup[];
}

/** Options of {@link selectRetention}. */
export interface SelectOptions {
  /** IANA time zone for bucket boundaries (days, weeks, ...); default `UTC`. */
  timeZone?: string;
}

type BucketRule =
  'keep_hourly' | 'keep_6hourly' | 'keep_daily' | 'keep_weekly' | 'keep_monthly' | 'keep_yearly';

/** Bucket rules in the order they are applied, with the label their reasons start with. */
const BUCKET_RULES: ReadonlyArray<readonly [BucketRule, string]> = [
  ['keep_hourly', 'hourly'],
  ['keep_6hourly', '6-hourly'],
  ['keep_daily', 'daily'],
  ['keep_weekly', 'weekly'],
  ['keep_monthly', 'monthly'],
  ['keep_yearly', 'yearly'],
];

const COUNT_RULES = ['keep_last', ...BUCKET_RULES.map(([rule]) => rule)] as const;

interface Dated extends RetentionCandidate {
  time: number;
  keys: Record<BucketRule, string>;
}

/**
 * Which backups retention keeps and which it removes.
 *
 * Per tag, only `complete` backups are selected, newest first:
 * - `max_age` first removes every backup older than `now - max_age` (reason `older than max_age 30d`),
 *   whatever the other rules say;
 * - `keep_last N` keeps the N newest (reason `last #1`, `last #2`, ...);
 * - then each bucket rule, in the order hourly, 6-hourly, daily, weekly, monthly, yearly, walks the
 *   buckets holding a backup, newest first, and keeps the newest backup of each until it has kept N. A
 *   bucket whose newest backup an earlier rule already kept does not count towards N (as in borg
 *   `prune`), so a policy's counts add up;
 * - a tag without any `keep_*` rule keeps all its backups (reason `no retention rules` or
 *   `within max_age 30d`).
 *
 * Reasons name the rule and the bucket, in rule order: `daily 2026-11-20`, `weekly 2026-W47`,
 * `6-hourly 2026-11-20T06`. The first reason is the rule that counted the backup; any further ones are
 * buckets it also stands for that did not use up their rule's count.
 *
 * Every input backup is in exactly one of the lists. `failed` backups are always removed (reason
 * `failed backup`); backups in any other state (`pending`, `in_progress`) are never touched and are kept
 * with reason `not finished (<status>)`. Ties on `created` are broken by id, higher first.
 *
 * Buckets are the wall-clock parts of `created` in `opts.timeZone` (default UTC): a backup at 23:30 UTC
 * is on the next day in Europe/Berlin. When clocks go back, the repeated hour is one hourly bucket.
 *
 * @throws InvalidArgumentError for an invalid `now`, `created`, time zone or rule, or a duplicate id.
 */
export function selectRetention(
  backups: readonly RetentionCandidate[],
  policy: RetentionPolicy,
  now: Date,
  opts: SelectOptions = {},
): RetentionSelection {
  validatePolicy(policy);
  const nowMs = now.getTime();
  if (!Number.isFinite(nowMs)) throw new InvalidArgumentError('now is not a valid date');
  const fmt = formatter(opts.timeZone ?? 'UTC');

  const seen = new Set<string>();
  const dated: Dated[] = backups.map((b) => {
    if (seen.has(b.id)) throw new InvalidArgumentError(`duplicate backup id ${b.id}`);
    seen.add(b.id);
    const time = Date.parse(b.created);
    if (!Number.isFinite(time))
      throw new InvalidArgumentError(`backup ${b.id} has an invalid created time "${b.created}"`);
    return { ...b, time, keys: bucketKeys(fmt, time) };
  });
  dated.sort((a, b) => b.time - a.time || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));

  const kept = new Map<string, string[]>();
  const removed = new Map<string, string>();
  for (const b of dated) {
    if (b.status === 'failed') removed.set(b.id, 'failed backup');
    else if (b.status !== 'complete') kept.set(b.id, [`not finished (${b.status})`]);
  }
  for (const tag of ['manual', 'automated'] as const) {
    const complete = dated.filter((b) => b.tag === tag && b.status === 'complete');
    selectTag(complete, policy[tag], tag, nowMs, kept, removed);
  }

  const keep: KeptBackup[] = [];
  const remove: RemovedBackup[] = [];
  for (const b of dated) {
    const reasons = kept.get(b.id);
    if (reasons) keep.push({ id: b.id, reasons });
    else remove.push({ id: b.id, reason: removed.get(b.id) ?? 'not selected' });
  }
  return { keep, remove };
}

/** The retention that governs one location's copies of an environment's backups. */
export interface LocationRetention {
  policy: RetentionPolicy;
  /** IANA time zone of the buckets; default `UTC`. */
  timeZone?: string;
}

/** What {@link selectCopyRetention} needs of a backup: a {@link RetentionCandidate} and where its copies are. */
export interface CopyCandidate extends RetentionCandidate {
  /**
   * The locations the backup was written to and not pruned from, primary first (a replica still to
   * be copied counts: it is owed).
   */
  locations: readonly string[];
  /**
   * Of `locations`, those whose copy cannot serve a restore now: a replica not (yet) complete, or a
   * copy whose last conclusive verification failed.
   */
  unusable?: readonly string[];
}

/** One location's decision on one backup's copy. */
export interface CopyDecision {
  location: string;
  keep: boolean;
  reasons: string[];
}

/** The answer of {@link selectCopyRetention} for one backup. */
export interface BackupCopiesDecision {
  id: string;
  /** The backup stays (in the catalog): at least one location keeps its copy. */
  keep: boolean;
  /** The location's reasons when every location agrees, else each prefixed with `<location>: `. */
  reasons: string[];
  /** Per location of the candidate, in its order. */
  locations: CopyDecision[];
}

/**
 * Per-location retention: each location decides on its own copies by its own rules, so that, say,
 * the off-site copy is kept longer than the primary one.
 *
 * For each location, the candidates are the backups holding (or owed) a copy there, and
 * {@link selectRetention} decides with `rulesFor(location)` (`undefined`: no retention there, keep
 * every copy with reason `no retention configured`). A backup stays while any location keeps its
 * copy; it goes when none does (or it has no location left: reason `no copy left`).
 *
 * Safety, on top of {@link selectRetention}'s (unfinished backups are never touched): a backup that
 * stays never loses its last usable copy. When every copy kept is `unusable` (failed its verification,
 * or a replica not yet complete), the usable copies the rules would delete are kept too, with reason
 * `only usable copy (<locations> unusable)`.
 *
 * Returns one decision per input backup, newest first (ties broken by id, higher first).
 *
 * @throws InvalidArgumentError as {@link selectRetention} does.
 */
export function selectCopyRetention(
  backups: readonly CopyCandidate[],
  rulesFor: (location: string) => LocationRetention | undefined,
  now: Date,
): BackupCopiesDecision[] {
  const perBackup = new Map<string, Map<string, CopyDecision>>(
    backups.map((b) => [b.id, new Map<string, CopyDecision>()]),
  );
  const locations = [...new Set(backups.flatMap((b) => b.locations))];
  for (const location of locations) {
    const here = backups.filter((b) => b.locations.includes(location));
    const rules = rulesFor(location);
    if (!rules) {
      for (const b of here)
        perBackup.get(b.id)!.set(location, { location, keep: true, reasons: ['no retention configured'] });
      continue;
    }
    const sel = selectRetention(here, rules.policy, now, rules.timeZone ? { timeZone: rules.timeZone } : {});
    for (const k of sel.keep)
      perBackup.get(k.id)!.set(location, { location, keep: true, reasons: k.reasons });
    for (const r of sel.remove)
      perBackup.get(r.id)!.set(location, { location, keep: false, reasons: [r.reason] });
  }

  const sorted = [...backups].sort(
    (a, b) => Date.parse(b.created) - Date.parse(a.created) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0),
  );
  return sorted.map((b) => {
    const decisions = b.locations.map((l) => perBackup.get(b.id)!.get(l)!);
    if (decisions.length === 0) return { id: b.id, keep: false, reasons: ['no copy left'], locations: [] };
    const unusable = new Set(b.unusable ?? []);
    const kept = decisions.filter((d) => d.keep);
    if (kept.length > 0 && kept.every((d) => unusable.has(d.location))) {
      const bad = kept.map((d) => d.location).join(', ');
      for (const d of decisions) {
        if (d.keep || unusable.has(d.location)) continue;
        d.keep = true;
        d.reasons = [`only usable copy (${bad} unusable)`, ...d.reasons.map((r) => `overrides: ${r}`)];
      }
    }
    const first = decisions[0]!;
    const agree = decisions.every(
      (d) => d.keep === first.keep && d.reasons.join('\n') === first.reasons.join('\n'),
    );
    return {
      id: b.id,
      keep: decisions.some((d) => d.keep),
      reasons: agree
        ? [...first.reasons]
        : decisions.flatMap((d) => d.reasons.map((r) => `${d.location}: ${r}`)),
      locations: decisions,
    };
  });
}

/** Applies one tag's rules to its complete backups (newest first), filling `kept` and `removed`. */
function selectTag(
  complete: Dated[],
  rules: RetentionRules,
  tag: BackupTag,
  nowMs: number,
  kept: Map<string, string[]>,
  removed: Map<string, string>,
): void {
  let candidates = complete;
  if (rules.max_age !== undefined) {
    const cutoff = nowMs - rules.max_age * SECOND;
    const age = formatSeconds(rules.max_age);
    candidates = [];
    for (const b of complete) {
      if (b.time < cutoff) removed.set(b.id, `older than max_age ${age}`);
      else candidates.push(b);
    }
  }
  const active = COUNT_RULES.filter((rule) => (rules[rule] ?? 0) > 0);
  if (active.length === 0) {
    const reason =
      rules.max_age === undefined ? 'no retention rules' : `within max_age ${formatSeconds(rules.max_age)}`;
    for (const b of candidates) kept.set(b.id, [reason]);
    return;
  }

  const keepLast = rules.keep_last ?? 0;
  candidates.slice(0, keepLast).forEach((b, i) => kept.set(b.id, [`last #${i + 1}`]));

  /** Per rule: bucket key to the backup standing for it, for buckets the rule reached. */
  const reached = new Map<BucketRule, Map<string, string>>();
  for (const [rule, label] of BUCKET_RULES) {
    const n = rules[rule] ?? 0;
    if (n === 0) continue;
    const buckets = new Map<string, string>();
    reached.set(rule, buckets);
    let counted = 0;
    for (const b of candidates) {
      const key = b.keys[rule];
      if (buckets.has(key)) continue;
      buckets.set(key, b.id);
      const reasons = kept.get(b.id);
      if (reasons) {
        reasons.push(`${label} ${key}`);
        continue;
      }
      kept.set(b.id, [`${label} ${key}`]);
      if (++counted === n) break;
    }
  }

  const summary = active
    .map((rule) => `${rule === 'keep_last' ? 'last' : labelOf(rule)} ${rules[rule]}`)
    .join(', ');
  for (const b of candidates) {
    if (kept.has(b.id)) continue;
    let reason = `not kept by any ${tag} rule (${summary})`;
    for (const [rule, label] of BUCKET_RULES) {
      const by = reached.get(rule)?.get(b.keys[rule]);
      if (by !== undefined) {
        reason = `${label} ${b.keys[rule]} is kept by newer backup ${by}`;
        break;
      }
    }
    removed.set(b.id, reason);
  }
}

function labelOf(rule: BucketRule): string {
  return BUCKET_RULES.find(([r]) => r === rule)![1];
}

/**
 * The manual-backup limit `backup:create` enforces for an environment type.
 *
 * `configured` (the environment's `manual_limit`) wins when given; otherwise production is
 * unlimited (`Infinity`: its manual backups are rotated by the policy's manual rules at prune time)
 * and staging and development allow {@link DEFAULT_NON_PRODUCTION_MANUAL_LIMIT} (2), as on the
 * reference platforms. To refuse at create time in production too, configure its `manual_limit` (for
 * example to the preset's manual `keep_last`).
 *
 * @throws InvalidArgumentError when `configured` is not a non-negative integer.
 */
export function manualLimit(envType: EnvironmentType, configured?: number): number {
  if (configured !== undefined) {
    if (!Number.isSafeInteger(configured) || configured < 0)
      throw new InvalidArgumentError(`manual backup limit must be a non-negative integer, got ${configured}`);
    return configured;
  }
  return envType === 'production' ? Number.POSITIVE_INFINITY : DEFAULT_NON_PRODUCTION_MANUAL_LIMIT;
}

/** What {@link checkManualCapacity} found. */
export interface ManualCapacity {
  /** Manual backups that take a slot: every state but `failed`. */
  count: number;
  limit: number;
  /** True when one more manual backup would exceed the limit. */
  full: boolean;
  /** The oldest complete manual backup, if any (what `--replace-oldest` deletes first). */
  oldest?: { id: string; created: string };
  /**
   * Complete manual backups, oldest first, that `--replace-oldest` must delete so that one more fits;
   * empty when not full. Shorter than needed when in-flight backups hold the slots.
   */
  replace: string[];
}

/**
 * Whether an environment has room for one more manual backup under `limit` (see {@link manualLimit}).
 * `backups` are the environment's backups (any tag; only `manual` ones are counted).
 */
export function checkManualCapacity(backups: readonly RetentionCandidate[], limit: number): ManualCapacity {
  const manual = backups.filter((b) => b.tag === 'manual' && b.status !== 'failed');
  const complete = manual
    .filter((b) => b.status === 'complete')
    .sort(
      (a, b) => Date.parse(a.created) - Date.parse(b.created) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
    );
  const full = manual.length + 1 > limit;
  const excess = full ? manual.length + 1 - limit : 0;
  const oldest = complete[0];
  return {
    count: manual.length,
    limit,
    full,
    ...(oldest ? { oldest: { id: oldest.id, created: oldest.created } } : {}),
    replace: complete.slice(0, excess).map((b) => b.id),
  };
}

/**
 * The error `backup:create` raises over the limit: it names the environment, the limit and the oldest
 * manual backup, and hints at `--replace-oldest`.
 */
export function manualLimitError(
  environment: string,
  envType: EnvironmentType,
  capacity: ManualCapacity,
): InvalidArgumentError {
  const oldest = capacity.oldest
    ? `; the oldest is ${capacity.oldest.id} (created ${capacity.oldest.created})`
    : '';
  return new InvalidArgumentError(
    `environment "${environment}" has ${capacity.count} manual backups, the limit for ${envType} environments is ${capacity.limit}${oldest}`,
    { hint: 'pass --replace-oldest to delete the oldest manual backup and create the new one' },
  );
}

/**
 * Whether a backup created at `created` (ISO 8601) can still be restored at `now`: its age is at most
 * `restorableDays` days of 24 hours (the edge itself is inside). `undefined` means no window: always.
 *
 * @throws InvalidArgumentError for an invalid `created` or `now`, or a `restorableDays` that is not
 *   positive.
 */
export function isWithinRestorableWindow(
  created: string,
  restorableDays: number | undefined,
  now: Date,
): boolean {
  const time = Date.parse(created);
  if (!Number.isFinite(time)) throw new InvalidArgumentError(`invalid created time "${created}"`);
  if (!Number.isFinite(now.getTime())) throw new InvalidArgumentError('now is not a valid date');
  if (restorableDays === undefined) return true;
  if (!Number.isFinite(restorableDays) || restorableDays <= 0)
    throw new InvalidArgumentError(`restorable_days must be a positive number, got ${restorableDays}`);
  return now.getTime() - time <= restorableDays * DAY;
}

function validatePolicy(policy: RetentionPolicy): void {
  for (const tag of ['manual', 'automated'] as const) {
    const rules = policy[tag] as Record<string, unknown> | undefined;
    if (rules === null || typeof rules !== 'object')
      throw new InvalidArgumentError(`retention.${tag} must be an object of rules`);
    for (const [key, value] of Object.entries(rules)) {
      if (value === undefined) continue;
      if (key === 'max_age') {
        if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)
          throw new InvalidArgumentError(`retention.${tag}.max_age must be a positive number of seconds`);
      } else if ((COUNT_RULES as readonly string[]).includes(key)) {
        if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0)
          throw new InvalidArgumentError(`retention.${tag}.${key} must be a non-negative integer`);
      } else {
        throw new InvalidArgumentError(`unknown retention rule retention.${tag}.${key}`, {
          hint: `rules are ${[...COUNT_RULES, 'max_age'].join(', ')}`,
        });
      }
    }
  }
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** A cached formatter giving wall-clock year, month, day and hour (00-23) in `timeZone`. */
function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-US', {
        timeZone,
        year: 'numeric',
        month: '2-digit',
        day: '2-digit',
        hour: '2-digit',
        hourCycle: 'h23',
      });
    } catch (err) {
      throw new InvalidArgumentError(`unknown time zone "${timeZone}"`, {
        cause: err,
        hint: 'use an IANA name such as UTC or Europe/Berlin',
      });
    }
    formatters.set(timeZone, f);
  }
  return f;
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** The bucket keys of an instant, from its wall-clock parts in the formatter's time zone. */
function bucketKeys(fmt: Intl.DateTimeFormat, time: number): Record<BucketRule, string> {
  const parts: Record<string, number> = {};
  for (const p of fmt.formatToParts(time)) if (p.type !== 'literal') parts[p.type] = Number(p.value);
  const { year, month, day } = parts as { year: number; month: number; day: number };
  const hour = (parts.hour ?? 0) % 24;
  const date = `${pad(year, 4)}-${pad(month)}-${pad(day)}`;
  const week = isoWeek(year, month, day);
  return {
    keep_hourly: `${date}T${pad(hour)}`,
    keep_6hourly: `${date}T${pad(hour - (hour % 6))}`,
    keep_daily: date,
    keep_weekly: `${pad(week.year, 4)}-W${pad(week.week)}`,
    keep_monthly: `${pad(year, 4)}-${pad(month)}`,
    keep_yearly: pad(year, 4),
  };
}

/** ISO 8601 week of a calendar date: weeks start on Monday; week 1 holds the year's first Thursday. */
function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const date = Date.UTC(year, month - 1, day);
  const weekday = (new Date(date).getUTCDay() + 6) % 7; // Monday 0 ... Sunday 6
  const thursday = new Date(date + (3 - weekday) * DAY);
  const isoYear = thursday.getUTCFullYear();
  return { year: isoYear, week: 1 + Math.floor((thursday.getTime() - Date.UTC(isoYear, 0, 1)) / (7 * DAY)) };
}

/** `86400` → `1d`, `7200` → `2h`, `90` → `90s`. */
function formatSeconds(seconds: number): string {
  if (seconds % 86400 === 0) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  return `${seconds}s`;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
