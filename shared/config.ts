import { readFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import cron from 'node-cron';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { ConfigError, ConfigUnreadableError } from './errors.js';

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

const connectionSchema = z
  .object({
    host: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    socket: absolutePath.optional(),
    user: z.string().min(1).optional(),
    password_file: absolutePath.optional(),
    password_env: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')
      .optional(),
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
  })
  .strict();

const storageSchema = z
  .object({
    name: name('storage name'),
    type: z.literal('local'),
    path: absolutePath,
  })
  .strict();

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

/** A parsed `host:port`. */
export interface Address {
  host: string;
  port: number;
}

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
}

/** Parses `host:port` or `[v6]:port`; undefined when malformed. */
export function parseAddress(s: string): Address | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(s.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

/** Formats an address for gRPC (`host:port`, IPv6 in brackets). */
export function formatAddress(a: Address): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
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
  };
}

/** The controller address a CLI should use from a config file, if the file names one. */
export async function cliControllerFromFile(file: string): Promise<string | undefined> {
  const cfg = await loadConfigFile(file);
  return cfg.cli?.controller ?? cfg.agent?.controller ?? cfg.controller?.listen;
}
