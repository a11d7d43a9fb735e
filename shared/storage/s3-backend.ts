import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type S3ClientConfig,
  type ServerSideEncryption,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { InvalidArgumentError, NotFoundError, TaskAbortedError } from '../errors.js';
import type { PutResult, StorageBackend } from './backend.js';
import { checkKey } from './keys.js';

const MIB = 1024 * 1024;
/** S3's smallest part (all but the last) of a multipart upload. */
const MIN_PART_SIZE = 5 * MIB;
/** S3's largest part of a multipart upload. */
const MAX_PART_SIZE = 5 * 1024 * MIB;
/** S3's most parts in one multipart upload. */
const MAX_PARTS = 10_000;
/** S3's most keys in one DeleteObjects or ListObjectsV2 call. */
const BATCH = 1000;
const AUTH_CODES = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
]);

/** Where and how an S3Backend stores objects: the `storage` entry of kind `s3` in the config. */
export interface S3BackendOptions {
  /** The location's name from the config (shown in messages). */
  name: string;
  /** The bucket; it must exist (`open` checks it). */
  bucket: string;
  /**
   * A key prefix inside the bucket, e.g. `envsnap/prod`. Leading and trailing `/` are dropped, the rest
   * must be a valid storage key (see `checkKey`) and gets one trailing `/`. Absent or empty: the bucket root.
   */
  prefix?: string;
  /**
   * The signing region. Absent: `us-east-1` when `endpoint` is set, else the AWS SDK's chain
   * (`AWS_REGION`, the shared config file, ...).
   */
  region?: string;
  /** An S3-compatible endpoint URL (MinIO, Ceph RGW, ...), e.g. `http://127.0.0.1:9000`. Absent: AWS S3. */
  endpoint?: string;
  /** Path-style URLs (`endpoint/bucket/key`), which most S3-compatible servers need. Default false. */
  forcePathStyle?: boolean;
  /**
   * Static credentials. Absent: the standard AWS chain (environment variables, shared
   * credentials/config files, SSO, web identity, container and instance metadata).
   */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** `x-amz-server-side-encryption` for new objects, e.g. `AES256` or `aws:kms`. Absent: the bucket default. */
  serverSideEncryption?: ServerSideEncryption;
  /** Storage class for new objects, e.g. `STANDARD_IA`. Absent: `STANDARD`. */
  storageClass?: StorageClass;
  /**
   * Bytes per multipart part: 5 MiB to 5 GiB, default 8 MiB. Also fixes the largest object `put` can
   * store: partSizeBytes × 10,000 (about 78 GiB at 8 MiB).
   */
  partSizeBytes?: number;
  /** Parts uploaded in parallel, at least 1, default 4. */
  queueSize?: number;
}

/**
 * A repository location in an S3 bucket (AWS S3 or an S3-compatible server).
 *
 * Keys map to object keys `prefix + key`. Contract notes beyond StorageBackend:
 *
 * - `put` streams the data through a SHA-256 meter into a multipart upload (`@aws-sdk/lib-storage`),
 *   holding at most about partSizeBytes × (queueSize + 1) bytes in memory; a stream shorter than one
 *   part goes up in a single PutObject. S3 makes the object visible only when the upload completes,
 *   so readers never see a part of it. If the source fails, the upload fails, or `opts.signal` aborts,
 *   in-flight part requests are cancelled, the multipart upload is aborted (so no parts are left
 *   billed in the bucket), and `put` rejects: with the source's own error, with TaskAbortedError when
 *   aborted, or with an Error naming the bucket and key. If the multipart upload cannot be aborted
 *   the message says so and names its upload id.
 * - `get` returns the response body stream; the caller must consume or destroy it (it holds a socket).
 * - `list` skips objects whose keys are not valid storage keys (e.g. `dir/` folder markers);
 *   `deletePrefix` deletes every object under the prefix, such objects included.
 * - Messages name the bucket and object key (`s3://bucket/key`), never credentials; errors from S3
 *   are not attached as `cause` because their fields may echo the access key id and the string to sign.
 */
export class S3Backend implements StorageBackend {
  readonly name: string;
  readonly bucket: string;
  /** The normalised key prefix: '' or ending with '/'. */
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly partSize: number;
  private readonly queueSize: number;
  private readonly objectParams: { ServerSideEncryption?: ServerSideEncryption; StorageClass?: StorageClass };
  /** Explicit credential values, redacted from any message. */
  readonly #secrets: string[];
  private closed = false;

  private constructor(opts: S3BackendOptions, prefix: string, client: S3Client) {
    this.name = opts.name;
    this.bucket = opts.bucket;
    this.prefix = prefix;
    this.client = client;
    this.partSize = opts.partSizeBytes ?? 8 * MIB;
    this.queueSize = opts.queueSize ?? 4;
    this.objectParams = {
      ...(opts.serverSideEncryption ? { ServerSideEncryption: opts.serverSideEncryption } : {}),
      ...(opts.storageClass ? { StorageClass: opts.storageClass } : {}),
    };
    const c = opts.credentials;
    this.#secrets = c
      ? [c.accessKeyId, c.secretAccessKey, c.sessionToken ?? ''].filter((s) => s.length > 0)
      : [];
  }

  /**
   * Validates the options, creates the S3 client and checks that the bucket exists and is reachable
   * with the credentials (HeadBucket, which needs `s3:ListBucket`).
   *
   * Sets `AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true` unless the environment already sets
   * it, the SDK's documented switch for its "node >=22 needed from 2027" warning on Node 20.
   *
   * @throws InvalidArgumentError for a bad name, bucket, prefix, part size or queue size.
   * @throws NotFoundError when the bucket does not exist.
   * @throws Error naming the bucket when it cannot be reached or access is denied.
   */
  static async open(opts: S3BackendOptions): Promise<S3Backend> {
    if (!opts.name) throw new InvalidArgumentError('s3 storage needs a name');
    if (!opts.bucket) throw new InvalidArgumentError(`s3 storage "${opts.name}" needs a bucket`);
    const partSize = opts.partSizeBytes ?? 8 * MIB;
    if (!Number.isInteger(partSize) || partSize < MIN_PART_SIZE || partSize > MAX_PART_SIZE) {
      throw new InvalidArgumentError(
        `s3 storage "${opts.name}": part size ${partSize} bytes is outside ${MIN_PART_SIZE}..${MAX_PART_SIZE}`,
      );
    }
    const queueSize = opts.queueSize ?? 4;
    if (!Number.isInteger(queueSize) || queueSize < 1) {
      throw new InvalidArgumentError(
        `s3 storage "${opts.name}": queue size ${queueSize} must be an integer >= 1`,
      );
    }
    const prefix = normalisePrefix(opts.name, opts.prefix);

    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const config: S3ClientConfig = {
      forcePathStyle: opts.forcePathStyle ?? false,
      // Fail fast on an unreachable endpoint; no idle timeout, since a `get` stream may sit paused
      // while a slow restore consumes it.
      requestHandler: { connectionTimeout: 15_000 },
    };
    const region = opts.region ?? (opts.endpoint ? 'us-east-1' : undefined);
    if (region) config.region = region;
    if (opts.endpoint) config.endpoint = opts.endpoint;
    if (opts.credentials) {
      config.credentials = {
        accessKeyId: opts.credentials.accessKeyId,
        secretAccessKey: opts.credentials.secretAccessKey,
        ...(opts.credentials.sessionToken ? { sessionToken: opts.credentials.sessionToken } : {}),
      };
    }
    const backend = new S3Backend(
      { ...opts, partSizeBytes: partSize, queueSize },
      prefix,
      new S3Client(config),
    );
    try {
      await backend.client.send(new HeadBucketCommand({ Bucket: opts.bucket }));
    } catch (err) {
      backend.client.destroy();
      if (httpStatus(err) === 404 || errorCode(err) === 'NoSuchBucket') throw backend.bucketMissing();
      throw backend.failure('access check', undefined, err);
    }
    return backend;
  }

  /**
   * Uploads `data` to `key` (see the class notes), replacing any object there.
   *
   * @throws InvalidArgumentError for a bad key; the source's error; TaskAbortedError when
   *   `opts.signal` aborts; Error naming bucket and key when S3 fails.
   */
  async put(key: string, data: Readable, opts?: { signal?: AbortSignal }): Promise<PutResult> {
    const objectKey = this.objectKey(key);
    const signal = opts?.signal;
    if (signal?.aborted) {
      data.destroy();
      throw new TaskAbortedError(`put of ${this.where(objectKey)} was cancelled`, { cause: signal.reason });
    }
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    });

    // The first failure decides what `put` reports, and stops everything else: a failed part stops
    // the source (lib-storage would otherwise keep uploading the remaining parts before giving up),
    // and any failure cancels the part requests still in flight.
    let origin: 'source' | 's3' | undefined;
    let firstError: unknown;
    const stop = new AbortController();
    const halt = (err: unknown, from: 'source' | 's3'): void => {
      if (origin) return;
      origin = from;
      firstError = err;
      if (!meter.destroyed) meter.destroy(err instanceof Error ? err : new Error(String(err)));
      stop.abort();
    };

    const upload = new Upload({
      client: this.watchedClient(stop.signal, (err) => halt(err, 's3')),
      params: { Bucket: this.bucket, Key: objectKey, Body: meter, ...this.objectParams },
      partSize: this.partSize,
      queueSize: this.queueSize,
      leavePartsOnError: false,
    });
    const uploading = upload.done().catch((err: unknown) => {
      // The meter errored: the source failed or the signal aborted (pipeline destroys it with the
      // error); else the upload failed on its own (the meter may have ended and been destroyed cleanly).
      halt(err, meter.errored ? 'source' : 's3');
      throw err;
    });
    const feeding = pipeline(data, meter, signal ? { signal } : {}).catch((err: unknown) => {
      halt(err, 'source');
      throw err;
    });
    const [up, feed] = await Promise.allSettled([uploading, feeding]);
    if (up.status === 'fulfilled' && feed.status === 'fulfilled') {
      return { sizeBytes: size, sha256: hash.digest('hex') };
    }

    const note = await this.discard(objectKey, upload.uploadId, up.status === 'fulfilled');
    if (signal?.aborted) {
      throw new TaskAbortedError(`put of ${this.where(objectKey)} was cancelled${note ? `; ${note}` : ''}`, {
        cause: signal.reason,
      });
    }
    if (origin !== 's3') {
      const err: unknown = feed.status === 'rejected' ? feed.reason : firstError;
      if (!note) throw err;
      throw new Error(`${err instanceof Error ? err.message : String(err)}; ${note}`, { cause: err });
    }
    const tooLarge = firstError instanceof Error && /exceeded \d+ parts/i.test(firstError.message);
    const hint = tooLarge
      ? `objects over ${this.partSize * MAX_PARTS} bytes need a larger partSizeBytes (the upload has ${MAX_PARTS} parts at most)`
      : undefined;
    throw this.failure('put', objectKey, firstError, [hint, note].filter(Boolean).join('; ') || undefined);
  }

  /**
   * Streams the object at `key`.
   *
   * @throws InvalidArgumentError for a bad key; NotFoundError when there is no such object or bucket
   *   (before any byte is read); Error naming bucket and key when S3 fails.
   */
  async get(key: string): Promise<Readable> {
    const objectKey = this.objectKey(key);
    let body: unknown;
    try {
      body = (await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey }))).Body;
    } catch (err) {
      if (errorCode(err) === 'NoSuchBucket') throw this.bucketMissing();
      if (errorCode(err) === 'NoSuchKey' || httpStatus(err) === 404) {
        throw new NotFoundError(
          `object ${key} not found in storage "${this.name}" (${this.where(objectKey)})`,
        );
      }
      throw this.failure('get', objectKey, err);
    }
    if (!(body instanceof Readable)) {
      throw new Error(`s3 get of ${this.where(objectKey)} returned no readable body`);
    }
    return body;
  }

  /**
   * The object's size in bytes, or undefined when there is no such object (HeadObject).
   *
   * @throws InvalidArgumentError for a bad key; Error naming bucket and key when S3 fails.
   */
  async stat(key: string): Promise<{ sizeBytes: number } | undefined> {
    const objectKey = this.objectKey(key);
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      return { sizeBytes: out.ContentLength ?? 0 };
    } catch (err) {
      if (httpStatus(err) === 404 || errorCode(err) === 'NotFound' || errorCode(err) === 'NoSuchKey') {
        return undefined;
      }
      throw this.failure('stat', objectKey, err);
    }
  }

  /**
   * Every valid storage key starting with `prefix` (relative to the configured prefix), sorted.
   * Pages through ListObjectsV2, 1000 keys a request.
   *
   * @throws InvalidArgumentError for a bad non-empty prefix; NotFoundError when the bucket is gone;
   *   Error naming bucket and prefix when S3 fails.
   */
  async list(prefix: string): Promise<string[]> {
    if (prefix !== '') checkKey(prefix, true);
    const out: string[] = [];
    let cursor: { ContinuationToken?: string; StartAfter?: string } = {};
    for (;;) {
      const page = await this.listPage(prefix, cursor);
      for (const key of page.keys) if (isStorageKey(key)) out.push(key);
      if (!page.truncated || page.keys.length === 0) break;
      // A server that truncates without a continuation token gets the last key as StartAfter.
      cursor = page.token
        ? { ContinuationToken: page.token }
        : { StartAfter: this.prefix + page.keys.at(-1)! };
    }
    return out.sort();
  }

  /**
   * Deletes the object at `key`; deleting a missing object is not an error.
   *
   * @throws InvalidArgumentError for a bad key; Error naming bucket and key when S3 fails.
   */
  async delete(key: string): Promise<void> {
    const objectKey = this.objectKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey }));
    } catch (err) {
      throw this.failure('delete', objectKey, err);
    }
  }

  /**
   * Deletes every object whose key starts with `prefix`, listing and deleting (DeleteObjects) 1000
   * keys at a time; idempotent.
   *
   * @throws InvalidArgumentError for a bad or empty prefix; Error naming bucket, prefix and the first
   *   key S3 refused to delete.
   */
  async deletePrefix(prefix: string): Promise<void> {
    checkKey(prefix, true);
    let startAfter: string | undefined;
    for (;;) {
      // StartAfter (a key) rather than a continuation token: the listed keys are gone by the next call.
      const page = await this.listPage(prefix, { StartAfter: startAfter });
      if (page.keys.length === 0) return;
      const objects = page.keys.map((k) => ({ Key: this.prefix + k }));
      let out;
      try {
        out = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: objects, Quiet: true } }),
        );
      } catch (err) {
        throw this.failure('delete', this.prefix + prefix, err);
      }
      const refused = out.Errors ?? [];
      if (refused.length > 0) {
        const first = refused[0]!;
        throw new Error(
          this.scrub(
            `s3 delete of ${this.where(this.prefix + prefix)}* failed for ${refused.length} object(s), ` +
              `first ${this.where(first.Key ?? '?')}: ${first.Code ?? 'unknown error'}: ${first.Message ?? ''}`.trim(),
          ),
        );
      }
      if (!page.truncated) return;
      startAfter = objects[objects.length - 1]!.Key;
    }
  }

  /** Releases the client's sockets; idempotent. The backend must not be used afterwards. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.client.destroy();
    }
    return Promise.resolve();
  }

  /** One ListObjectsV2 page under `prefix`: keys relative to the configured prefix. */
  private async listPage(
    prefix: string,
    cursor: { ContinuationToken?: string; StartAfter?: string },
  ): Promise<{ keys: string[]; truncated: boolean; token: string | undefined }> {
    const full = this.prefix + prefix;
    try {
      const out = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: full,
          MaxKeys: BATCH,
          ...(cursor.ContinuationToken ? { ContinuationToken: cursor.ContinuationToken } : {}),
          ...(cursor.StartAfter ? { StartAfter: cursor.StartAfter } : {}),
        }),
      );
      const keys = (out.Contents ?? [])
        .map((o) => o.Key)
        .filter((k): k is string => typeof k === 'string' && k.startsWith(this.prefix))
        .map((k) => k.slice(this.prefix.length));
      return { keys, truncated: out.IsTruncated === true, token: out.NextContinuationToken };
    } catch (err) {
      if (errorCode(err) === 'NoSuchBucket') throw this.bucketMissing();
      throw this.failure('list', full, err);
    }
  }

  /**
   * A view of the client for one Upload: part and single-object requests carry `stop`, so a failure
   * cancels them; a part that fails for another reason calls `onPartFailure`.
   */
  private watchedClient(stop: AbortSignal, onPartFailure: (err: unknown) => void): S3Client {
    const client = this.client;
    const watched = Object.create(client) as S3Client;
    const send = (command: Parameters<S3Client['send']>[0]): Promise<unknown> => {
      const cancellable = command instanceof UploadPartCommand || command instanceof PutObjectCommand;
      return client.send(command, cancellable ? { abortSignal: stop } : {}).catch((err: unknown) => {
        if (cancellable && !stop.aborted) onPartFailure(err);
        throw err;
      });
    };
    Object.defineProperty(watched, 'send', { value: send });
    return watched;
  }

  /**
   * Cleans up after a failed put: aborts the multipart upload (again: lib-storage already tried, and
   * S3 answers NoSuchUpload then), or deletes the object if the upload completed although the source
   * failed. Returns a note for the error message when something could not be cleaned up.
   */
  private async discard(
    objectKey: string,
    uploadId: string | undefined,
    completed: boolean,
  ): Promise<string | undefined> {
    if (completed) {
      try {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey }));
        return undefined;
      } catch (err) {
        return `the object was stored and could not be deleted (${describeError(err)})`;
      }
    }
    if (!uploadId) return undefined;
    try {
      await this.client.send(
        new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: objectKey, UploadId: uploadId }),
      );
      return undefined;
    } catch (err) {
      if (errorCode(err) === 'NoSuchUpload' || httpStatus(err) === 404) return undefined;
      return (
        `multipart upload ${uploadId} could not be aborted (${describeError(err)}); its parts stay in the ` +
        'bucket until it is aborted or a lifecycle rule (AbortIncompleteMultipartUpload) removes them'
      );
    }
  }

  private objectKey(key: string): string {
    return this.prefix + checkKey(key);
  }

  private where(objectKey: string): string {
    return `s3://${this.bucket}/${objectKey}`;
  }

  private bucketMissing(): NotFoundError {
    return new NotFoundError(`s3 bucket "${this.bucket}" of storage "${this.name}" not found`, {
      hint: 'create the bucket or fix the bucket name, endpoint and region in the config',
    });
  }

  /** An Error for a failed S3 request: operation, bucket and key, S3's code, status and message. */
  private failure(op: string, objectKey: string | undefined, err: unknown, note?: string): Error {
    const target = objectKey === undefined ? `bucket "${this.bucket}"` : this.where(objectKey);
    const auth = AUTH_CODES.has(errorCode(err) ?? '') || httpStatus(err) === 403;
    const message =
      `s3 ${op} of ${target} (storage "${this.name}") failed: ${describeError(err)}` +
      (auth ? ' (check the credentials and the bucket policy)' : '') +
      (note ? `; ${note}` : '');
    // Service errors carry the response's fields and headers (the access key id, the string to sign):
    // only plain network errors go along as the cause.
    const cause = err instanceof Error && !('$fault' in err) && !('$response' in err) ? err : undefined;
    return new Error(this.scrub(message), cause ? { cause } : undefined);
  }

  private scrub(text: string): string {
    let out = text;
    for (const s of this.#secrets) out = out.split(s).join('[redacted]');
    return out;
  }
}

function normalisePrefix(name: string, prefix: string | undefined): string {
  const body = (prefix ?? '').replace(/^\/+|\/+$/g, '');
  if (!body) return '';
  if (!isStorageKey(body)) {
    throw new InvalidArgumentError(`s3 storage "${name}": invalid prefix "${prefix}"`, {
      hint: 'use /-separated segments without "." or ".." and without empty segments',
    });
  }
  return `${body}/`;
}

function isStorageKey(key: string): boolean {
  try {
    checkKey(key);
    return true;
  } catch {
    return false;
  }
}

function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { name?: unknown; Code?: unknown; code?: unknown };
  if (typeof e.Code === 'string') return e.Code;
  if (typeof e.code === 'string') return e.code;
  return typeof e.name === 'string' ? e.name : undefined;
}

function httpStatus(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const status = (err as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/** `Code (http N): message`, from S3's answer or the network error. */
function describeError(err: unknown): string {
  const code = errorCode(err) ?? 'error';
  const status = httpStatus(err);
  const message = err instanceof Error ? err.message : String(err);
  const shown = message && message !== code && message !== 'UnknownError' ? `: ${message}` : '';
  return `${code}${status ? ` (http ${status})` : ''}${shown}`;
}
