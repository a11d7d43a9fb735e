/**
 * Every envsnap error, declared once (in the manner of pgBackRest's error list).
 *
 * Each class says when it is thrown. Messages are lowercase, name the problem,
 * and carry a hint where one helps. Messages never contain secrets: callers
 * pass names and paths, never passwords or keys.
 */

/** Stable error codes, shown to users and carried over gRPC in error details. */
export const ErrorCode = {
  CONFIG_INVALID: 'config_invalid',
  CONFIG_UNREADABLE: 'config_unreadable',
  NOT_FOUND: 'not_found',
  INVALID_ARGUMENT: 'invalid_argument',
  ENVIRONMENT_INACTIVE: 'environment_inactive',
  TARGET_MISMATCH: 'target_mismatch',
  NOT_RESTORABLE: 'not_restorable',
  ARTIFACT_CORRUPT: 'artifact_corrupt',
  AGENT_UNAVAILABLE: 'agent_unavailable',
  TOOL_MISSING: 'tool_missing',
  TOOL_FAILED: 'tool_failed',
  UNSAFE_ARCHIVE_ENTRY: 'unsafe_archive_entry',
  TASK_ABORTED: 'task_aborted',
  SECRET_UNAVAILABLE: 'secret_unavailable',
  SHUTTING_DOWN: 'shutting_down',
  LOCK_HELD: 'lock_held',
  LEASE_LOST: 'lease_lost',
  STALE_FENCING_TOKEN: 'stale_fencing_token',
  HOOK_FAILED: 'hook_failed',
  ENCRYPTION_KEY: 'encryption_key',
  STORAGE_UNAVAILABLE: 'storage_unavailable',
  LOCATION_NOT_SHARED: 'location_not_shared',
  UPLOAD_DISCARDED: 'upload_discarded',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Base class: every error envsnap raises on purpose has a code and an optional hint. */
export class EnvsnapError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options?.hint;
  }
  /** The message with its hint, for terminals and activity logs. */
  describe(): string {
    return this.hint ? `${this.message} (hint: ${this.hint})` : this.message;
  }
}

/** Thrown when a config file fails schema validation; the message names file and field path. */
export class ConfigError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.CONFIG_INVALID, message, options);
  }
}

/** Thrown when a config file cannot be read or parsed as YAML. */
export class ConfigUnreadableError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.CONFIG_UNREADABLE, message, options);
  }
}

/** Thrown when a backup, activity, environment, agent or artifact that was named does not exist. */
export class NotFoundError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.NOT_FOUND, message, options);
  }
}

/** Thrown when a request or flag is malformed (a bad backup id, an unknown compression, ...). */
export class InvalidArgumentError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.INVALID_ARGUMENT, message, options);
  }
}

/** Thrown when a backup or restore names an environment whose config says `active: false`. */
export class EnvironmentInactiveError extends EnvsnapError {
  constructor(environment: string) {
    super(ErrorCode.ENVIRONMENT_INACTIVE, `environment "${environment}" is not active`, {
      hint: 'only environments with active: true can be backed up or restored',
    });
  }
}

/** Thrown before a restore when the target lacks a service or mount of the backup, or its kind differs. */
export class TargetMismatchError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.TARGET_MISMATCH, message, options);
  }
}

/** Thrown when a restore names a backup that is not complete or not restorable. */
export class NotRestorableError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.NOT_RESTORABLE, message, options);
  }
}

/** Thrown when a stored artifact is missing or its size or SHA-256 differs from the manifest. */
export class ArtifactCorruptError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.ARTIFACT_CORRUPT, message, options);
  }
}

/** Thrown when no connected agent can run a task for a node. */
export class AgentUnavailableError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.AGENT_UNAVAILABLE, message, options);
  }
}

/** Thrown when a dump, restore or compression binary is not installed; the hint names the Debian package. */
export class ToolMissingError extends EnvsnapError {
  constructor(tool: string, debianPackage: string, options?: { cause?: unknown }) {
    super(ErrorCode.TOOL_MISSING, `${tool} not found on PATH`, {
      ...options,
      hint: `install the Debian package ${debianPackage}`,
    });
  }
}

/** Thrown when an external tool exits non-zero; the message has its exit status and the tail of its stderr. */
export class ToolFailedError extends EnvsnapError {
  readonly exitCode: number | null;
  constructor(tool: string, exitCode: number | null, signal: string | null, stderrTail: string) {
    const how = signal ? `was killed by ${signal}` : `exited with status ${exitCode}`;
    const tail = stderrTail.trim();
    super(ErrorCode.TOOL_FAILED, `${tool} ${how}${tail ? `: ${tail}` : ''}`);
    this.exitCode = exitCode;
  }
}

/** Thrown when an archive entry would land outside the mount (`..`, absolute path, symlinked parent). */
export class UnsafeArchiveEntryError extends EnvsnapError {
  constructor(entry: string, reason: string) {
    super(ErrorCode.UNSAFE_ARCHIVE_ENTRY, `refusing archive entry "${entry}": ${reason}`);
  }
}

/** Thrown inside a task when it was cancelled (agent shutdown, controller cancel). */
export class TaskAbortedError extends EnvsnapError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super(ErrorCode.TASK_ABORTED, `task aborted: ${reason}`, options);
  }
}

/** Thrown when a `password_file` cannot be read or a `password_env` variable is unset. */
export class SecretUnavailableError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.SECRET_UNAVAILABLE, message, options);
  }
}

/**
 * Thrown when an agent cannot open a storage location it must write to or
 * read from straight (an S3 bucket): no credentials for it, access denied, or
 * the bucket unreachable. The message names the location and the node.
 */
export class StorageUnavailableError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.STORAGE_UNAVAILABLE, message, options);
  }
}

/**
 * Thrown when an agent cannot prove that a controller's local location is the
 * same directory on its own disk (the marker file is missing or holds another
 * id, it belongs to another user, or the agent cannot create a file there).
 * Not a failure: the agent then sends and reads that location's bytes
 * through the controller, and logs this message once.
 */
export class LocationNotSharedError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.LOCATION_NOT_SHARED, message, options);
  }
}

/**
 * Thrown by a local location's `put` when the object's temporary file was removed while it was
 * written: its key's prefix was deleted meanwhile, which the controller does to the files of a
 * backup attempt it discarded (the dump lock moved to another node) and of a deleted backup. The
 * object is not stored.
 */
export class UploadDiscardedError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.UPLOAD_DISCARDED, message, options);
  }
}

/** Thrown when a request arrives while the controller is draining for shutdown. */
export class ShuttingDownError extends EnvsnapError {
  constructor() {
    super(ErrorCode.SHUTTING_DOWN, 'the controller is shutting down', { hint: 'retry once it is back' });
  }
}

/** Thrown when a dump or db-dump needs a service's dump lock and another job holds it. */
export class LockHeldError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.LOCK_HELD, message, options);
  }
}

/**
 * Thrown (to the job) when the holder of a dump lock stopped renewing its
 * lease: its node died, froze or was cut off. The dump is reassigned.
 */
export class LeaseLostError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.LEASE_LOST, message, options);
  }
}

/** Thrown when an upload carries a fencing token that is not the current lease's: a stale holder. */
export class StaleFencingTokenError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.STALE_FENCING_TOKEN, message, options);
  }
}

/** Thrown when a quiesce or resume hook command fails or times out. */
export class HookFailedError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.HOOK_FAILED, message, options);
  }
}

/** Thrown when an artifact is encrypted with a key the restoring agent does not hold (checked before anything is touched). */
export class EncryptionKeyError extends EnvsnapError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(ErrorCode.ENCRYPTION_KEY, message, options);
  }
}

/** A message safe to show for any thrown value. */
export function errorMessage(err: unknown): string {
  if (err instanceof EnvsnapError) return err.describe();
  if (err instanceof Error) return err.message;
  return String(err);
}
