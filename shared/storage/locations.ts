import { readFile } from 'node:fs/promises';
import type { StorageConfig } from '../config.js';
import { ConfigError, StorageUnavailableError, errorMessage } from '../errors.js';
import type { WireStorageTarget } from '../wire.js';
import type { StorageBackend } from './backend.js';
import { LocalBackend } from './local-backend.js';
import { S3Backend, type S3BackendOptions } from './s3-backend.js';

type S3Config = Extract<StorageConfig, { type: 's3' }>;

/**
 * The static credentials a config's s3 location names (`access_key_id` with
 * `secret_access_key_file` or `secret_access_key_env`), or undefined when it
 * names none (the standard AWS chain applies). The secret is never logged.
 *
 * @throws ConfigError when the secret file cannot be read or the variable is unset.
 */
export async function s3Credentials(cfg: S3Config): Promise<S3BackendOptions['credentials']> {
  let secret: string | undefined;
  if (cfg.secret_access_key_file) {
    secret = (
      await readFile(cfg.secret_access_key_file, 'utf8').catch((err: unknown) => {
        throw new ConfigError(
          `storage ${cfg.name}: cannot read secret_access_key_file ${cfg.secret_access_key_file}: ${errorMessage(err)}`,
        );
      })
    ).split('\n')[0]!;
  } else if (cfg.secret_access_key_env) {
    secret = process.env[cfg.secret_access_key_env];
    if (!secret) {
      throw new ConfigError(
        `storage ${cfg.name}: environment variable ${cfg.secret_access_key_env} is not set`,
      );
    }
  }
  return cfg.access_key_id && secret
    ? { accessKeyId: cfg.access_key_id, secretAccessKey: secret }
    : undefined;
}

/**
 * Opens a configured storage location (the controller's view: local
 * directories and S3 buckets with the config's credentials).
 *
 * @throws ConfigError when an S3 secret cannot be read; the backends' own errors otherwise.
 */
export async function openStorage(cfg: StorageConfig): Promise<StorageBackend> {
  if (cfg.type === 'local') return LocalBackend.open(cfg.name, cfg.path);
  const credentials = await s3Credentials(cfg);
  return S3Backend.open({
    name: cfg.name,
    bucket: cfg.bucket,
    prefix: cfg.prefix,
    region: cfg.region,
    endpoint: cfg.endpoint,
    forcePathStyle: cfg.force_path_style,
    ...(credentials ? { credentials } : {}),
    ...(cfg.server_side_encryption ? { serverSideEncryption: cfg.server_side_encryption } : {}),
    ...(cfg.storage_class ? { storageClass: cfg.storage_class as never } : {}),
  });
}

/**
 * A location as the controller describes it to an agent in a task: where
 * (for s3: bucket, prefix, region, endpoint, path style, SSE, storage class;
 * for local: the path and its marker's id, `markerId`, when known), never
 * credentials.
 */
export function storageTarget(cfg: StorageConfig, primary: boolean, markerId?: string): WireStorageTarget {
  if (cfg.type === 'local') {
    return {
      name: cfg.name,
      kind: 'local',
      primary,
      s3: null,
      local: markerId ? { path: cfg.path, markerId } : null,
    };
  }
  return {
    name: cfg.name,
    kind: 's3',
    primary,
    s3: {
      bucket: cfg.bucket,
      prefix: cfg.prefix ?? '',
      region: cfg.region ?? '',
      endpoint: cfg.endpoint ?? '',
      forcePathStyle: cfg.force_path_style,
      serverSideEncryption: cfg.server_side_encryption ?? '',
      storageClass: cfg.storage_class ?? '',
    },
  };
}

/** Bytes per multipart part of an agent's direct upload: S3's minimum, so memory stays small. */
const AGENT_PART_BYTES = 5 * 1024 * 1024;
/** Parts of one direct upload in flight at once. */
const AGENT_QUEUE_SIZE = 2;

/**
 * Opens an s3 location an agent writes to or reads from straight. The bucket
 * and its options come from the task; the credentials from the agent's own
 * config (`own`: its `storage:` entries, matched by name), else the standard
 * AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the
 * shared files, web identity, instance role). Each upload holds at most about
 * 5 MiB × 3 in memory.
 *
 * @throws StorageUnavailableError naming the location and node when the bucket
 *   cannot be reached with the credentials found (none at all included).
 */
export async function openDirectTarget(
  target: WireStorageTarget,
  own: readonly StorageConfig[],
  nodeId: string,
): Promise<S3Backend> {
  const s3 = target.s3;
  if (target.kind !== 's3' || !s3) {
    throw new StorageUnavailableError(`storage "${target.name}" is not an s3 location`);
  }
  const mine = own.find((c): c is S3Config => c.name === target.name && c.type === 's3');
  const hint =
    `give node ${nodeId} credentials for it: a storage entry named "${target.name}" in the agent's config ` +
    'with access_key_id and secret_access_key_file (or _env), or the standard AWS environment/files';
  try {
    const credentials = mine ? await s3Credentials(mine) : undefined;
    return await S3Backend.open({
      name: target.name,
      bucket: s3.bucket,
      prefix: s3.prefix,
      ...(s3.region ? { region: s3.region } : {}),
      ...(s3.endpoint ? { endpoint: s3.endpoint } : {}),
      forcePathStyle: s3.forcePathStyle,
      ...(credentials ? { credentials } : {}),
      ...(s3.serverSideEncryption ? { serverSideEncryption: s3.serverSideEncryption as never } : {}),
      ...(s3.storageClass ? { storageClass: s3.storageClass as never } : {}),
      partSizeBytes: AGENT_PART_BYTES,
      queueSize: AGENT_QUEUE_SIZE,
    });
  } catch (err) {
    throw new StorageUnavailableError(
      `storage "${target.name}": node ${nodeId} cannot open s3://${s3.bucket}/${s3.prefix}: ${errorMessage(err)}`,
      { hint },
    );
  }
}
