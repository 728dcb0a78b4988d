/**
 * A storage VM (§IV, §V.A, §V.C):
 *
 *   connecting ──▶ joining ──(join.ack)──▶ serving (heartbeat every N ms,
 *   N from the broker's acknowledgement; the paper: 5 s)
 *   any ──(connection lost)──▶ reconnecting ──▶ joining again
 *   serving ──(the broker asks: rejoin)──▶ joining
 *   on entering serving: its inventory to the broker (what chunks it holds),
 *   and again whenever its chunk store's server comes back (it may be empty)
 *   any ──(the broker: another process has this id, and this one is younger)──▶ stopped
 *
 * Whatever the state, it stores the chunks uploaders send it as the broker
 * announced them, and those the broker sends itself (§V.D step 6), serves
 * them to requesters — as the broker says, or as a member that knows where
 * they are asks (§V.F step 6) — and deletes them on request.
 */
import {
  assign,
  type EventObject,
  enqueueActions,
  fromCallback,
  fromPromise,
  sendTo,
  setup,
} from 'xstate';
import type { Frame } from '../protocol/frame.ts';
import type { MessageOf } from '../protocol/messages.ts';
import type { SendCommand } from './shared.ts';

export interface VmInput {
  id: string;
  /** This process's incarnation (random per start). */
  incarnation: string;
  brokerId: string;
  /** Heartbeat interval until the broker says otherwise. */
  heartbeatMs: number;
  /** Join again when the broker has not answered for this long. */
  joinRetryMs: number;
}

/** Gives the body's buffer back to the link once it is stored (see protocol/frame.ts). */
type Release = { release?: () => void };

export type StorerCommand =
  | ({ type: 'STORE'; message: MessageOf<'chunk.store'>; body: Buffer } & Release)
  | { type: 'DELETE'; message: MessageOf<'chunk.delete'> }
  /** The broker: an uploader will send this chunk's segments straight here. */
  | { type: 'EXPECT'; message: MessageOf<'chunk.expect'> }
  /** An uploader's segment (on this VM's upload topic). */
  | ({ type: 'SEGMENT'; message: MessageOf<'upload.segment'>; body: Buffer } & Release)
  /**
   * Joined (again): uploads announced before were announced by a broker
   * that is gone or has given up on them (a takeover, a restart, an outage):
   * their segments are refused and what they left is removed.
   */
  | { type: 'JOINED' };

export type ServerCommand =
  | { type: 'FETCH'; message: MessageOf<'chunk.fetch'> }
  | { type: 'ACK'; message: MessageOf<'chunk.ack'> };

export type VmEvent =
  | { type: 'CONNECTED' }
  | { type: 'DISCONNECTED' }
  | { type: 'FRAME'; frame: Frame }
  | { type: 'JOIN_ACK'; heartbeatMs: number; penalty: number; memoryEffective: number }
  | { type: 'REJOIN'; reason: string }
  | { type: 'STOP'; reason: string }
  /** The chunk store's server was lost and is back: it may have restarted empty. */
  | { type: 'STORE_RECONNECTED' };

export interface VmContext extends VmInput {
  penalty: number;
  memoryEffective: number | null;
  joins: number;
}

export const vmMachine = setup({
  types: {
    input: {} as VmInput,
    context: {} as VmContext,
    events: {} as VmEvent,
  },
  actors: {
    /** The MQTT connection: sends back CONNECTED, DISCONNECTED and FRAME. */
    mqttBridge: fromCallback<EventObject, void>(() => {
      throw new Error('mqttBridge is provided by the runtime');
    }),
    /** §V.C step 1: publishes a join with address, CPU and free memory. */
    sendJoin: fromPromise<void, { attempt: number }>(async () => {
      throw new Error('sendJoin is provided by the runtime');
    }),
    sendHeartbeat: fromPromise<void, void>(async () => {
      throw new Error('sendHeartbeat is provided by the runtime');
    }),
    /** After each join: the chunks this VM holds, for the broker to reconcile. */
    sendInventory: fromPromise<void, void>(async () => {
      throw new Error('sendInventory is provided by the runtime');
    }),
    /** Writes and deletes chunks in the chunk store (§V.D step 6). */
    chunkStorer: fromCallback<StorerCommand, void>(() => {
      throw new Error('chunkStorer is provided by the runtime');
    }),
    /** Streams chunks to requesters (§V.F step 6). */
    chunkServer: fromCallback<ServerCommand, void>(() => {
      throw new Error('chunkServer is provided by the runtime');
    }),
  },
  delays: {
    heartbeat: ({ context }) => context.heartbeatMs,
    // At least once a heartbeat interval: after an MQTT outage the broker
    // gives a VM three intervals to be heard before it fails it.
    joinRetry: ({ context }) => Math.min(context.joinRetryMs, context.heartbeatMs),
  },
  actions: {
    send: (_, _command: SendCommand) => {
      throw new Error('send is provided by the runtime');
    },
    /** Another process runs under this VM's id and the broker chose this one to go. */
    stopForIdConflict: (_, _params: { reason: string }) => {},
    /** Something failed that the VM survives: the runtime logs it. */
    reportChildError: (_, _failure: { actorId: string; error: unknown }) => {},
  },
}).createMachine({
  id: 'vm',
  context: ({ input }) => ({ ...input, penalty: 0, memoryEffective: null, joins: 0 }),
  invoke: [
    { id: 'bridge', src: 'mqttBridge' },
    { id: 'storer', src: 'chunkStorer' },
    { id: 'server', src: 'chunkServer' },
  ],
  initial: 'connecting',
  on: {
    DISCONNECTED: '.reconnecting',
    STOP: '.stopped',
    'xstate.error.actor.*': {
      actions: {
        type: 'reportChildError',
        params: ({ event }: { event: { actorId?: string; error?: unknown } }) => ({
          actorId: event.actorId ?? 'unknown',
          error: event.error,
        }),
      },
    },
    FRAME: {
      actions: enqueueActions(({ context, event, enqueue }) => {
        const { message, body, release } = event.frame;
        const giveBack = release ? { release } : {};
        if (message.type === 'chunk.ack') {
          enqueue.sendTo('server', { type: 'ACK', message });
          return;
        }
        // A member that knows where a chunk is asks for it itself (its plan
        // came from the broker, which checks its version): sent to it.
        if (message.type === 'chunk.read') {
          const { type: _, ...read } = message;
          enqueue.sendTo('server', {
            type: 'FETCH',
            message: { ...read, type: 'chunk.fetch', to: message.from },
          });
          return;
        }
        // The link let it through only on this VM's upload topic, from its sender.
        if (message.type === 'upload.segment') {
          enqueue.sendTo('storer', { type: 'SEGMENT', message, body, ...giveBack });
          return;
        }
        if (!BROKER_ONLY.has(message.type)) return; // a member's reply, not the VM's business
        if (message.from !== context.brokerId) {
          // Only the broker may tell a VM to store, delete or send a chunk.
          enqueue({
            type: 'send',
            params: {
              type: 'SEND',
              to: message.from,
              message: {
                type: 'error',
                from: context.id,
                code: 'bad-request',
                message: `only the broker may send ${message.type}`,
                retryable: false,
                ...('id' in message ? { id: message.id } : {}),
              },
            },
          });
          return;
        }
        switch (message.type) {
          case 'join.ack':
            enqueue.raise({
              type: 'JOIN_ACK',
              heartbeatMs: message.heartbeatMs,
              penalty: message.penalty,
              memoryEffective: message.memoryEffective,
            });
            break;
          case 'rejoin':
            enqueue.raise({ type: 'REJOIN', reason: message.reason });
            break;
          case 'stop':
            // Another process runs under this id; the broker chose this one to go.
            if (message.incarnation === context.incarnation)
              enqueue.raise({ type: 'STOP', reason: message.reason });
            break;
          case 'chunk.store':
            enqueue.sendTo('storer', { type: 'STORE', message, body, ...giveBack });
            break;
          case 'chunk.expect':
            enqueue.sendTo('storer', { type: 'EXPECT', message });
            break;
          case 'chunk.delete':
            enqueue.sendTo('storer', { type: 'DELETE', message });
            break;
          case 'chunk.fetch':
            enqueue.sendTo('server', { type: 'FETCH', message });
            break;
        }
      }),
    },
  },
  states: {
    connecting: { on: { CONNECTED: 'joining' } },
    joining: {
      entry: assign({ joins: ({ context }) => context.joins + 1 }),
      // A join that cannot be published is retried by the timer below.
      invoke: {
        src: 'sendJoin',
        input: ({ context }) => ({ attempt: context.joins }),
        onError: {
          actions: {
            type: 'reportChildError',
            params: ({ event }) => ({ actorId: 'sendJoin', error: event.error }),
          },
        },
      },
      after: { joinRetry: { target: 'joining', reenter: true } },
      on: {
        JOIN_ACK: {
          target: 'serving',
          actions: [
            sendTo('storer', { type: 'JOINED' } satisfies StorerCommand),
            assign(({ event }) => ({
              heartbeatMs: event.heartbeatMs,
              penalty: event.penalty,
              memoryEffective: event.memoryEffective,
            })),
          ],
        },
      },
    },
    serving: {
      invoke: {
        src: 'sendInventory',
        onError: {
          actions: {
            type: 'reportChildError',
            params: ({ event }) => ({ actorId: 'sendInventory', error: event.error }),
          },
        },
      },
      initial: 'waiting',
      states: {
        waiting: { after: { heartbeat: 'beating' } },
        beating: {
          invoke: {
            src: 'sendHeartbeat',
            onDone: 'waiting',
            onError: {
              target: 'waiting',
              actions: {
                type: 'reportChildError',
                params: ({ event }) => ({ actorId: 'sendHeartbeat', error: event.error }),
              },
            },
          },
        },
      },
      on: {
        REJOIN: 'joining',
        // A fresh inventory lets the broker restore what the store lost.
        STORE_RECONNECTED: { target: 'serving', reenter: true },
      },
    },
    reconnecting: { on: { CONNECTED: 'joining' } },
    // Told by the broker that another process holds this id: stop taking
    // part (the runtime says why and leaves).
    stopped: {
      type: 'final',
      entry: {
        type: 'stopForIdConflict',
        params: ({ event }) => ({ reason: (event as { reason?: string }).reason ?? '' }),
      },
    },
  },
});

const BROKER_ONLY: ReadonlySet<string> = new Set([
  'join.ack',
  'chunk.expect',
  'rejoin',
  'stop',
  'chunk.store',
  'chunk.delete',
  'chunk.fetch',
]);
