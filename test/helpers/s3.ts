/**
 * A throwaway S3-compatible server for tests: s3rver (npm) in this process on
 * a loopback port, with its data in a temp directory. Credentials are
 * `S3RVER`/`S3RVER` (see ../shared/FIELD-NOTES.md).
 */
import { createRequire } from 'node:module';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';

interface S3rverServer {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
const require = createRequire(import.meta.url);
const S3rver = require('s3rver') as new (opts: Record<string, unknown>) => S3rverServer;

export const S3_ACCESS_KEY = 'S3RVER';
export const S3_SECRET_KEY = 'S3RVER';

/** A running s3rver with one bucket. `stop()` keeps its data so that `start()` can bring it back on the same port. */
export class TestS3 {
  private server: S3rverServer | undefined;
  port = 0;

  private constructor(
    readonly dir: string,
    readonly bucket: string,
  ) {}

  static async start(bucket: string): Promise<TestS3> {
    const s3 = new TestS3(await mkdtemp(path.join(tmpdir(), 'envsnap-s3-')), bucket);
    await s3.start();
    return s3;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.server = new S3rver({
      address: '127.0.0.1',
      port: this.port,
      silent: true,
      directory: this.dir,
      configureBuckets: [{ name: this.bucket }],
    });
    this.port = (await this.server.run()).port;
  }

  /**
   * Runs `fn` with an S3 client of this server (its credentials, path-style addressing), for a
   * test's own look at the bucket; destroys the client after.
   */
  async admin<T>(fn: (client: S3Client) => Promise<T>): Promise<T> {
    const client = new S3Client({
      endpoint: this.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: S3_ACCESS_KEY, secretAccessKey: S3_SECRET_KEY },
    });
    try {
      return await fn(client);
    } finally {
      client.destroy();
    }
  }

  /** Stops serving; the data stays. Safe to call twice. */
  async stop(): Promise<void> {
    await this.server?.close();
    this.server = undefined;
  }

  /** Stops and removes the data. */
  async destroy(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}
