/**
 * How the statechart graphs name events, shared by the graph generator
 * (server/machine-graph.ts) and the page, which names each `transition`
 * event the same way to find the edge it took. Pure: no xstate, no DOM.
 */

/** Invoke id → the actor logic's name, for `done: <src>` and `error: <src>`. */
export type InvokeSources = ReadonlyMap<string, string>;

/**
 * The graph's name for an xstate event type: `xstate.after.<delay>.<state>`
 * → `after <delay>` (a named delay by its name, a number as `<n>ms`), ``
 * (eventless) → `always`, `xstate.done.actor.<id>` → `done: <src>`,
 * `xstate.error.actor.<id>` → `error: <src>`, `xstate.done.state.<id>` →
 * `done`; anything else, wildcards included, as is.
 */
export function eventName(type: string, invokes: InvokeSources = new Map()): string {
  if (type === '') return 'always';
  if (type.endsWith('*')) return type;
  if (type.startsWith(AFTER)) {
    // A delay's name never holds a dot; the state id after it may.
    const delay = type.slice(AFTER.length).split('.')[0] ?? '';
    return /^\d+$/.test(delay) ? `after ${delay}ms` : `after ${delay}`;
  }
  for (const [prefix, word] of ACTOR_EVENTS) {
    if (type.startsWith(prefix)) {
      const id = type.slice(prefix.length);
      return `${word}: ${invokes.get(id) ?? id}`;
    }
  }
  if (type.startsWith(DONE_STATE)) return 'done';
  return type;
}

/**
 * Whether a transition listed under `edgeEvent` (a graph name, possibly a
 * wildcard such as `xstate.done.actor.*`) handles the raw event `type`.
 */
export function edgeHandles(edgeEvent: string, type: string, invokes?: InvokeSources): boolean {
  if (edgeEvent === '*') return true;
  if (edgeEvent.endsWith('.*')) return type.startsWith(edgeEvent.slice(0, -1));
  return edgeEvent === eventName(type, invokes);
}

const AFTER = 'xstate.after.';
const DONE_STATE = 'xstate.done.state.';
const ACTOR_EVENTS: ReadonlyArray<readonly [string, string]> = [
  ['xstate.done.actor.', 'done'],
  ['xstate.error.actor.', 'error'],
];
