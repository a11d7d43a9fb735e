import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import cron from 'node-cron';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { parseAddress, type Address } from './address.js';
import { ConfigError, ConfigUnreadableError } from './errors.js';

// The address helpers live in address.ts (the CLI needs them without zod and yaml); re-exported
// here for the processes that read a config file anyway.
export { formatAddress, parseAddress, type Address } from './address.js';

/**
 * The envsnap configuration file (YAML), declared once.
 *
 * One file may hold every section; each process reads the ones it needs:
 * the controller `controller`, `storage` and `environments`; the agent `agent`;
 * the CLI `cli.controller`, else `agent.controller`, else `controller.listen`.
 * Every field is documented in README.md ("Configuration").
 */

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/i;
const name = (what: string) =>
  z
    .string()
    .regex(NAME, `${what} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`);

/** `host:port` (IPv6 as `[::1]:7700`); port 0 lets the OS choose (tests). */
const address = z.string().refine((s) => parseAddress(s) !== undefined, {
  message: 'must be host:port, e.g. 127.0.0.1:7700',
});

const absolutePath = z.string().refine((p) => isAbsolute(p), { message: 'must be an absolute path' });

/** The name of an environment variable (holding a secret). */
const envVarName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');

const connectionSchema = z
  .object({
    host: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    socket: absolutePath.optional(),
    user: z.string().min(1).optional(),
    password_file: absolutePath.optional(),
    password_env: envVarName.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (!c.socket && !c.host) ctx.addIssue({ code: 'custom', message: 'needs host and port, or socket' });
    if (c.host && c.port === undefined)
      ctx.addIssue({ code: 'custom', path: ['port'], message: 'is required with host' });
    if (c.password_file && c.password_env)
      ctx.addIssue({ code: 'custom', message: 'takes password_file or password_env, not both' });
  });

const serviceSchema = z
  .object({
    name: name('service name'),
    kind: z.enum(['mariadb', 'mysql', 'postgresql', 'redis']),
    nodes: z.array(name('node id')).min(1, 'must list at least one node'),
    connection: connectionSchema,
    databases: z.array(z.string().min(1).max(64)).optional(),
    /**
     * HA groups: the nodes to dump from, in order of preference; the first
     * connected one gets the dump lock. Default: `nodes` in their order.
     */
    dump_from: z.array(name('node id')).min(1).optional(),
  })
  .strict()
  .superRefine((s, ctx) => {
    for (const [i, n] of (s.dump_from ?? []).entries()) {
      if (!s.nodes.includes(n))
        ctx.addIssue({ code: 'custom', path: ['dump_from', i], message: `node "${n}" is not in nodes` });
    }
  });

/** One hook command: run with `/bin/sh -c` on each listed node. */
const hookSchema = z
  .object({
    nodes: z.array(name('node id')).min(1, 'must list at least one node'),
    command: z.string().min(1),
    /** Seconds before the command is killed and counts as failed. */
    timeout: z.number().positive().default(60),
  })
  .strict();

const hooksSchema = z
  .object({
    /** Before a consistent backup or db-dump: e.g. maintenance mode on, cron and consumers stopped. */
    quiesce: z.array(hookSchema).default([]),
    /** After it, always (success, failure, cancellation), and by the agents' watchdog. */
    resume: z.array(hookSchema).default([]),
    /** After a successful restore into this environment: e.g. re-sync a search index, flush a cache. */
    post_restore: z.array(hookSchema).default([]),
  })
  .strict();

const mountSchema = z
  .object({
    name: name('mount name'),
    node: name('node id'),
    path: absolutePath.refine((p) => p !== '/', { message: 'must not be the root directory' }),
    exclude: z.array(z.string().min(1)).optional(),
  })
  .strict();

/** A cron spec (5 fields, or 6 with seconds) as node-cron reads it. */
const cronSpec = z.string().refine((s) => cron.validate(s), { message: 'is not a valid cron expression' });

const timeZone = z.string().refine(
  (tz) => {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  },
  { message: 'is not an IANA time zone (e.g. Europe/Berlin)' },
);

const scheduleSchema = z
  .object({
    cron: cronSpec,
    timezone: timeZone.default('UTC'),
    /** Automated backups are live (no quiesce) unless set to false. */
    live: z.boolean().default(true),
    /** Up to this many seconds of random delay, so that equal specs do not start in the same second. */
    jitter: z.number().min(0).max(3600).default(0),
  })
  .strict();

const count = z.number().int().min(0);
const retentionRulesSchema = z
  .object({
    keep_last: count.optional(),
    keep_hourly: count.optional(),
    keep_6hourly: count.optional(),
    keep_daily: count.optional(),
    keep_weekly: count.optional(),
    keep_monthly: count.optional(),
    keep_yearly: count.optional(),
    /** Seconds. */
    max_age: z.number().positive().optional(),
  })
  .strict();

/**
 * The `retention` section of an environment (see controller/retention.ts and the README's Retention).
 * Unknown keys are rejected, so a typo such as `keep_dayly` fails with its path.
 */
export const retentionConfigSchema = z
  .object({
    preset: z.enum(['essential', 'advanced', 'premium']).optional(),
    manual: retentionRulesSchema.optional(),
    automated: retentionRulesSchema.optional(),
    /** Days during which a backup can be restored; older ones show Restorable: false. */
    restorable_days: z.number().positive().optional(),
    /** Time zone of the daily/weekly/... buckets. */
    timezone: timeZone.default('UTC'),
  })
  .strict();

/**
 * The `retention` of a storage location: the same rules as an environment's (without
 * `restorable_days`, which belongs to the backup), replacing them for that location's copies.
 */
const locationRetentionSchema = retentionConfigSchema.omit({ restorable_days: true });

const environmentSchema = z
  .object({
    name: name('environment name'),
    type: z.enum(['production', 'staging', 'development']).default('production'),
    active: z.boolean().default(true),
    storage: z.array(z.string()).optional(),
    services: z.array(serviceSchema).default([]),
    mounts: z.array(mountSchema).default([]),
    schedules: z.array(scheduleSchema).default([]),
    /** Seconds: a scheduled run missed while the controller was down is run at start-up if this young. */
    catch_up: z.number().min(0).default(3600),
    retention: retentionConfigSchema.optional(),
    /** Most manual backups kept; default: unlimited for production, 2 otherwise. */
    manual_limit: z.number().int().min(1).optional(),
    hooks: hooksSchema.default({ quiesce: [], resume: [], post_restore: [] }),
    /**
     * Seconds: the longest the site may stay quiesced. An agent that has not
     * been told to resume after this long runs the resume hooks by itself.
     */
    max_pause: z.number().positive().default(600),
    /**
     * What backups record for restore drills (README, "Restore drills"): `checksums` (row counts and
     * table checksums, key counts, file counts and content hashes), `counts` (counts only), `off`.
     */
    drill_stats: z.enum(['checksums', 'counts', 'off']).default('checksums'),
    /** When the newest complete backup is drilled (cron spec, controller's time zone); off when absent. */
    drill_schedule: cronSpec.optional(),
  })
  .strict()
  .superRefine((e, ctx) => {
    if (e.hooks.quiesce.length > 0 && e.hooks.resume.length === 0)
      ctx.addIssue({
        code: 'custom',
        path: ['hooks', 'resume'],
        message: 'is required when quiesce hooks are set (the site must be resumed)',
      });
  });

const localStorageSchema = z
  .object({
    name: name('storage name'),
    type: z.literal('local'),
    path: absolutePath,
    retention: locationRetentionSchema.optional(),
  })
  .strict();

/**
 * An S3 bucket (AWS S3 or S3-compatible: MinIO, Ceph RGW, ...). Credentials:
 * `access_key_id` with `secret_access_key_file` or `secret_access_key_env`,
 * else the standard AWS chain (environment, shared files, instance role).
 */
const s3StorageSchema = z
  .object({
    name: name('storage name'),
    type: z.literal('s3'),
    bucket: z.string().min(3).max(63),
    prefix: z.string().optional(),
    region: z.string().min(1).optional(),
    endpoint: z.url().optional(),
    force_path_style: z.boolean().default(false),
    access_key_id: z.string().min(1).optional(),
    secret_access_key_file: absolutePath.optional(),
    secret_access_key_env: envVarName.optional(),
    server_side_encryption: z.enum(['AES256', 'aws:kms', 'aws:kms:dsse']).optional(),
    storage_class: z.string().min(1).optional(),
    retention: locationRetentionSchema.optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const secret = c.secret_access_key_file !== undefined || c.secret_access_key_env !== undefined;
    if (c.access_key_id !== undefined && !secret)
      ctx.addIssue({
        code: 'custom',
        message: 'access_key_id needs secret_access_key_file or secret_access_key_env',
      });
    if (c.access_key_id === undefined && secret)
      ctx.addIssue({
        code: 'custom',
        path: ['access_key_id'],
        message: 'is required with a secret access key',
      });
  });

const storageSchema = z.discriminatedUnion('type', [localStorageSchema, s3StorageSchema]);

const compression = z.enum(['zstd', 'gzip']);

const controllerSchema = z
  .object({
    listen: address.default('127.0.0.1:7700'),
    metrics_listen: address.optional(),
    state_dir: absolutePath,
    default_compression: compression.default('zstd'),
    /** Seconds to wait on SIGTERM for running jobs before aborting them. */
    shutdown_timeout: z.number().positive().default(30),
    /** Seconds between agent heartbeats. */
    heartbeat_interval: z.number().positive().default(5),
    /** When retention is applied besides after each backup (cron spec, controller's time zone). */
    prune_schedule: cronSpec.default('17 * * * *'),
    /** When every complete backup is verified (cron spec, controller's time zone); off when absent. */
    verify_schedule: cronSpec.optional(),
    /** Seconds between passes that copy failed replicas again from the primary (doubling per failure, up to 1 h). */
    replica_retry_interval: z.number().positive().default(60),
    /** Seconds a dump lock lease lasts without renewal (the holder's heartbeats renew it). */
    lease_ttl: z.number().positive().default(30),
    /** How many nodes of an HA group a dump is tried on before the backup fails. */
    dump_attempts: z.number().int().min(1).max(20).default(3),
  })
  .strict();

const agentSchema = z
  .object({
    node_id: name('node id'),
    controller: address,
    metrics_listen: address.optional(),
    work_dir: absolutePath,
    /** How many artifacts this agent produces at once. */
    concurrency: z.number().int().min(1).max(64).default(4),
    /** zstd level (1-19); 3 is zstd's own default. */
    zstd_level: z.number().int().min(1).max(19).default(3),
    /** zstd worker threads; 0 means one per core (`zstd -T0`). */
    zstd_threads: z.number().int().min(0).max(256).default(0),
    /**
     * An age identity file (`age-keygen -o FILE`): artifacts are encrypted to
     * its recipient before they leave the agent, and decrypted with it on
     * restore. Never stored with the backups.
     */
    encryption_key_file: absolutePath.optional(),
    /**
     * Write and read the controller's local locations straight when this
     * node proves it shares the directory (same disk, or an NFS share of
     * it: the controller's marker file at the same path, owned by this
     * user, and writable); off: their bytes always go through the controller.
     */
    direct_local_storage: z.boolean().default(true),
  })
  .strict();

const cliSchema = z.object({ controller: address.optional() }).strict();

const fileSchema = z
  .object({
    controller: controllerSchema.optional(),
    storage: z.array(storageSchema).optional(),
    environments: z.array(environmentSchema).optional(),
    agent: agentSchema.optional(),
    cli: cliSchema.optional(),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const storageNames = new Set<string>();
    cfg.storage?.forEach((s, i) => {
      if (storageNames.has(s.name))
        ctx.addIssue({
          code: 'custom',
          path: ['storage', i, 'name'],
          message: `duplicate storage "${s.name}"`,
        });
      storageNames.add(s.name);
    });
    const envNames = new Set<string>();
    cfg.environments?.forEach((env, i) => {
      if (envNames.has(env.name))
        ctx.addIssue({
          code: 'custom',
          path: ['environments', i, 'name'],
          message: `duplicate environment "${env.name}"`,
        });
      envNames.add(env.name);
      const names = new Set<string>();
      env.services.forEach((s, j) => {
        if (names.has(s.name))
          ctx.addIssue({
            code: 'custom',
            path: ['environments', i, 'services', j, 'name'],
            message: `duplicate name "${s.name}"`,
          });
        names.add(s.name);
      });
      env.mounts.forEach((m, j) => {
        if (names.has(m.name))
          ctx.addIssue({
            code: 'custom',
            path: ['environments', i, 'mounts', j, 'name'],
            message: `duplicate name "${m.name}" (service and mount names share one namespace)`,
          });
        names.add(m.name);
      });
      env.storage?.forEach((s, j) => {
        if (!storageNames.has(s))
          ctx.addIssue({
            code: 'custom',
            path: ['environments', i, 'storage', j],
            message: `unknown storage "${s}"`,
          });
      });
    });
  });

type FileConfig = z.infer<typeof fileSchema>;
export type ConnectionConfig = z.infer<typeof connectionSchema>;
export type ServiceConfig = z.infer<typeof serviceSchema>;
export type MountConfig = z.infer<typeof mountSchema>;
export type EnvironmentConfig = z.infer<typeof environmentSchema>;
export type StorageConfig = z.infer<typeof storageSchema>;
export type Compression = z.infer<typeof compression>;
export type ScheduleConfig = z.infer<typeof scheduleSchema>;
export type RetentionConfig = z.infer<typeof retentionConfigSchema>;
export type RetentionRules = z.infer<typeof retentionRulesSchema>;

/** Compiled controller options: validated once at start-up. */
export interface ControllerConfig {
  file: string;
  listen: Address;
  metricsListen: Address | undefined;
  stateDir: string;
  defaultCompression: Compression;
  /** Milliseconds. */
  shutdownTimeoutMs: number;
  /** Milliseconds. */
  heartbeatIntervalMs: number;
  /** Cron spec of the periodic prune. */
  pruneSchedule: string;
  /** Cron spec of the scheduled verification of every complete backup; undefined = off. */
  verifySchedule?: string | undefined;
  /** Milliseconds between replica retry passes. */
  replicaRetryIntervalMs: number;
  /** Milliseconds a dump lock lease lasts without renewal. */
  leaseTtlMs: number;
  /** Nodes of an HA group a dump is tried on before the backup fails. */
  dumpAttempts: number;
  storage: StorageConfig[];
  environments: EnvironmentConfig[];
}

/** Compiled agent options: validated once at start-up. */
export interface AgentConfig {
  file: string;
  nodeId: string;
  controller: Address;
  metricsListen: Address | undefined;
  workDir: string;
  concurrency: number;
  zstdLevel: number;
  zstdThreads: number;
  /** age identity file; undefined: artifacts are not encrypted. */
  encryptionKeyFile: string | undefined;
  /** Whether local locations this node shares with the controller are written and read straight. */
  directLocalStorage: boolean;
  /**
   * The file's `storage:` entries: for s3 locations the controller tells it
   * to write or read straight, the agent takes the credentials of the entry of
   * the same name (else the standard AWS chain). Bucket and options come from
   * the controller's task.
   */
  storage: StorageConfig[];
}

function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(top level)';
}

/**
 * Reads and validates a config file.
 *
 * @throws ConfigUnreadableError when the file cannot be read or is not YAML.
 * @throws ConfigError naming the file, the field path and what is wrong.
 */
export async function loadConfigFile(file: string): Promise<FileConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigUnreadableError(
      `cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      {
        cause: err,
      },
    );
  }
  return parseConfigText(text, file);
}

/** Validates YAML text as a config file; `file` is used in messages only. */
export function parseConfigText(text: string, file: string): FileConfig {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigUnreadableError(`${file}: not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
  }
  const raw: unknown = doc.toJS() ?? {};
  const inline = findInlinePassword(raw);
  if (inline) {
    throw new ConfigError(`${file}: ${inline}: inline passwords are not accepted`, {
      hint: 'put the password in a file named by password_file, or an environment variable named by password_env',
    });
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
    throw new ConfigError(`${file}: invalid config: ${lines.join('; ')}`);
  }
  return parsed.data;
}

function findInlinePassword(raw: unknown): string | undefined {
  if (!raw || typeof raw !== 'object') return undefined;
  const envs = (raw as { environments?: unknown }).environments;
  if (!Array.isArray(envs)) return undefined;
  for (const [i, env] of envs.entries()) {
    const services = (env as { services?: unknown } | null)?.services;
    if (!Array.isArray(services)) continue;
    for (const [j, s] of services.entries()) {
      const conn = (s as { connection?: unknown } | null)?.connection;
      if (conn && typeof conn === 'object' && 'password' in conn) {
        return `environments[${i}].services[${j}].connection.password`;
      }
    }
  }
  return undefined;
}

/**
 * Loads the controller's options.
 *
 * @throws ConfigError when the `controller` section is missing, or the file is invalid.
 */
export async function loadControllerConfig(file: string): Promise<ControllerConfig> {
  return compileControllerConfig(await loadConfigFile(file), file);
}

/** Compiles a validated file into controller options (exported for tests). */
export function compileControllerConfig(cfg: FileConfig, file: string): ControllerConfig {
  if (!cfg.controller)
    throw new ConfigError(`${file}: controller: section is required to run the controller`);
  const c = cfg.controller;
  if (c.lease_ttl < 2 * c.heartbeat_interval) {
    throw new ConfigError(
      `${file}: invalid config: controller.lease_ttl: must be at least twice controller.heartbeat_interval (${c.heartbeat_interval} s): heartbeats renew the leases`,
    );
  }
  const storage = cfg.storage?.length
    ? cfg.storage
    : [{ name: 'local', type: 'local' as const, path: `${c.state_dir.replace(/\/+$/, '')}/repository` }];
  return {
    file,
    listen: parseAddress(c.listen)!,
    metricsListen: c.metrics_listen ? parseAddress(c.metrics_listen) : undefined,
    stateDir: c.state_dir,
    defaultCompression: c.default_compression,
    shutdownTimeoutMs: c.shutdown_timeout * 1000,
    heartbeatIntervalMs: c.heartbeat_interval * 1000,
    pruneSchedule: c.prune_schedule,
    verifySchedule: c.verify_schedule,
    replicaRetryIntervalMs: c.replica_retry_interval * 1000,
    leaseTtlMs: c.lease_ttl * 1000,
    dumpAttempts: c.dump_attempts,
    storage,
    environments: cfg.environments ?? [],
  };
}

/**
 * Loads the agent's options.
 *
 * @throws ConfigError when the `agent` section is missing, or the file is invalid.
 */
export async function loadAgentConfig(file: string): Promise<AgentConfig> {
  const cfg = await loadConfigFile(file);
  if (!cfg.agent) throw new ConfigError(`${file}: agent: section is required to run an agent`);
  const a = cfg.agent;
  return {
    file,
    nodeId: a.node_id,
    controller: parseAddress(a.controller)!,
    metricsListen: a.metrics_listen ? parseAddress(a.metrics_listen) : undefined,
    workDir: a.work_dir,
    concurrency: a.concurrency,
    zstdLevel: a.zstd_level,
    zstdThreads: a.zstd_threads,
    encryptionKeyFile: a.encryption_key_file,
    directLocalStorage: a.direct_local_storage,
    storage: cfg.storage ?? [],
  };
}

/** The controller address a CLI should use from a config file, if the file names one. */
export async function cliControllerFromFile(file: string): Promise<string | undefined> {
  const cfg = await loadConfigFile(file);
  return cfg.cli?.controller ?? cfg.agent?.controller ?? cfg.controller?.listen;
}

/**
 * For a configuration reload: the names of the options, given as
 * `[name, running value, new value]`, whose values differ (compared as JSON).
 */
export function changedOptions(
  options: ReadonlyArray<[name: string, current: unknown, next: unknown]>,
): string[] {
  return options.filter(([, a, b]) => JSON.stringify(a) !== JSON.stringify(b)).map(([name]) => name);
}
