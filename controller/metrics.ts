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
  readonly scheduleRuns = new Counter({
    name: 'envsnap_schedule_runs_total',
    help: 'Scheduled backup runs by result: started, skipped (a backup was still running), missed (controller down).',
    labelNames: ['environment', 'result'] as const,
    registers: [this.registry],
  });
  readonly agentsConnected = new Gauge({
    name: 'envsnap_agents_connected',
    help: 'Agents with a live session to this controller.',
    registers: [this.registry],
  });

  constructor() {
    registerProcessMetrics(this.registry, 'envsnap_controller_');
  }
}
