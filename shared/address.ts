/**
 * `host:port` addresses (IPv6 as `[::1]:7700`), on their own so that the CLI can check one
 * without loading the config schema (zod, yaml, node-cron cost it ~0.1 s of start-up CPU).
 */

/** A parsed `host:port`. */
export interface Address {
  host: string;
  port: number;
}

/** Parses `host:port` or `[v6]:port`; undefined when malformed. */
export function parseAddress(s: string): Address | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(s.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

/** Formats an address for gRPC (`host:port`, IPv6 in brackets). */
export function formatAddress(a: Address): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
