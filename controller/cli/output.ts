import { createRequire } from 'node:module';
import type Table from 'cli-table3';
import { InvalidArgumentError } from '../../shared/errors.js';

/** Loads cli-table3 on use: only a listing printed as a table needs it, not `--help` or JSON. */
const require = createRequire(import.meta.url);

/** Listing formats every listing command takes. */
export type Format = 'table' | 'json';

/** @throws InvalidArgumentError for anything but table or json. */
export function parseFormat(value: string): Format {
  if (value === 'table' || value === 'json') return value;
  throw new InvalidArgumentError(`unknown format "${value}"`, {
    hint: 'use --format table or --format json',
  });
}

/** Prints rows as a table (cli-table3) or as pretty JSON. */
export function printList<T>(
  format: Format,
  items: T[],
  columns: Array<[string, (item: T) => string]>,
): void {
  if (format === 'json') {
    process.stdout.write(JSON.stringify(items, null, 2) + '\n');
    return;
  }
  const TableCtor = require('cli-table3') as typeof Table;
  const table = new TableCtor({ head: columns.map(([h]) => h), style: { head: [], border: [] } });
  for (const item of items) table.push(columns.map(([, f]) => f(item)));
  process.stdout.write(table.toString() + '\n');
}

/** Bytes for people: 1.5 MiB. */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** Lines meant for people (progress, logs) go to stderr, unless --quiet. */
export function info(quiet: boolean | undefined, line: string): void {
  if (!quiet) process.stderr.write(line + '\n');
}

/** The shape `printChecks` prints: the result lines of `envsnap doctor`. */
export interface CheckReport {
  node: string;
  config: string;
  checks: Array<{ check: string; status: 'ok' | 'warn' | 'fail'; message: string; fix?: string }>;
}

const CHECK_LABEL = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' } as const;

/**
 * Prints doctor's results on stdout: one line per check (`ok`, `warn` or `FAIL`, what was checked,
 * what was found, and for warn and FAIL what to fix), then a count; or, with json, one object
 * `{ node, config, ok, checks: [{ check, status, message, fix? }] }` where `ok` is false when a
 * check failed.
 */
export function printChecks(format: Format, report: CheckReport): void {
  const failed = report.checks.filter((c) => c.status === 'fail').length;
  if (format === 'json') {
    process.stdout.write(JSON.stringify({ ...report, ok: failed === 0 }, null, 2) + '\n');
    return;
  }
  const lines = report.checks.map(
    (c) =>
      `${CHECK_LABEL[c.status]}  ${c.check}: ${oneLine(c.message)}${c.fix ? ` -> fix: ${oneLine(c.fix)}` : ''}`,
  );
  const warned = report.checks.filter((c) => c.status === 'warn').length;
  const ok = report.checks.length - failed - warned;
  lines.push(`${report.node}: ${ok} ok, ${warned} warning${warned === 1 ? '' : 's'}, ${failed} failed`);
  process.stdout.write(lines.join('\n') + '\n');
}

/** Tools' messages span lines (psql's "connection failed" + "Is the server running"): join them. */
function oneLine(text: string): string {
  return text.trim().replace(/\s*\n\s*/g, ' ');
}
