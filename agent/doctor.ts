/**
 * The node-side checks of `envsnap doctor`: what this node needs to run the work the controller
 * gives it. Each check gives one result: ok, warn (works, but something is off) or fail (work
 * will fail), with what to fix. The controller-side checks (reachable, version, clock) are made by
 * the CLI command (controller/cli/commands/doctor.ts), which also gets the list of services and
 * mounts from the controller.
 *
 * Checked here:
 * - the user doctor runs as (root sees files the agent's user may not);
 * - `work_dir`: exists (or can be created), is writable, has free space;
 * - the tools the node's services need, found on PATH, at supported versions
 *   (see tool-versions.ts), GNU tar for nodes with mounts, plus zstd and pigz;
 * - each service: its secret is readable, the server answers and accepts the credentials, the
 *   configured databases exist, and the tools match the server (pg_dump not older than the server,
 *   a MariaDB server not dumped with MySQL 8's mysqldump, a local redis-server that can load the
 *   server's RDB); PostgreSQL: the role is a superuser (pg_dumpall --globals-only needs it);
 *   Redis: a warning when every backup waits the server's diskless-sync delay;
 * - each mount: exists, is a readable directory; writable (restores write into it);
 * - each s3 location of the file's `storage:`: the bucket answers (HeadBucket) with the credentials
 *   this node uses for direct uploads and downloads.
 *
 * Nothing is changed on the node except a probe file created and removed in `work_dir`, and a
 * MariaDB option file (mode 0600) created and removed under it. No secret is ever printed.
 */
import { constants } from 'node:fs';
import { access, mkdtemp, open, opendir, rm, stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { AgentConfig, StorageConfig } from '../shared/config.js';
import { openDirectTarget, storageTarget } from '../shared/storage/locations.js';
import { EnvsnapError, errorMessage } from '../shared/errors.js';
import type { WireMountSpec, WireServiceSpec } from '../shared/wire.js';
import type { ServiceTarget } from './engines/engine.js';
import { resolveConnection } from './secrets.js';
import { probeService, type ServiceProbe } from './service-probe.js';
import {
  COMPRESSION_TOOLS,
  MOUNT_TOOLS,
  KIND_TOOLS,
  compareVersions,
  findTool,
  type ToolFinding,
  type ToolRequirement,
} from './tool-versions.js';

/** ok: fine; warn: works, but look at it; fail: work will fail until it is fixed. */
export type CheckStatus = 'ok' | 'warn' | 'fail';

/** One result line of doctor. */
export interface DoctorCheck {
  /** What was checked, e.g. "work_dir", "tool pg_dump", "service shop/db". */
  check: string;
  status: CheckStatus;
  message: string;
  /** What to do about a warn or fail. */
  fix?: string;
}

/** The services and mounts a node serves, with their environments (from `GetInfo` or the file). */
export interface NodeWork {
  services: Array<{ environment: string; service: WireServiceSpec }>;
  mounts: Array<{ environment: string; mount: WireMountSpec }>;
}

/** Free space below which `work_dir` gets a warning, bytes (Redis dumps and restores pass through it). */
export const LOW_FREE_SPACE_BYTES = 1024 ** 3;

/**
 * Runs every node-side check (see the file comment) and returns the results in a stable order:
 * user, work_dir, tools, services, mounts. Never throws: a check that cannot run is a fail.
 */
export async function checkNode(config: AgentConfig, work: NodeWork): Promise<DoctorCheck[]> {
  const out: DoctorCheck[] = [];
  if (process.getuid?.() === 0) {
    out.push({
      check: 'user',
      status: 'warn',
      message:
        'running as root: file checks (work_dir, mounts, password files) pass for root, maybe not for the agent',
      fix: "run doctor as the agent's user too, e.g. sudo -u envsnap envsnap doctor",
    });
  }
  out.push(await checkWorkDir(config.workDir));

  const tools = await checkTools(work);
  out.push(...tools.checks);
  // Services and mounts are independent: probe them at once, report them in config order.
  const scratch = await scratchDir(config.workDir);
  try {
    const services = await Promise.all(
      work.services.map(({ environment, service }) =>
        checkService(`${environment}/${service.name}`, service, tools.found, scratch),
      ),
    );
    for (const s of services) out.push(...s);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  for (const { environment, mount } of work.mounts)
    out.push(await checkMount(`${environment}/${mount.name}`, mount));
  for (const s of config.storage) if (s.type === 's3') out.push(await checkDirectStorage(config, s));
  return out;
}

/**
 * An s3 location of the agent's own config: can this node open it (HeadBucket)
 * with the credentials it would use for direct uploads and downloads?
 */
async function checkDirectStorage(config: AgentConfig, cfg: StorageConfig): Promise<DoctorCheck> {
  const check = `storage ${cfg.name}`;
  try {
    const backend = await openDirectTarget(storageTarget(cfg, false), config.storage, config.nodeId);
    await backend.close();
    return { check, status: 'ok', message: "bucket reachable with this node's credentials" };
  } catch (err) {
    const hint = err instanceof EnvsnapError ? err.hint : undefined;
    return {
      check,
      status: 'fail',
      message: err instanceof Error ? err.message : errorMessage(err),
      ...(hint ? { fix: hint } : {}),
    };
  }
}

async function checkWorkDir(workDir: string): Promise<DoctorCheck> {
  const check = 'work_dir';
  const st = await stat(workDir).catch((err: NodeJS.ErrnoException) => err);
  if (st instanceof Error) {
    if (st.code !== 'ENOENT')
      return {
        check,
        status: 'fail',
        message: `${workDir}: ${st.code ?? st.message}`,
        fix: fixOwner(workDir),
      };
    const parent = await nearestExisting(dirname(workDir));
    const writable = await access(parent, constants.W_OK | constants.X_OK).then(
      () => true,
      () => false,
    );
    return writable
      ? {
          check,
          status: 'warn',
          message: `${workDir} does not exist yet; the agent creates it when it starts`,
          fix: `create it now to be sure of its owner: install -d -m 0700 -o envsnap ${workDir}`,
        }
      : {
          check,
          status: 'fail',
          message: `${workDir} does not exist and ${parent} is not writable, so the agent cannot create it`,
          fix: `install -d -m 0700 -o envsnap ${workDir}`,
        };
  }
  if (!st.isDirectory())
    return {
      check,
      status: 'fail',
      message: `${workDir} is not a directory`,
      fix: 'set agent.work_dir to a directory',
    };
  const probe = join(workDir, `.envsnap-doctor-${process.pid}`);
  try {
    const fh = await open(probe, 'wx', 0o600);
    await fh.write('envsnap doctor\n');
    await fh.close();
  } catch (err) {
    return {
      check,
      status: 'fail',
      message: `${workDir} is not writable: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`,
      fix: fixOwner(workDir),
    };
  } finally {
    await rm(probe, { force: true });
  }
  const fs = await statfs(workDir).catch(() => undefined);
  const free = fs ? fs.bavail * fs.bsize : undefined;
  const freeText = free === undefined ? '' : `, ${(free / 1024 ** 3).toFixed(1)} GiB free`;
  if (free !== undefined && free < LOW_FREE_SPACE_BYTES)
    return {
      check,
      status: 'warn',
      message: `${workDir} is writable${freeText}`,
      fix: 'free space there: Redis dumps and restores write the whole RDB into work_dir',
    };
  return { check, status: 'ok', message: `${workDir} is writable${freeText}` };
}

function fixOwner(path: string): string {
  return `let the agent's user own it: chown -R envsnap: ${path} && chmod 0700 ${path}`;
}

async function nearestExisting(path: string): Promise<string> {
  for (let p = path; ; p = dirname(p)) {
    if (
      await stat(p).then(
        () => true,
        () => false,
      )
    )
      return p;
    if (dirname(p) === p) return p;
  }
}

/** A private scratch directory for the probes: under work_dir when it is writable, else the temp dir. */
async function scratchDir(workDir: string): Promise<string> {
  return mkdtemp(join(workDir, '.doctor-')).catch(() => mkdtemp(join(tmpdir(), 'envsnap-doctor-')));
}

interface ToolsResult {
  checks: DoctorCheck[];
  /** Findings by requirement role, per kind ("mariadb:dump") and "zstd"/"pigz". */
  found: Map<string, ToolFinding>;
}

/** One line per tool the node's service kinds and mounts need, each tool once; zstd and pigz always. */
async function checkTools(work: NodeWork): Promise<ToolsResult> {
  const found = new Map<string, ToolFinding>();
  const checks: DoctorCheck[] = [];
  const byName = new Map<string, { req: ToolRequirement; users: string[]; keys: string[] }>();
  const add = (req: ToolRequirement, key: string, user: string) => {
    const id = req.names.join('|');
    const entry = byName.get(id) ?? { req, users: [], keys: [] };
    if (!entry.users.includes(user)) entry.users.push(user);
    entry.keys.push(key);
    byName.set(id, entry);
  };
  for (const { environment, service } of work.services) {
    const kind = service.kind as ServiceTarget['kind'];
    for (const req of KIND_TOOLS[kind] ?? [])
      add(req, `${kind}:${req.role}`, `${environment}/${service.name}`);
  }
  for (const { environment, mount } of work.mounts)
    for (const req of MOUNT_TOOLS) add(req, `mount:${req.role}`, `${environment}/${mount.name}`);
  for (const req of COMPRESSION_TOOLS) add(req, req.role, 'every artifact');
  const findings = await Promise.all(
    [...byName.values()].map(async (e) => ({ e, f: await findTool(e.req) })),
  );
  for (const { e, f } of findings) {
    for (const key of e.keys) found.set(key, f);
    checks.push(toolCheck(f, e.users));
  }
  return { checks, found };
}

function toolCheck(f: ToolFinding, users: string[]): DoctorCheck {
  const req = f.requirement;
  const check = `tool ${f.name ?? req.names.join(' or ')}`;
  const neededBy = `needed by ${users.join(', ')}`;
  if (!f.name) {
    return {
      check,
      status: req.optional ? 'warn' : 'fail',
      message: `not found on PATH (${req.optional ?? neededBy})`,
      fix: `apt-get install ${req.debianPackage}`,
    };
  }
  if (!f.version) {
    return {
      check,
      status: 'warn',
      message: `${f.path}: version not recognised (${f.versionLine || 'no output from --version'})`,
      fix: `make sure it is the tool of the Debian package ${req.debianPackage}`,
    };
  }
  // GNU tar's version line says so already; a MariaDB or MySQL client's build is worth showing.
  const flavour =
    f.version.flavour === 'mariadb' ? ' (MariaDB)' : f.version.flavour === 'mysql' ? ' (MySQL)' : '';
  const tooOld = req.minimum?.(f.version);
  if (tooOld)
    return {
      check,
      status: 'fail',
      message: `${f.path}: ${tooOld}`,
      fix: `upgrade the Debian package ${req.debianPackage}`,
    };
  return { check, status: 'ok', message: `${f.version.version}${flavour} at ${f.path}` };
}

/** The connection in words, without its secret: "root@127.0.0.1:3306" or "postgres@socket /run/pg". */
function where(s: WireServiceSpec): string {
  const c = s.connection;
  const at = c.socket ? `socket ${c.socket}` : `${c.host}:${c.port}`;
  return c.user ? `${c.user}@${at}` : at;
}

async function checkService(
  label: string,
  spec: WireServiceSpec,
  tools: Map<string, ToolFinding>,
  scratch: string,
): Promise<DoctorCheck[]> {
  const check = `service ${label}`;
  const kind = spec.kind as ServiceTarget['kind'];
  const configFix = `check connection (host, port, socket, user) and the password (password_file or password_env) of service ${label} in the controller's config`;
  let probe: ServiceProbe;
  try {
    const connection = await resolveConnection(spec.connection);
    probe = await probeService(kind, connection, scratch);
  } catch (err) {
    const hint = err instanceof EnvsnapError ? err.hint : undefined;
    const message = err instanceof EnvsnapError ? err.message : errorMessage(err);
    return [
      {
        check,
        status: 'fail',
        message: `${kind} at ${where(spec)}: ${message}`,
        fix: hint ?? configFix,
      },
    ];
  }
  const out: DoctorCheck[] = [];
  const planned = spec.databases.length > 0 ? spec.databases.join(', ') : 'every database';
  out.push({
    check,
    status: 'ok',
    message: `${kind} ${probe.serverVersion} at ${where(spec)} accepts the credentials${kind === 'redis' ? '' : `; dumps ${planned}`}`,
  });
  const missing = spec.databases.filter((d) => !probe.databases.includes(d));
  if (missing.length > 0)
    out.push({
      check,
      status: 'fail',
      message: `database${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not on the server`,
      fix: `create ${missing.length > 1 ? 'them' : 'it'}, or remove ${missing.length > 1 ? 'them' : 'it'} from the databases of service ${label}`,
    });
  out.push(...compatibility(check, kind, probe, tools));
  return out;
}

/** Tool-versus-server problems that make dumps or restores fail (see the file comment). */
function compatibility(
  check: string,
  kind: ServiceTarget['kind'],
  probe: ServiceProbe,
  tools: Map<string, ToolFinding>,
): DoctorCheck[] {
  const out: DoctorCheck[] = [];
  if (kind === 'postgresql') {
    if (probe.superuser === false)
      out.push({
        check,
        status: 'fail',
        message: 'the role is not a superuser: pg_dumpall --globals-only reads pg_authid, which needs one',
        fix: 'connect as a superuser (e.g. postgres)',
      });
    const server = pgMajor(probe.serverParts);
    for (const role of ['pg_dump', 'pg_dumpall']) {
      const v = tools.get(`postgresql:${role}`)?.version;
      if (v && server.length > 0 && compareVersions(pgMajor(v.parts), server) < 0)
        out.push({
          check,
          status: 'fail',
          message: `${role} ${v.version} is older than the server (${probe.serverVersion}): it refuses to dump a newer server`,
          fix: `install the client tools of PostgreSQL ${server.join('.')} or newer (postgresql-client-${server.join('.')})`,
        });
    }
  } else if (kind === 'mariadb' || kind === 'mysql') {
    const dump = tools.get(`${kind}:dump`);
    if (
      probe.flavour === 'mariadb' &&
      dump?.version?.flavour === 'mysql' &&
      (dump.version.parts[0] ?? 0) >= 8
    )
      out.push({
        check,
        status: 'fail',
        message: `${dump.name} ${dump.version.version} is MySQL's: it queries information_schema.COLUMN_STATISTICS, which MariaDB servers lack`,
        fix: 'install mariadb-client (mariadb-dump) for MariaDB servers',
      });
  } else if (kind === 'redis') {
    if (probe.rdbSyncDelaySeconds)
      out.push({
        check,
        status: 'warn',
        message: `every backup waits ${probe.rdbSyncDelaySeconds} s before the server sends its snapshot (repl-diskless-sync-delay, for more replicas to share it)`,
        fix: 'set repl-diskless-sync-max-replicas 1 (starts at once for one replica) or repl-diskless-sync-delay 0 in redis.conf, unless replicas of this server rely on the delay to share one fork',
      });
    const server = tools.get('redis:restore')?.version;
    const target = probe.serverParts[0];
    if (server && target !== undefined && (server.parts[0] ?? 0) < target)
      out.push({
        check,
        status: 'fail',
        message: `the local redis-server ${server.version} cannot load an RDB of Redis ${probe.serverVersion}: restores would fail`,
        fix: `install redis-server ${target} or newer on this node`,
      });
  }
  return out;
}

/** PostgreSQL's major version: the first number from 10 on, the first two before. */
function pgMajor(parts: readonly number[]): number[] {
  return (parts[0] ?? 0) >= 10 ? parts.slice(0, 1) : parts.slice(0, 2);
}

async function checkMount(label: string, mount: WireMountSpec): Promise<DoctorCheck> {
  const check = `mount ${label}`;
  const st = await stat(mount.path).catch((err: NodeJS.ErrnoException) => err);
  if (st instanceof Error)
    return {
      check,
      status: 'fail',
      message:
        st.code === 'ENOENT'
          ? `${mount.path} does not exist: backups of it fail`
          : `${mount.path}: ${st.code ?? st.message}`,
      fix: `create it, or fix the path of mount ${label} in the controller's config`,
    };
  if (!st.isDirectory())
    return {
      check,
      status: 'fail',
      message: `${mount.path} is not a directory`,
      fix: `point mount ${label} at a directory`,
    };
  try {
    await access(mount.path, constants.R_OK | constants.X_OK);
    const dir = await opendir(mount.path);
    await dir.read();
    await dir.close();
  } catch (err) {
    return {
      check,
      status: 'fail',
      message: `${mount.path} is not readable: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`,
      fix: "give the agent's user read access, e.g. add it to the directory's group (SupplementaryGroups= in the unit)",
    };
  }
  const writable = await access(mount.path, constants.W_OK).then(
    () => true,
    () => false,
  );
  if (!writable)
    return {
      check,
      status: 'warn',
      message: `${mount.path} is readable but not writable: restores into it will fail`,
      fix: "give the agent's user write access if it restores here (and list the path in the unit's ReadWritePaths=)",
    };
  return { check, status: 'ok', message: `${mount.path} is a readable and writable directory` };
}
