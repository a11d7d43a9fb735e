import assert from 'node:assert/strict';
import {
  COMPRESSION_TOOLS,
  KIND_TOOLS,
  MOUNT_TOOLS,
  compareVersions,
  parseToolVersion,
} from '../../agent/tool-versions.js';

describe('tool versions (doctor)', () => {
  it('parses the --version lines of the tools envsnap drives', () => {
    const cases: Array<[string, string, string | undefined]> = [
      [
        'mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)',
        '10.11.19',
        'mariadb',
      ],
      ['mariadb-dump from 11.4.2-MariaDB, client 10.19 for debian-linux-gnu (x86_64)', '11.4.2', 'mariadb'],
      ['mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)', '8.0.36', 'mysql'],
      ['mysqldump  Ver 10.13 Distrib 5.7.44, for Linux (x86_64)', '5.7.44', 'mysql'],
      ['pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)', '15.20', undefined],
      ['pg_dump (PostgreSQL) 9.6.24', '9.6.24', undefined],
      ['redis-cli 7.0.15', '7.0.15', undefined],
      [
        'Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c971a948f0',
        '7.0.15',
        undefined,
      ],
      ['*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***', '1.5.4', undefined],
      ['pigz 2.6', '2.6', undefined],
      ['tar (GNU tar) 1.34', '1.34', 'gnu'],
    ];
    for (const [line, version, flavour] of cases) {
      const v = parseToolVersion(line);
      assert.equal(v?.version, version, line);
      assert.equal(v?.flavour, flavour, line);
    }
    assert.equal(parseToolVersion('something else'), undefined);
  });

  it('applies the minimum versions', () => {
    const min = (kind: keyof typeof KIND_TOOLS, role: string, line: string) =>
      KIND_TOOLS[kind].find((t) => t.role === role)!.minimum!(parseToolVersion(line)!);
    assert.equal(
      min('mariadb', 'dump', 'mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for x'),
      undefined,
    );
    assert.match(
      min('mariadb', 'dump', 'mysqldump  Ver 10.17 Distrib 10.2.44-MariaDB, for x')!,
      /older than 10\.3/,
    );
    assert.match(min('mysql', 'dump', 'mysqldump  Ver 10.13 Distrib 5.6.51, for Linux')!, /older than 5\.7/);
    assert.equal(min('mysql', 'dump', 'mysqldump  Ver 8.0.36 for Linux'), undefined);
    assert.match(min('postgresql', 'psql', 'psql (PostgreSQL) 9.5.25')!, /older than 9\.6.*gexec/);
    assert.match(min('redis', 'restore', 'Redis server v=6.2.14 sha=0')!, /older than 7\.0/);
    const zstd = COMPRESSION_TOOLS.find((t) => t.role === 'zstd')!;
    assert.match(
      zstd.minimum!(parseToolVersion('*** zstd command line interface 64-bits v1.3.8, by Yann Collet ***')!)!,
      /older than 1\.4\.0/,
    );
    const tar = MOUNT_TOOLS[0]!.minimum!;
    assert.equal(tar(parseToolVersion('tar (GNU tar) 1.34')!), undefined);
    assert.match(tar(parseToolVersion('tar (GNU tar) 1.29')!)!, /older than 1\.30/);
    assert.match(tar(parseToolVersion('bsdtar 3.6.2 - libarchive 3.6.2 zlib/1.2.13')!)!, /not GNU tar/);
    assert.ok(compareVersions([15], [9, 6]) > 0 && compareVersions([9, 6], [9, 6, 0]) === 0);
  });
});
