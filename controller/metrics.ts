import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerProcessMetrics } from '../shared/process-metrics.js';

/**
 * The controller's Prometheus metrics, on a registry of its own.
 * Names follow Prometheus conventions (`envsnap_` prefix, `_seconds`,
 * `_bytes`, `_total`); labels are bounded (environment, status), never a backup id.
 */
export class ControllerMetrics {
  readonly registry = new Registry();
  readonly backups = new Counter({
    name: 'envsnap_backups_total',
    help: 'Backups finished, by environment and final status (complete, failed).',
    labelNames: ['environment', 'status'] as const,
    registers: [this.registry],
  });
  readonly backupDuration = new Histogram({
    name: 'envsnap_backup_duration_seconds',
    help: 'Wall time of backups, from start to the manifest written or the failure.',
    labelNames: ['environment', 'status'] as const,
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200],
    registers: [this.registry],
  });
  readonly bytesWritten = new Counter({
    name: 'envsnap_backup_written_bytes_total',
    help: 'Artifact bytes stored by complete backups.',
    labelNames: ['environment'] as const,
    registers: [this.registry],
  });
  readonly lastSuccess = new Gauge({
    name: 'envsnap_last_successful_backup_timestamp_seconds',
    help: 'Unix time of the last complete backup of each environment.',
    labelNames: ['environment'] as const,
    registers: [this.registry],
  });
  readonly lastFailure = new Gauge({
    name: 'envsnap_last_failed_backup_timestamp_seconds',
    help: 'Unix time of the last failed backup of each environment.',
    labelNames: ['environment'] as const,
    registers: [this.registry],
  });
  readonly restores = new Counter({
    name: 'envsnap_restores_total',
    help: 'Restores finished, by target environment and final status.',
    labelNames: ['environment', 'status'] as const,
    registers: [this.registry],
  });
  readonly restoreDuration = new Histogram({
    name: 'envsnap_restore_duration_seconds',
    help: 'Wall time of restores.',
    labelNames: ['environment', 'status'] as const,
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200],
    registers: [this.registry],
  });
  readonly bytesRead = new Counter({
    name: 'envsnap_restore_read_bytes_total',
    help: 'Artifact bytes served to agents for restores.',
    labelNames: ['environment'] as const,
    registers: [this.registry],
  });
  readonly runningJobs = new Gauge({
    name: 'envsnap_running_jobs',
    help: 'Backups and restores running now.',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });
  readonly backupsPruned = new Counter({
    name: 'envsnap_backups_pruned_total',
    help: 'Backups deleted by retention or backup:delete.',
    labelNames: ['environment'] as const,
    registers: [this.registry],
  });
  readonly copiesPruned = new Counter({
    name: 'envsnap_copies_pruned_total',
    help: "Copies deleted from one location by that location's own retention while another location keeps the backup.",
    labelNames: ['location'] as const,
    registers: [this.registry],
  });
  readonly scheduleRuns = new Counter({
    name: 'envsnap_schedule_runs_total',
    help: 'Scheduled backup runs by result: started, skipped (a backup was still running), missed (controller down).',
    labelNames: ['environment', 'result'] as const,
    registers: [this.registry],
  });
  readonly locksHeld = new Gauge({
    name: 'envsnap_dump_locks_held',
    help: 'Dump locks (leases) held now.',
    registers: [this.registry],
  });
  readonly leaseExpiry = new Gauge({
    name: 'envsnap_dump_lock_lease_expiry_timestamp_seconds',
    help: 'When each held dump lock lease ends unless renewed, by service and holder node.',
    labelNames: ['environment', 'service', 'node'] as const,
    registers: [this.registry],
  });
  readonly leaseExpirations = new Counter({
    name: 'envsnap_dump_lock_lease_expirations_total',
    help: 'Dump lock leases that expired without a release (holder died, froze or was cut off).',
    registers: [this.registry],
  });
  readonly quiescePause = new Histogram({
    name: 'envsnap_quiesce_pause_seconds',
    help: 'How long the site was quiesced: first quiesce start to last resume end.',
    labelNames: ['environment'] as const,
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800],
    registers: [this.registry],
  });
  readonly lastPause = new Gauge({
    name: 'envsnap_last_quiesce_pause_seconds',
    help: 'The pause of the last consistent backup or db-dump of the environment.',
    labelNames: ['environment'] as const,
    registers: [this.registry],
  });
  readonly hookFailures = new Counter({
    name: 'envsnap_hook_failures_total',
    help: 'Quiesce or resume hooks that failed, by phase.',
    labelNames: ['environment', 'phase'] as const,
    registers: [this.registry],
  });
  readonly dbDumps = new Counter({
    name: 'envsnap_db_dumps_total',
    help: 'db-dump runs by status.',
    labelNames: ['environment', 'status'] as const,
    registers: [this.registry],
  });
  readonly underReplicated = new Gauge({
    name: 'envsnap_backups_under_replicated',
    help: 'Complete backups with at least one replica location not yet holding a good copy.',
    labelNames: ['environment'] as const,
    registers: [this.registry],
  });
  readonly replicaCopies = new Counter({
    name: 'envsnap_replica_copies_total',
    help: 'Retried copies of a backup from its primary to a replica location, by result.',
    labelNames: ['location', 'result'] as const,
    registers: [this.registry],
  });
  readonly storagePutBytes = new Counter({
    name: 'envsnap_storage_put_bytes_total',
    help: 'Artifact bytes stored by backups, by storage location: by the controller (from UploadArtifact) and by agents writing straight (S3, shared local directories), counted when recorded.',
    labelNames: ['location'] as const,
    registers: [this.registry],
  });
  readonly uploadReceivedBytes = new Counter({
    name: 'envsnap_upload_received_bytes_total',
    help: 'Artifact bytes the controller received from agents over UploadArtifact (0 when agents write every location straight).',
    registers: [this.registry],
  });
  readonly agentsConnected = new Gauge({
    name: 'envsnap_agents_connected',
    help: 'Agents with a live session to this controller.',
    registers: [this.registry],
  });
  readonly verifications = new Counter({
    name: 'envsnap_verifications_total',
    help: 'Backup verifications by environment, storage location and result (ok, failed, error).',
    labelNames: ['environment', 'location', 'result'] as const,
    registers: [this.registry],
  });
  readonly lastVerification = new Gauge({
    name: 'envsnap_last_verification_timestamp_seconds',
    help: 'Unix time of the last backup verification by environment, storage location and result.',
    labelNames: ['environment', 'location', 'result'] as const,
    registers: [this.registry],
  });
  /** Where envsnap_backups_failing_verification reads its values at each scrape (set by the Verifier). */
  failingVerification: () => Promise<Array<{ environment: string; count: number }>> = () =>
    Promise.resolve([]);
  readonly backupsFailingVerification: Gauge<'environment'> = new Gauge({
    name: 'envsnap_backups_failing_verification',
    help: 'Complete backups not restorable because their last verification failed, by environment.',
    labelNames: ['environment'] as const,
    registers: [this.registry],
    collect: async () => {
      const counts = await this.failingVerification();
      this.backupsFailingVerification.reset();
      for (const { environment, count } of counts)
        this.backupsFailingVerification.set({ environment }, count);
    },
  });

  readonly drills = new Counter({
    name: 'envsnap_drills_total',
    help: 'Restore drills finished, by environment and result (pass, fail).',
    labelNames: ['environment', 'result'] as const,
    registers: [this.registry],
  });
  readonly drillLastResult = new Gauge({
    name: 'envsnap_drill_last_result',
    help: 'The last restore drill of each environment: 1 on the series of its result (pass or fail), 0 on the other.',
    labelNames: ['environment', 'status'] as const,
    registers: [this.registry],
  });
  readonly drillLastRun = new Gauge({
    name: 'envsnap_drill_last_run_timestamp_seconds',
    help: 'Unix time of the last restore drill of each environment, by result.',
    labelNames: ['environment', 'status'] as const,
    registers: [this.registry],
  });
  readonly drillDuration = new Histogram({
    name: 'envsnap_drill_duration_seconds',
    help: 'Wall time of restore drills: download, scratch restores, stats, cleanup.',
    labelNames: ['environment', 'result'] as const,
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200],
    registers: [this.registry],
  });

  constructor() {
    registerProcessMetrics(this.registry, 'envsnap_controller_');
  }
}
