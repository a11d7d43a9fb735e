/**
 * The controller-side checks of `envsnap doctor` (see doctor.ts for the command): the config, the
 * controller, the clocks and this node's assignment, then the node's own checks (agent/doctor.ts).
 * A module of its own so that the other commands' start-up loads none of it.
 */
import type { DoctorCheck, NodeWork } from '../../../agent/index.js';
import { formatAddress, loadAgentConfig, loadConfigFile, type AgentConfig } from '../../../shared/config.js';
import { errorMessage } from '../../../shared/errors.js';
import { VERSION } from '../../../shared/version.js';
import type { WireAgentInfo, WireControllerInfo } from '../../../shared/wire.js';
import { ControllerClient, type GlobalOptions } from '../client.js';
import { printChecks, type Format } from '../output.js';
import { nodeAssignments } from '../../node-assignments.js';

/** The config file doctor reads when neither --config nor ENVSNAP_CONFIG names one (the units' path). */
export const DEFAULT_CONFIG_FILE = '/etc/envsnap/envsnap.yaml';

/** Clock offsets (milliseconds, beyond the measurement's own uncertainty) that warn and fail. */
export const CLOCK_WARN_MS = 2_000;
export const CLOCK_FAIL_MS = 60_000;

/** Deadline of each call to the controller, milliseconds. */
const CALL_TIMEOUT_MS = 5_000;

/**
 * Runs doctor's checks for the node whose `agent:` section the config file (`--config`,
 * `ENVSNAP_CONFIG`, else {@link DEFAULT_CONFIG_FILE}) holds, prints them in `format`, and
 * resolves with the exit code: 1 when a check failed, else 0.
 */
export async function doctor(globals: GlobalOptions, format: Format): Promise<number> {
  const file = globals.config ?? process.env.ENVSNAP_CONFIG ?? DEFAULT_CONFIG_FILE;
  let config: AgentConfig;
  try {
    config = await loadAgentConfig(file);
  } catch (err) {
    printChecks(format, {
      node: '',
      config: file,
      checks: [
        {
          check: 'config',
          status: 'fail',
          message: errorMessage(err),
          fix: 'pass the agent\'s config file with --config (it needs an "agent:" section)',
        },
      ],
    });
    return 1;
  }
  const checks: DoctorCheck[] = [
    {
      check: 'config',
      status: 'ok',
      message: `${file}: node ${config.nodeId}, controller ${formatAddress(config.controller)}`,
    },
  ];
  const controller = await checkController(config);
  checks.push(...controller.checks);
  let work = controller.work;
  if (!work) {
    // The controller did not answer: use the file's own environments, if it has any.
    const environments = (await loadConfigFile(file)).environments ?? [];
    work = nodeAssignments(environments, config.nodeId);
    checks.push(
      environments.length > 0
        ? {
            check: 'assignment',
            status: 'warn',
            message: `${describeWork(work)} per ${file} (the controller did not say)`,
            fix: 'the controller may know other services: run doctor again once it answers',
          }
        : {
            check: 'assignment',
            status: 'warn',
            message: `unknown: the controller did not answer and ${file} has no environments, so no service was checked`,
            fix: 'run doctor again once the controller answers',
          },
    );
  }
  // Loaded here, not at start-up: the other commands need none of the agent's code.
  const { checkNode } = await import('../../../agent/index.js');
  checks.push(...(await checkNode(config, work)));
  printChecks(format, { node: config.nodeId, config: file, checks });
  return checks.some((c) => c.status === 'fail') ? 1 : 0;
}

function describeWork(work: NodeWork): string {
  const n = (count: number, what: string) => `${count} ${what}${count === 1 ? '' : 's'}`;
  return `${n(work.services.length, 'service')} and ${n(work.mounts.length, 'mount')}`;
}

/**
 * The controller checks: reachable (and the same envsnap version), clock offset, this node's agent
 * connected, and what the controller assigns to this node. `work` is undefined when the controller
 * did not answer.
 */
async function checkController(config: AgentConfig): Promise<{ checks: DoctorCheck[]; work?: NodeWork }> {
  const address = formatAddress(config.controller);
  const client = new ControllerClient(address);
  const checks: DoctorCheck[] = [];
  try {
    const samples: Array<{ info: WireControllerInfo; sent: number; received: number }> = [];
    try {
      // Three round trips; the clock offset is read from the fastest (least uncertain) one.
      for (let i = 0; i < 3; i++) {
        const sent = Date.now();
        const info = await client.call<WireControllerInfo>(
          'GetInfo',
          { nodeId: i === 0 ? config.nodeId : '' },
          CALL_TIMEOUT_MS,
        );
        samples.push({ info, sent, received: Date.now() });
      }
    } catch (err) {
      if (samples.length === 0) {
        checks.push(
          {
            check: 'controller',
            status: 'fail',
            // The client's own hint names --controller, which is not what doctor reads.
            message: errorMessage(err).replace(/ \(hint: [^)]*\)$/, ''),
            fix: `start envsnap-controller there, or fix agent.controller in ${config.file}; check that no firewall blocks the port`,
          },
          {
            check: 'clock',
            status: 'warn',
            message: 'not checked: the controller did not answer',
          },
        );
        return { checks };
      }
    }
    const info = samples[0]!.info;
    checks.push(
      info.version === VERSION
        ? { check: 'controller', status: 'ok', message: `${address} answers: envsnap ${info.version}` }
        : {
            check: 'controller',
            status: 'warn',
            message: `${address} runs envsnap ${info.version || '(unknown)'}, this node ${VERSION}`,
            fix: 'upgrade both to the same version',
          },
    );
    checks.push(clockCheck(samples));
    checks.push(await agentCheck(client, config.nodeId));
    const work: NodeWork = { services: info.services, mounts: info.mounts };
    checks.push(
      work.services.length + work.mounts.length > 0
        ? {
            check: 'assignment',
            status: 'ok',
            message: `${describeWork(work)} on this node, per the controller`,
          }
        : {
            check: 'assignment',
            status: 'warn',
            message: `node ${config.nodeId} is in no active environment of the controller's config: it gets no work`,
            fix: "list it in a service's nodes or as a mount's node, or check agent.node_id",
          },
    );
    return { checks, work };
  } finally {
    client.close();
  }
}

/**
 * The offset of the controller's clock from this node's, from the round trip with the smallest
 * delay: offset = controller time - midpoint of the round trip, uncertain by half the round trip
 * (the NTP estimate). envsnap itself runs on the controller's clock (backup times, schedules,
 * retention), but the agents' logs and db-dump file names use their own: beyond a few seconds the
 * two can no longer be matched.
 */
function clockCheck(
  samples: Array<{ info: WireControllerInfo; sent: number; received: number }>,
): DoctorCheck {
  const best = samples.reduce((a, b) => (b.received - b.sent < a.received - a.sent ? b : a));
  const controllerTime = Date.parse(best.info.time);
  if (Number.isNaN(controllerTime))
    return {
      check: 'clock',
      status: 'warn',
      message: `the controller sent no usable time ("${best.info.time}")`,
    };
  const offset = controllerTime - (best.sent + best.received) / 2;
  const uncertainty = (best.received - best.sent) / 2;
  const beyond = Math.max(0, Math.abs(offset) - uncertainty);
  const text = `controller clock ${offset >= 0 ? '+' : '-'}${(Math.abs(offset) / 1000).toFixed(3)} s from this node's (+/- ${(uncertainty / 1000).toFixed(3)} s)`;
  const fix = 'synchronise both clocks with NTP: timedatectl set-ntp true (systemd-timesyncd) or chrony';
  if (beyond > CLOCK_FAIL_MS) return { check: 'clock', status: 'fail', message: text, fix };
  if (beyond > CLOCK_WARN_MS) return { check: 'clock', status: 'warn', message: text, fix };
  return { check: 'clock', status: 'ok', message: text };
}

async function agentCheck(client: ControllerClient, nodeId: string): Promise<DoctorCheck> {
  try {
    const { agents } = await client.call<{ agents: WireAgentInfo[] }>('ListAgents', {}, CALL_TIMEOUT_MS);
    const me = agents.find((a) => a.nodeId === nodeId);
    if (me?.connected)
      return {
        check: 'agent',
        status: 'ok',
        message: `${nodeId} is connected to the controller (envsnap ${me.version} on ${me.hostname})`,
      };
    return {
      check: 'agent',
      status: 'warn',
      message: me
        ? `${nodeId} is not connected to the controller (last seen ${me.lastSeen || 'never'})`
        : `${nodeId} has never connected to the controller`,
      fix: 'start it: systemctl enable --now envsnap-agent; then see journalctl -u envsnap-agent',
    };
  } catch (err) {
    return { check: 'agent', status: 'warn', message: `could not list agents: ${errorMessage(err)}` };
  }
}
