/**
 * What the admin endpoint serves, shared by the Hono app (server/app.ts) and
 * the dashboard page (server/dashboard/). Sizes in bytes, times ISO 8601.
 */
import type { FileInfo, VmInfo } from '../protocol/messages.ts';

export type { FileInfo, VmInfo };

/** One statechart, generated from its machine definition (`/api/machines`). */
export interface MachineGraph {
  /** The machine's id: `broker`, `membership`, `vm`, `upload`, `download`, `chunkFetch`, `serveDownload`. */
  id: string;
  /** One line on what it models. */
  description: string;
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export interface GraphNode {
  /** Full state id, dot-separated from the machine id: `membership.alive.beating`. */
  id: string;
  /** The state's own key: `beating`. */
  key: string;
  /** The parent state's id; `null` for the machine's root. */
  parent: string | null;
  type: 'atomic' | 'compound' | 'parallel' | 'final' | 'history';
  /** Id of the initial child state, for compound states. */
  initial: string | null;
  /** Named actions run on entry and exit. */
  entry: string[];
  exit: string[];
  /** Actors invoked while in this state: `{ id, src }`. */
  invoke: Array<{ id: string; src: string }>;
}

export interface GraphEdge {
  /** Unique within the machine. */
  id: string;
  source: string;
  target: string;
  /** The event: `HEARTBEAT`, or `after suspectAfter`, `always`, `done: storeChunk`, `error: planUpload`. */
  event: string;
  /** The guard's name, when the transition has one. */
  guard: string | null;
  /** Named actions on the transition. */
  actions: string[];
  /**
   * A transition without a target: its actions run and the state is neither
   * left nor re-entered (then `target` is `source`). A transition that
   * targets its own state re-enters it and is not internal.
   */
  internal: boolean;
}

/** A running actor with a statechart, as `/api/actors` and `/api/events` show it. */
export interface LiveActor {
  /** Stable for the actor's life (its session id). */
  id: string;
  /** The machine it runs (a `MachineGraph.id`). */
  machine: string;
  /** For people: `broker`, `VM vm-1 (membership)`, `upload report.pdf`, … */
  label: string;
  /** Ids of every active state node, root first. */
  state: string[];
  status: 'active' | 'done' | 'error' | 'stopped';
  /** The parent actor's id, if any. */
  parent: string | null;
}

/** A transfer in flight (`/api/transfers`). */
export interface TransferView {
  id: string;
  kind: 'upload' | 'download';
  name: string;
  /** The statechart's state, e.g. `transferring.receiving`. */
  state: string;
  requester: string;
  /** Bytes in all, when known. */
  size: number | null;
  /** Bytes moved so far, when known. */
  done: number | null;
  startedAt: string;
}

/**
 * Server-sent events on `/api/events` (each `data:` is JSON):
 * - `actor`: a `LiveActor` that started;
 * - `transition`: `{ actor: LiveActor, event: string, at }` — it took a transition on `event`;
 * - `stopped`: `{ id }` — the actor stopped;
 * - `vms`: `VmInfo[]` whenever a VM's status or penalty changes;
 * - `transfers`: `TransferView[]` about once a second while transfers run.
 */
export type AdminEvent =
  | { type: 'actor'; data: LiveActor }
  | { type: 'transition'; data: { actor: LiveActor; event: string; at: string } }
  | { type: 'stopped'; data: { id: string } }
  | { type: 'vms'; data: VmInfo[] }
  | { type: 'transfers'; data: TransferView[] };

/** Every error answer: `{ error, detail }` with the right HTTP status. */
export interface ErrorBody {
  error: string;
  detail: string;
}
