import { collectDefaultMetrics, type Registry } from 'prom-client';

/**
 * prom-client's default gauges whose names end in `_total`, which Prometheus
 * reserves for counters (`promtool check metrics` rejects them; see
 * https://prometheus.io/docs/practices/naming/). Their information is in
 * `nodejs_active_handles` / `nodejs_active_requests` / `nodejs_active_resources`,
 * which stay.
 */
const MISNAMED_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/**
 * Registers the process and Node.js runtime metrics (CPU seconds, resident
 * memory bytes, open fds, event-loop lag, heap, GC) under `prefix`, minus the
 * default gauges that break Prometheus' naming rules.
 */
export function registerProcessMetrics(registry: Registry, prefix: string): void {
  collectDefaultMetrics({ register: registry, prefix });
  for (const name of MISNAMED_DEFAULTS) registry.removeSingleMetric(prefix + name);
}
