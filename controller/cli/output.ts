import Table from 'cli-table3';
import { InvalidArgumentError } from '../../shared/errors.js';

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
  const table = new Table({ head: columns.map(([h]) => h), style: { head: [], border: [] } });
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
