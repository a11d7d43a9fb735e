import * as grpc from '@grpc/grpc-js';
import { EnvsnapError, ErrorCode, errorMessage } from './errors.js';

const STATUS: Record<ErrorCode, grpc.status> = {
  [ErrorCode.CONFIG_INVALID]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.CONFIG_UNREADABLE]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.STORAGE_UNAVAILABLE]: grpc.status.UNAVAILABLE,
  [ErrorCode.LOCATION_NOT_SHARED]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.UPLOAD_DISCARDED]: grpc.status.ABORTED,
  [ErrorCode.NOT_FOUND]: grpc.status.NOT_FOUND,
  [ErrorCode.INVALID_ARGUMENT]: grpc.status.INVALID_ARGUMENT,
  [ErrorCode.ENVIRONMENT_INACTIVE]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.TARGET_MISMATCH]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.NOT_RESTORABLE]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.ARTIFACT_CORRUPT]: grpc.status.DATA_LOSS,
  [ErrorCode.AGENT_UNAVAILABLE]: grpc.status.UNAVAILABLE,
  [ErrorCode.TOOL_MISSING]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.TOOL_FAILED]: grpc.status.INTERNAL,
  [ErrorCode.UNSAFE_ARCHIVE_ENTRY]: grpc.status.INVALID_ARGUMENT,
  [ErrorCode.TASK_ABORTED]: grpc.status.ABORTED,
  [ErrorCode.SECRET_UNAVAILABLE]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.SHUTTING_DOWN]: grpc.status.UNAVAILABLE,
  [ErrorCode.LOCK_HELD]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.LEASE_LOST]: grpc.status.ABORTED,
  [ErrorCode.STALE_FENCING_TOKEN]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.HOOK_FAILED]: grpc.status.FAILED_PRECONDITION,
  [ErrorCode.ENCRYPTION_KEY]: grpc.status.FAILED_PRECONDITION,
};

/**
 * Turns any error into a gRPC status for the wire: envsnap errors keep their
 * code and hint in the `envsnap-code` / `envsnap-hint` trailers; anything
 * else becomes INTERNAL with its message.
 */
export function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  if (err instanceof EnvsnapError) {
    metadata.set('envsnap-code', err.code);
    if (err.hint) metadata.set('envsnap-hint', err.hint);
    return { code: STATUS[err.code], details: err.message, metadata };
  }
  return { code: grpc.status.INTERNAL, details: errorMessage(err), metadata };
}

/** What a client shows for a failed call: the server's message and hint, or the transport problem. */
export function describeServiceError(err: unknown, controller: string): string {
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e.code === 'number') {
    if (e.code === grpc.status.UNAVAILABLE && !e.metadata?.get('envsnap-code').length) {
      return `cannot reach the controller at ${controller} (hint: is envsnap-controller running? set --controller or ENVSNAP_CONTROLLER)`;
    }
    if (e.code === grpc.status.DEADLINE_EXCEEDED)
      return `the controller at ${controller} did not answer in time`;
    const hint = e.metadata?.get('envsnap-hint')[0];
    return `${e.details ?? e.message ?? 'unknown error'}${hint ? ` (hint: ${String(hint)})` : ''}`;
  }
  return errorMessage(err);
}
