/**
 * The page's live state, without the DOM: reading `/api/events`
 * (server-sent events, through fetch so a bearer token can go with it),
 * keeping the set of live actors, and finding the edges a transition took.
 */
import type { AdminEvent, LiveActor, MachineGraph } from '../contract.ts';
import { edgeHandles } from './event-names.ts';
import { isWithin } from './layout.ts';

export interface SseMessage {
  event: string;
  data: string;
}

/**
 * A server-sent-events reader (the WHATWG "event stream" rules): feed it
 * text as it arrives, in pieces of any size; it calls `onMessage` for each
 * complete message. Comments (`: keep-alive`) and ids are skipped.
 */
export function sseParser(onMessage: (message: SseMessage) => void) {
  let buffer = '';
  let event = '';
  let data: string[] = [];
  const line = (text: string) => {
    if (text === '') {
      if (data.length > 0) onMessage({ event: event || 'message', data: data.join('\n') });
      event = '';
      data = [];
      return;
    }
    if (text.startsWith(':')) return;
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  };
  return {
    push(text: string) {
      buffer += text;
      // A lone \r at the end may be the first half of \r\n: wait for more.
      const lines = buffer.split(/\r\n|\r(?!$)|\n/);
      buffer = lines.pop() ?? '';
      for (const text of lines) line(text);
    },
  };
}

const ADMIN_EVENTS = new Set(['actor', 'transition', 'stopped', 'vms', 'transfers']);

/** An SSE message as an `AdminEvent`, or `null` for one this page does not know. */
export function adminEvent(message: SseMessage): AdminEvent | null {
  if (!ADMIN_EVENTS.has(message.event)) return null;
  try {
    return { type: message.event, data: JSON.parse(message.data) } as AdminEvent;
  } catch {
    return null;
  }
}

/**
 * Applies an actor event to the live actors (a new map): `actor` and
 * `transition` add or update, `stopped` removes.
 */
export function applyActorEvent(
  actors: ReadonlyMap<string, LiveActor>,
  event: AdminEvent,
): Map<string, LiveActor> {
  const next = new Map(actors);
  if (event.type === 'actor') next.set(event.data.id, event.data);
  else if (event.type === 'transition') next.set(event.data.actor.id, event.data.actor);
  else if (event.type === 'stopped') next.delete(event.data.id);
  return next;
}

/** The picker's order: the broker first, then by machine and label. */
export function pickerOrder(actors: Iterable<LiveActor>): LiveActor[] {
  const rank = (a: LiveActor) => (a.machine === 'broker' ? 0 : 1);
  return [...actors].sort(
    (a, b) =>
      rank(a) - rank(b) ||
      a.machine.localeCompare(b.machine) ||
      a.label.localeCompare(b.label) ||
      a.id.localeCompare(b.id),
  );
}

/**
 * The edges that may have taken the actor from `before` to `after` (active
 * state ids) on the raw event `type`, with the eventless transitions taken
 * after it on the way. Guards cannot be evaluated here, so when two
 * transitions on the same event both fit, both are returned.
 */
export function edgesTaken(
  graph: MachineGraph,
  before: readonly string[],
  after: readonly string[],
  type: string,
): string[] {
  const was = new Set(before);
  const now = new Set(after);
  const invokes = new Map(graph.nodes.flatMap((n) => n.invoke.map((i) => [i.id, i.src] as const)));
  type Edge = MachineGraph['edges'][number];
  /** The eventless edges from `entered` on to a state active now; `null` if none gets there. */
  const onwards = (entered: string, seen: Set<string>): Edge[] | null => {
    if (now.has(entered)) return [];
    for (const edge of graph.edges) {
      if (edge.event !== 'always' || !isWithin(edge.source, entered) || seen.has(edge.id)) continue;
      const rest = onwards(edge.target, new Set([...seen, edge.id]));
      if (rest) return [edge, ...rest];
    }
    return null;
  };
  const handled = graph.edges.filter(
    (edge) =>
      was.has(edge.source) &&
      edgeHandles(edge.event, type, invokes) &&
      (edge.internal ? now.has(edge.source) : onwards(edge.target, new Set()) !== null),
  );
  // The deepest state that handles an event takes it.
  const depth = Math.max(-1, ...handled.map((e) => e.source.split('.').length));
  const taken = handled
    .filter((e) => e.source.split('.').length === depth)
    .flatMap((e) => (e.internal ? [e] : [e, ...(onwards(e.target, new Set()) ?? [])]));
  return taken.map((e) => e.id);
}
