/**
 * Records the restore-drill stats of a database artifact while it is dumped (shared/drill-stats.ts):
 * which engine's collector runs, when (next to the dump, or in the dump's own snapshot), and on what
 * basis the stats stand. Mount stats come from the archive itself (agent/mount-archive.ts).
 *
 * A failure to collect stats never fails the backup: it is logged, and the artifact has no stats
 * (a drill then only checks that it restores).
 */
import type { ArtifactStats, DrillStatsLevel, StatsBasis } from '../shared/drill-stats.js';
import { errorMessage } from '../shared/errors.js';
import type { DumpUnit, EngineContext, ServiceTarget } from './engines/engine.js';
import { mariadbStats } from './engines/mariadb-stats.js';
import { startPostgresqlStats } from './engines/postgresql-stats.js';
import { redisKeyspaceStats } from './engines/redis-stats.js';

/** Stats being collected for one dump. */
export interface StatsCollection {
  /** The unit to dump: PostgreSQL's carries the exported snapshot. */
  unit: DumpUnit;
  /**
   * Resolves with the stats once the dump ended (call it whether the dump worked or not: it ends
   * PostgreSQL's snapshot transaction); undefined when none were collected. Never rejects.
   */
  finish(): Promise<ArtifactStats | undefined>;
}

/** Parses a task's `drill_stats` ('' and unknown values mean off). */
export function drillStatsLevel(value: string | undefined): DrillStatsLevel {
  return value === 'checksums' || value === 'counts' ? value : 'off';
}

/**
 * Starts collecting the stats of `unit` before it is dumped. MariaDB/MySQL stats are read while the
 * dump runs (in sessions of their own); PostgreSQL's in the snapshot the dump is given; Redis's
 * before the dump asks for its snapshot.
 *
 * @param quiesced the site's writes are paused during the dump (stats taken next to it then
 *   describe the dumped data: basis `quiesced`; else `live`).
 */
export async function startStats(
  service: ServiceTarget,
  unit: DumpUnit,
  opts: { level: DrillStatsLevel; quiesced: boolean },
  ctx: EngineContext,
): Promise<StatsCollection> {
  const none: StatsCollection = { unit, finish: () => Promise.resolve(undefined) };
  if (opts.level === 'off' || unit.format === 'pg_globals') return none;
  const level = opts.level;
  const checksums = level === 'checksums';
  const nextTo: StatsBasis = opts.quiesced ? 'quiesced' : 'live';
  const warn = (err: unknown): undefined => {
    ctx.log(`${unit.fileName}: drill stats not recorded: ${errorMessage(err)}`);
    return undefined;
  };
  const started = Date.now();
  const took = (): string => `${((Date.now() - started) / 1000).toFixed(2)} s`;
  try {
    switch (service.kind) {
      case 'mariadb':
      case 'mysql': {
        // In other sessions while the dump runs (the server reads the tables for both at once,
        // instead of one after the other): under the quiesce, which lasts until the task ended,
        // nothing writes between the two, so the basis is the same as if taken before the dump.
        const taking = mariadbStats(service.kind, service.connection, unit.database, checksums, ctx).then(
          ({ tables, objects }): ArtifactStats => {
            ctx.log(
              `${unit.database}: drill stats of ${tables.length} tables and ${objects.length} other objects taken next to the dump in ${took()}`,
            );
            return { basis: nextTo, level, tables, objects };
          },
          warn,
        );
        return { unit, finish: () => taking };
      }
      case 'postgresql': {
        const session = await startPostgresqlStats(service, unit.database, checksums, ctx);
        return {
          unit: { ...unit, snapshot: session.snapshot },
          finish: async () => {
            try {
              const tables = await session.stats;
              ctx.log(
                `${unit.database}: drill stats of ${tables.length} tables taken in the dump's snapshot in ${took()}`,
              );
              return { basis: 'snapshot', level, tables };
            } catch (err) {
              return warn(err);
            } finally {
              await session.close();
            }
          },
        };
      }
      case 'redis': {
        const keyspaces = await redisKeyspaceStats(service.connection);
        const stats: ArtifactStats = { basis: nextTo, level, keyspaces };
        return { unit, finish: () => Promise.resolve(stats) };
      }
    }
  } catch (err) {
    warn(err);
  }
  return none;
}
