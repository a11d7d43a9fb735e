/** The agent package's public surface. */
export { Agent, type AgentState } from './agent.js';
export { main as agentMain } from './main.js';
export type { Engine, DumpUnit, ServiceTarget, ResolvedConnection } from './engines/engine.js';
export { checkNode, type CheckStatus, type DoctorCheck, type NodeWork } from './doctor.js';
