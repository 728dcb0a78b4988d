/**
 * Which statecharts run in this process and what state each is in, from
 * XState's inspection events: the live-actor registry behind the admin
 * endpoint's `/api/actors` and `/api/events`. It reports a transition only
 * when an actor's active states change, so a stream of heartbeats or
 * segments (which re-enter the same state) stays quiet.
 */
import type { AnyActorRef, InspectionEvent } from 'xstate';
import type { AdminEvent, LiveActor } from './contract.ts';

export interface ActorRegistry {
  /** Give to `createActor(machine, { inspect })`. */
  inspect(event: InspectionEvent): void;
  actors(): LiveActor[];
  /** Hears every change; returns the unsubscribe function. */
  subscribe(listener: (event: AdminEvent) => void): () => void;
  /** Tells listeners something that is not an actor transition (VM table, transfers). */
  publish(event: AdminEvent): void;
}

interface Entry {
  actor: LiveActor;
  key: string;
}

export function createActorRegistry(): ActorRegistry {
  const entries = new Map<string, Entry>();
  const listeners = new Set<(event: AdminEvent) => void>();
  const publish = (event: AdminEvent) => {
    for (const listener of listeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure (a closed stream) is its own business.
      }
    }
  };

  return {
    inspect(event) {
      const ref = event.actorRef as AnyActorRef & { logic?: { id?: unknown; root?: unknown } };
      const machine = typeof ref.logic?.id === 'string' && ref.logic.root ? ref.logic.id : null;
      if (!machine) return; // promises and callbacks have no states to show
      const id = ref.sessionId;
      if (event.type === '@xstate.actor') {
        const actor: LiveActor = {
          id,
          machine,
          label: labelOf(machine, ref.id, undefined),
          state: [],
          status: 'active',
          parent: (ref as { _parent?: AnyActorRef })._parent?.sessionId ?? null,
        };
        entries.set(id, { actor, key: ref.id });
        return;
      }
      if (event.type !== '@xstate.snapshot') return;
      const entry = entries.get(id);
      if (!entry) return;
      const snapshot = event.snapshot as {
        value?: unknown;
        status?: string;
        context?: { name?: unknown };
      };
      const state = stateIds(machine, snapshot.value);
      const status = (snapshot.status ?? 'active') as LiveActor['status'];
      const first = entry.actor.state.length === 0;
      const changed =
        first || status !== entry.actor.status || state.join() !== entry.actor.state.join();
      entry.actor = {
        ...entry.actor,
        label: labelOf(machine, entry.key, snapshot.context?.name),
        state,
        status,
      };
      if (first) publish({ type: 'actor', data: entry.actor });
      else if (changed) {
        publish({
          type: 'transition',
          data: { actor: entry.actor, event: event.event.type, at: new Date().toISOString() },
        });
      }
      if (status !== 'active') {
        entries.delete(id);
        publish({ type: 'stopped', data: { id } });
      }
    },
    actors: () => [...entries.values()].map((entry) => entry.actor),
    subscribe(listener) {
      listeners.add(listener);
      return () => {
        listeners.delete(listener);
      };
    },
    publish,
  };
}

/** Active state ids, root first: `{ alive: 'beating' }` → membership, membership.alive, membership.alive.beating. */
export function stateIds(machine: string, value: unknown): string[] {
  const ids = [machine];
  const walk = (prefix: string, node: unknown) => {
    if (typeof node === 'string') {
      ids.push(`${prefix}.${node}`);
      return;
    }
    if (node && typeof node === 'object') {
      for (const [key, child] of Object.entries(node)) {
        ids.push(`${prefix}.${key}`);
        walk(`${prefix}.${key}`, child);
      }
    }
  };
  walk(machine, value);
  return ids;
}

/** A label people understand, from the actor's key among its parent's children. */
function labelOf(machine: string, key: string, name: unknown): string {
  const [kind, rest] = key.includes(':')
    ? [key.slice(0, key.indexOf(':')), key.slice(key.indexOf(':') + 1)]
    : [key, ''];
  const named = typeof name === 'string' ? name : rest;
  if (kind === 'vm') return `VM ${rest} (membership)`;
  if (kind === 'upload') return `upload ${named}`;
  if (kind === 'serve') return `download ${named} (broker side)`;
  if (kind.startsWith('chunk-')) return `chunk ${kind.slice('chunk-'.length)} fetch`;
  if (machine === 'download') return `download ${named}`;
  return machine;
}
