/**
 * TypeScript shapes of the messages in `proto/envsnap/v1/envsnap.proto`, as
 * decoded with the protobufjs options in `proto.ts`, those @grpc/proto-loader
 * took (camelCase fields, enums as strings, 64-bit integers as numbers,
 * defaults filled in, oneof field name in the property named after the oneof).
 *
 * The .proto file is the contract; this file only mirrors it for the compiler.
 */

import type { ArtifactStats } from './drill-stats.js';
import type { RedisSource } from './manifest.js';

export type BackupStatus = 'PENDING' | 'IN_PROGRESS' | 'COMPLETE' | 'FAILED' | 'EXPIRING';

export interface WireArtifact {
  name: string;
  service: string;
  kind: string;
  node: string;
  database: string;
  format: string;
  compression: string;
  sizeBytes: number;
  sha256: string;
  rawBytes: number;
  /** '' (none) or 'age-x25519'. */
  encryption?: string;
  keyFingerprint?: string;
  /** Storage key when not the canonical `backups/<id>/<name>` ('' = canonical). */
  key?: string;
  /** Stats for restore drills; null/undefined when not recorded (normalize with statsFromWire). */
  stats?: ArtifactStats | null;
  /** Redis: the source server when the RDB was taken; null/undefined when not known (normalize with redisSourceFromWire). */
  redis?: RedisSource | null;
}

/** Where an agent writes (backups) or reads (restores) an artifact: `StorageTarget` in the proto. */
export interface WireStorageTarget {
  name: string;
  /** local (the controller's directory: straight when the agent proves it shares it) | s3 (straight to the bucket) */
  kind: string;
  primary: boolean;
  /** kind local: the directory and the id of the controller's marker file in it. */
  local?: { path: string; markerId: string } | null;
  s3?: {
    bucket: string;
    prefix: string;
    region: string;
    endpoint: string;
    forcePathStyle: boolean;
    serverSideEncryption: string;
    storageClass: string;
  } | null;
}

/** One location's copy of an artifact written straight by the agent (`DirectCopy` in the proto). */
export interface WireDirectCopy {
  location: string;
  ok: boolean;
  error: string;
  key: string;
  sizeBytes: number;
  sha256: string;
}

export interface WireBackup {
  id: string;
  environment: string;
  created: string;
  status: BackupStatus;
  restorable: boolean;
  sizeBytes: number;
  live: boolean;
  finished: string;
  error: string;
  artifacts: WireArtifact[];
  activityId: string;
  tag: string;
  consistency: string;
  /** The last verification; null when never verified. */
  verification?: WireBackupVerification | null;
  storage?: string;
  replicas?: Array<{
    location: string;
    status: string;
    error: string;
    attempts: number;
    nextAttempt: string;
  }>;
  /** Locations holding a copy now, primary first. */
  copies?: string[];
  /** Copies deleted by retention. */
  pruned?: Array<{ location: string; time: string; reason: string }>;
  /** The last restore drill; null when never drilled. */
  drill?: WireBackupDrill | null;
}

/** `ListBackupsResponse`. */
export interface WireBackupPage {
  backups: WireBackup[];
  /** Older backups that match and were not returned. */
  more: number;
  /** `before` for the next page; '' on the last one. */
  nextBefore: string;
}

export interface WireActivity {
  id: string;
  type: string;
  environment: string;
  state: string;
  created: string;
  finished: string;
  backupId: string;
  error: string;
  description: string;
}

export interface WireLogLine {
  time: string;
  level: string;
  message: string;
}

export interface WireProgress {
  taskId: string;
  artifact: string;
  bytes: number;
  totalBytes: number;
  done: boolean;
}

export type WireActivityEvent =
  | { event: 'log'; log: WireLogLine }
  | { event: 'progress'; progress: WireProgress }
  | { event: 'finished'; finished: WireActivity };

export interface WireAgentInfo {
  nodeId: string;
  connected: boolean;
  lastSeen: string;
  version: string;
  hostname: string;
  runningTasks: number;
}

export interface WireConnection {
  host: string;
  port: number;
  socket: string;
  user: string;
  passwordFile: string;
  passwordEnv: string;
}

export interface WireServiceSpec {
  name: string;
  kind: string;
  connection: WireConnection;
  databases: string[];
}

export interface WireMountSpec {
  name: string;
  path: string;
  exclude: string[];
}

export interface WireHookCommand {
  command: string;
  timeoutMs: number;
}

export interface WireHookTask {
  environment: string;
  phase: 'quiesce' | 'resume' | 'post_restore';
  commands: WireHookCommand[];
  maxPauseMs: number;
  resumeCommands: WireHookCommand[];
}

export interface WireTask {
  taskId: string;
  activityId: string;
  backupId: string;
  work?:
    | 'backupService'
    | 'backupMount'
    | 'restoreService'
    | 'restoreMount'
    | 'hook'
    | 'dbDump'
    | 'preRestoreCleanup'
    | 'drillService'
    | 'drillMount';
  preRestoreCleanup?: { service: WireServiceSpec };
  hook?: WireHookTask;
  dbDump?: { service: WireServiceSpec; dumpDirectory: string };
  fencingToken?: number;
  leaseTtlMs?: number;
  backupService?: {
    service: WireServiceSpec;
    compression: string;
    /** checksums | counts | off ('' = off). */
    drillStats?: string;
    /** The site's writes are paused during this dump. */
    quiesced?: boolean;
  };
  backupMount?: { mount: WireMountSpec; compression: string; drillStats?: string };
  drillService?: { service: WireServiceSpec; artifacts: WireArtifact[] };
  drillMount?: { mount: WireMountSpec; artifact: WireArtifact };
  restoreService?: { service: WireServiceSpec; artifacts: WireArtifact[] };
  restoreMount?: { mount: WireMountSpec; artifact: WireArtifact };
  /** Backups: every location of the environment, primary first (absent from older controllers). */
  storageTargets?: WireStorageTarget[];
  /** Restores and drills: artifacts to read straight from a location (s3, or a shared local one) instead of through the controller. */
  artifactSources?: Array<{ artifact: string; location: WireStorageTarget | null }>;
}

export type WireAgentMessage =
  | {
      msg?: 'hello';
      hello: {
        nodeId: string;
        version: string;
        hostname: string;
        runningTaskIds: string[];
        /** See `Hello.checks_artifact_stream` in the proto; absent (false) from older agents. */
        checksArtifactStream?: boolean;
      };
    }
  | { msg?: 'heartbeat'; heartbeat: { runningTasks: number; runningTaskIds: string[] } }
  | { msg?: 'progress'; progress: WireProgress }
  | {
      msg?: 'result';
      result: {
        taskId: string;
        ok: boolean;
        error: string;
        artifacts: WireArtifact[];
        files?: string[];
        drilled?: WireDrilledArtifact[];
      };
    }
  | { msg?: 'log'; log: { taskId: string; level: string; message: string } };

export type WireControllerMessage =
  | { msg?: 'welcome'; welcome: { controllerVersion: string; heartbeatIntervalMs: number } }
  | { msg?: 'task'; task: WireTask }
  | { msg?: 'cancel'; cancel: { taskId: string; reason: string } };

/** The first message of an UploadArtifact stream: which artifact of which task, and where it goes. */
export interface WireUploadHeader {
  backupId: string;
  taskId: string;
  artifact: Partial<WireArtifact>;
  fencingToken?: number;
  /** The controller-side locations to store it in; empty or absent: every one. */
  locations?: string[];
}

export type WireUploadMessage =
  | { msg?: 'header'; header: WireUploadHeader }
  | { msg?: 'data'; data: Buffer }
  | { msg?: 'trailer'; trailer: { sizeBytes: number; sha256: string; rawBytes: number } };

export interface WireLock {
  key: string;
  environment: string;
  service: string;
  holder: string;
  fencingToken: number;
  expires: string;
  activityId: string;
  purpose: string;
  taskId: string;
}

/** `ControllerInfo`, the answer to `GetInfo` (doctor). */
export interface WireControllerInfo {
  version: string;
  time: string;
  defaultCompression: string;
  services: Array<{ environment: string; service: WireServiceSpec }>;
  mounts: Array<{ environment: string; mount: WireMountSpec }>;
}

export interface WireObjectCheck {
  name: string;
  status: string;
  detail: string;
}

export interface WireLocationVerification {
  location: string;
  result: string;
  time: string;
  detail: string;
  objects: WireObjectCheck[];
  conclusiveResult: string;
  conclusiveTime: string;
}

export interface WireBackupVerification {
  backupId: string;
  environment: string;
  created: string;
  time: string;
  result: string;
  restorable: boolean;
  locations: WireLocationVerification[];
}

export interface WireRepositoryIssue {
  location: string;
  kind: string;
  backupId: string;
  key: string;
  detail: string;
  action: string;
}

export interface WireRepositoryReport {
  repair: boolean;
  locations: Array<{ location: string; objects: number; backups: number }>;
  issues: WireRepositoryIssue[];
}

/** A schedule as `ListSchedules` returns it (`ScheduleInfo` in the proto). */
export interface WireSchedule {
  environment: string;
  cron: string;
  timezone: string;
  live: boolean;
  /** The next three run times, ISO 8601. */
  nextRuns: string[];
  /** When it last fired, ISO 8601; '' if never. */
  lastRun: string;
  /** started | complete | failed | skipped | missed; '' if never. */
  lastResult: string;
  lastBackupId: string;
  lastError: string;
}

/** One backup's fate in a prune (`PruneDecision` in the proto). */
export interface WirePruneDecision {
  backupId: string;
  environment: string;
  created: string;
  tag: string;
  keep: boolean;
  /** The rules that keep it, or why it goes. */
  reasons: string[];
  /** Per location holding a copy: that location's own decision. */
  locations?: WireLocationPruneDecision[];
}

/** One location's retention decision on one backup's copy (`LocationPruneDecision`). */
export interface WireLocationPruneDecision {
  location: string;
  keep: boolean;
  reasons: string[];
}

/** One artifact as a drill found it in its scratch target (`DrilledArtifact` in the proto). */
export interface WireDrilledArtifact {
  name: string;
  /** Unset when the restore failed. */
  observed?: ArtifactStats | null;
  error: string;
  cleanupError: string;
  seconds: number;
}

/** `ArtifactDrill` in the proto. */
export interface WireArtifactDrill {
  name: string;
  result: string;
  detail: string;
  differences: string[];
  informational: boolean;
}

/** A restore drill's outcome (`BackupDrill` in the proto). */
export interface WireBackupDrill {
  backupId: string;
  environment: string;
  time: string;
  /** pass | fail */
  result: string;
  durationSeconds: number;
  activityId: string;
  source: string;
  artifacts: WireArtifactDrill[];
}
