import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerProcessMetrics } from '../shared/process-metrics.js';

/**
 * The agent's Prometheus metrics, on a registry of its own. Labels are
 * bounded: kind (mariadb, mysql, postgresql, redis, mount), type (backup,
 * restore) and status (ok, failed).
 */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly tasks = new Counter({
    name: 'envsnap_agent_tasks_total',
    help: 'Tasks run by this agent, by type, kind and status.',
    labelNames: ['type', 'kind', 'status'] as const,
    registers: [this.registry],
  });
  readonly taskDuration = new Histogram({
    name: 'envsnap_agent_task_duration_seconds',
    help: 'Wall time of tasks on this agent.',
    labelNames: ['type', 'kind'] as const,
    buckets: [0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
    registers: [this.registry],
  });
  readonly bytesWritten = new Counter({
    name: 'envsnap_agent_written_bytes_total',
    help: 'Compressed artifact bytes uploaded by this agent.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly bytesRead = new Counter({
    name: 'envsnap_agent_read_bytes_total',
    help: 'Compressed artifact bytes downloaded by this agent for restores.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly runningTasks = new Gauge({
    name: 'envsnap_agent_running_tasks',
    help: 'Tasks running on this agent now.',
    registers: [this.registry],
  });
  readonly connected = new Gauge({
    name: 'envsnap_agent_connected',
    help: '1 while the agent has a live session with its controller.',
    registers: [this.registry],
  });

  constructor() {
    registerProcessMetrics(this.registry, 'envsnap_agent_');
  }
}
