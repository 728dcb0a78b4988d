/**
 * Statechart graphs for `/api/machines`, read from the machine definitions
 * themselves (never drawn by hand), so the picture cannot drift from the code.
 *
 * Edge conventions:
 * - one edge per transition and target; a transition with several targets
 *   (into parallel regions) gives one edge for each;
 * - a transition without a target (it only runs actions, the state is not
 *   left) is an edge from the state to itself, marked `internal`, when it has
 *   a guard or an action; one with neither (it only blocks a parent's
 *   transition, like upload's `planning` on `VM.STATUS`) is left out;
 * - entry and exit list the actions the machine's author wrote, not the
 *   timers xstate adds for `after` (the delayed edge shows those);
 * - events are named by `eventName` (server/dashboard/event-names.ts):
 *   `after suspectAfter`, `always`, `done: reserveName`, `error: cleanUp`,
 *   wildcards as they are written.
 */
import type { AnyStateMachine, AnyStateNode } from 'xstate';
import { brokerMachine } from '../machines/broker.ts';
import { chunkFetchMachine } from '../machines/chunkFetch.ts';
import { downloadMachine } from '../machines/download.ts';
import { membershipMachine } from '../machines/membership.ts';
import { serveDownloadMachine } from '../machines/serveDownload.ts';
import { uploadMachine } from '../machines/upload.ts';
import { vmMachine } from '../machines/vm.ts';
import type { GraphEdge, GraphNode, MachineGraph } from './contract.ts';
import { eventName, type InvokeSources } from './dashboard/event-names.ts';

/** Every machine the admin endpoint shows, with the line its file header opens with. */
const MACHINES: ReadonlyArray<readonly [AnyStateMachine, string]> = [
  [
    brokerMachine,
    'The broker: connects to MQTT and routes every message to the actor it concerns.',
  ],
  [membershipMachine, "One VM's liveness as the broker sees it: alive, suspect, failed."],
  [vmMachine, 'A storage VM: joins the broker, heartbeats, stores and serves chunks.'],
  [uploadMachine, 'One upload, on the broker: plan, receive and store, seal, commit or abort.'],
  [downloadMachine, 'One download, at the member that asked: locate, fetch every chunk, verify.'],
  [chunkFetchMachine, 'Fetching one chunk for a download: from its VM, failing over to the core.'],
  [serveDownloadMachine, "The broker's side of one download: locate the file, serve its chunks."],
];

export function allMachineGraphs(): MachineGraph[] {
  return MACHINES.map(([machine, description]) => machineGraph(machine, description));
}

export function machineGraph(machine: AnyStateMachine, description: string): MachineGraph {
  const stateNodes = descendants(machine.root);
  const invokes: InvokeSources = new Map(
    stateNodes.flatMap((node) => node.invoke.map((i) => [i.id, invokeName(i.id, i.src)] as const)),
  );
  return {
    id: machine.id,
    description,
    nodes: stateNodes.map(toGraphNode),
    edges: stateNodes.flatMap((node) => edgesFrom(node, invokes)),
  };
}

/**
 * The graph's id for a state node: its path dot-joined after the machine id
 * (`membership.alive.beating`), whatever `id` the state was given. Use it to
 * name a snapshot's active nodes (`snapshot._nodes`) in a `LiveActor`.
 */
export function graphNodeId(node: AnyStateNode): string {
  return [node.machine.id, ...node.path].join('.');
}

function descendants(node: AnyStateNode): AnyStateNode[] {
  return [node, ...Object.values(node.states).flatMap(descendants)];
}

function toGraphNode(node: AnyStateNode): GraphNode {
  const initial = node.type === 'compound' ? node.initial.target[0] : undefined;
  return {
    id: graphNodeId(node),
    key: node.key,
    parent: node.parent ? graphNodeId(node.parent) : null,
    type: node.type,
    initial: initial ? graphNodeId(initial) : null,
    entry: node.entry.filter(isAuthored).map(actionName),
    exit: node.exit.filter(isAuthored).map(actionName),
    invoke: node.invoke.map((i) => ({ id: i.id, src: invokeName(i.id, i.src) })),
  };
}

type Transition = AnyStateNode['transitions'] extends Map<string, Array<infer T>> ? T : never;

function edgesFrom(node: AnyStateNode, invokes: InvokeSources): GraphEdge[] {
  const source = graphNodeId(node);
  const groups: Array<[string, Transition[]]> = [...node.transitions.entries()];
  if (node.always) groups.push(['', node.always]);
  return groups.flatMap(([type, transitions]) => {
    const event = eventName(type, invokes);
    return transitions.flatMap((transition, index): GraphEdge[] => {
      const guard = transition.guard === undefined ? null : guardName(transition.guard);
      const actions = transition.actions.map(actionName);
      const id = `${source}:${event}:${index}`;
      const targets = transition.target ?? [];
      if (targets.length === 0) {
        if (guard === null && actions.length === 0) return [];
        return [{ id, source, target: source, event, guard, actions, internal: true }];
      }
      return targets.map((target, n) => ({
        id: targets.length === 1 ? id : `${id}:${n}`,
        source,
        target: graphNodeId(target),
        event,
        guard,
        actions,
        internal: false,
      }));
    });
  });
}

/**
 * Leaves out the timers xstate adds for `after`: a `raise` of the delayed
 * event on entry and its `cancel` on exit (the edge shows the delay).
 */
function isAuthored(action: unknown): boolean {
  const { id, sendId } = action as { id?: unknown; sendId?: unknown };
  return ![id, sendId].some((v) => typeof v === 'string' && v.startsWith('xstate.after.'));
}

/** `{ type: 'send', params }` → `send`; built-ins without `xstate.`; inline functions `(inline)`. */
function actionName(action: unknown): string {
  if (typeof action === 'string') return action;
  if (action && (typeof action === 'object' || typeof action === 'function')) {
    const type = (action as { type?: unknown }).type;
    if (typeof type === 'string') return type.replace(/^xstate\./, '');
  }
  return INLINE;
}

/** Named guards by name; `and`/`or`/`not` with their operands; inline functions `(inline)`. */
function guardName(guard: unknown): string {
  if (typeof guard === 'string') return guard;
  if (typeof guard === 'function') {
    const { guards, stateValue } = guard as { guards?: unknown[]; stateValue?: unknown };
    if (Array.isArray(guards)) return `${guard.name}(${guards.map(guardName).join(', ')})`;
    if (stateValue !== undefined) return `stateIn(${JSON.stringify(stateValue)})`;
    return INLINE;
  }
  const type = (guard as { type?: unknown } | null)?.type;
  return typeof type === 'string' ? type : INLINE;
}

// Logic written inline in an `invoke` is registered as `xstate.invoke.<…>`.
function invokeName(id: string, src: unknown): string {
  if (typeof src === 'string' && !src.startsWith('xstate.invoke.')) return src;
  return /^\d+\./.test(id) ? INLINE : id;
}

const INLINE = '(inline)';
