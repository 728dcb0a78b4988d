import { describe, expect, test } from 'bun:test';
import { createMachine } from 'xstate';
import type { MachineGraph } from '../../server/contract.ts';
import { edgeHandles, eventName } from '../../server/dashboard/event-names.ts';
import { allMachineGraphs, machineGraph } from '../../server/machine-graph.ts';

const graphs = allMachineGraphs();
const byId = (id: string): MachineGraph => {
  const graph = graphs.find((g) => g.id === id);
  if (!graph) throw new Error(`no graph for machine ${id}`);
  return graph;
};

describe('machine graphs', () => {
  test('there is one for each of the seven machines, each described', () => {
    expect(graphs.map((g) => g.id)).toEqual([
      'broker',
      'membership',
      'vm',
      'upload',
      'download',
      'chunkFetch',
      'serveDownload',
    ]);
    for (const graph of graphs) expect(graph.description.length).toBeGreaterThan(10);
  });

  describe.each(graphs.map((g) => [g.id, g] as const))('%s', (_, graph) => {
    const ids = new Set(graph.nodes.map((n) => n.id));

    test('has one root, and every other node has a parent in the graph', () => {
      expect(graph.nodes.filter((n) => n.parent === null).map((n) => n.id)).toEqual([graph.id]);
      for (const node of graph.nodes) {
        if (node.parent !== null) expect(ids).toContain(node.parent);
        expect(node.id).toBe(node.parent === null ? graph.id : `${node.parent}.${node.key}`);
      }
    });

    test('every edge joins two nodes, and edge ids are unique', () => {
      for (const edge of graph.edges) {
        expect(ids).toContain(edge.source);
        expect(ids).toContain(edge.target);
        if (edge.internal) expect(edge.target).toBe(edge.source);
      }
      expect(new Set(graph.edges.map((e) => e.id)).size).toBe(graph.edges.length);
    });

    test('the initial state of every compound state is one of its children', () => {
      for (const node of graph.nodes) {
        if (node.type !== 'compound') {
          expect(node.initial).toBeNull();
          continue;
        }
        const initial = graph.nodes.find((n) => n.id === node.initial);
        expect(initial?.parent).toBe(node.id);
      }
    });

    test('no xstate-internal names leak into events, actions or entry lists', () => {
      for (const edge of graph.edges) {
        expect(edge.event).not.toMatch(/^xstate\.(after|done\.actor\.[^*]|error\.actor\.[^*])/);
        for (const action of edge.actions) expect(action).not.toStartWith('xstate.');
      }
      for (const node of graph.nodes) {
        expect([...node.entry, ...node.exit]).not.toContain('raise');
        expect(node.exit).not.toContain('cancel');
      }
    });
  });

  test('membership: alive, suspect and failed, with the timers and OFFLINE edges', () => {
    const graph = byId('membership');
    expect(graph.nodes.map((n) => n.id)).toContain('membership.alive.beating');
    for (const state of ['alive', 'suspect', 'failed']) {
      expect(graph.nodes.find((n) => n.id === `membership.${state}`)?.parent).toBe('membership');
    }
    expect(graph.edges).toContainEqual(
      expect.objectContaining({
        source: 'membership.alive.beating',
        target: 'membership.suspect',
        event: 'after suspectAfter',
        guard: null,
      }),
    );
    const offline = graph.edges.filter((e) => e.event === 'OFFLINE');
    expect(offline.map((e) => e.source).sort()).toEqual([
      'membership.alive',
      'membership.paused',
      'membership.suspect',
      'membership.unheard',
    ]);
    for (const edge of offline) {
      expect(edge.target).toBe('membership.failed');
      expect(edge.guard).toBe('sameIncarnation');
    }
    // A heartbeat from another incarnation only asks the VM to rejoin.
    expect(graph.edges).toContainEqual(
      expect.objectContaining({
        source: 'membership.failed',
        event: 'HEARTBEAT',
        internal: true,
        actions: ['send'],
      }),
    );
    expect(graph.nodes.find((n) => n.id === 'membership.alive')?.entry).toEqual([
      'heard',
      'notifyStatus',
    ]);
  });

  test('chunkFetch leaves the edge for the core after fetchTimeout', () => {
    expect(byId('chunkFetch').edges).toContainEqual(
      expect.objectContaining({
        source: 'chunkFetch.edge.waiting',
        target: 'chunkFetch.core',
        event: 'after fetchTimeout',
        actions: ['leaveEdge'],
      }),
    );
    expect(byId('chunkFetch').edges).toContainEqual(
      expect.objectContaining({
        source: 'chunkFetch.start',
        event: 'always',
        guard: 'startsAtCore',
      }),
    );
  });

  test('the broker goes from connecting to online on CONNECTED', () => {
    const graph = byId('broker');
    expect(graph.edges).toContainEqual(
      expect.objectContaining({
        source: 'broker.connecting',
        target: 'broker.online',
        event: 'CONNECTED',
      }),
    );
    expect(graph.nodes[0]?.invoke).toEqual([{ id: 'bridge', src: 'mqttBridge' }]);
    // Wildcards stay as written; built-in actions lose their `xstate.` prefix.
    expect(graph.edges).toContainEqual(
      expect.objectContaining({
        event: 'xstate.done.actor.*',
        actions: ['enqueueActions'],
        internal: true,
      }),
    );
  });

  test("upload's planning invokes reserveName and names its done and error edges after it", () => {
    const graph = byId('upload');
    const planning = graph.nodes.find((n) => n.id === 'upload.planning');
    expect(planning?.invoke.map((i) => i.src)).toEqual(['reserveName']);
    const events = graph.edges.filter((e) => e.source === 'upload.planning').map((e) => e.event);
    expect(events).toContain('done: reserveName');
    expect(events).toContain('error: reserveName');
    // `'VM.STATUS': {}` only blocks the root's transition: not an edge.
    expect(events).not.toContain('VM.STATUS');
  });

  test('numeric delays, inline actions and guards, several targets', () => {
    const machine = createMachine({
      id: 'm',
      type: 'parallel',
      states: {
        a: {
          initial: 'x',
          states: {
            x: {
              after: { 1000: 'y' },
              on: { GO: { guard: () => true, actions: () => {}, target: ['#m.b.q', '#m.a.y'] } },
            },
            y: { type: 'final' },
          },
        },
        b: { initial: 'p', states: { p: {}, q: {} } },
      },
    });
    const graph = machineGraph(machine, 'test');
    expect(graph.nodes[0]).toMatchObject({ type: 'parallel', initial: null });
    expect(graph.edges).toContainEqual(
      expect.objectContaining({ source: 'm.a.x', target: 'm.a.y', event: 'after 1000ms' }),
    );
    const go = graph.edges.filter((e) => e.event === 'GO');
    expect(go.map((e) => e.target).sort()).toEqual(['m.a.y', 'm.b.q']);
    for (const edge of go) expect(edge).toMatchObject({ guard: '(inline)', actions: ['(inline)'] });
  });
});

describe('event names', () => {
  const invokes = new Map([['0.upload.planning', 'reserveName']]);

  test('name xstate events the way the graph does', () => {
    expect(eventName('xstate.after.suspectAfter.membership.alive.beating')).toBe(
      'after suspectAfter',
    );
    expect(eventName('xstate.after.500.m.a')).toBe('after 500ms');
    expect(eventName('xstate.done.actor.0.upload.planning', invokes)).toBe('done: reserveName');
    expect(eventName('xstate.error.actor.0.upload.planning', invokes)).toBe('error: reserveName');
    expect(eventName('xstate.done.actor.upload:t1', invokes)).toBe('done: upload:t1');
    expect(eventName('xstate.done.actor.*')).toBe('xstate.done.actor.*');
    expect(eventName('')).toBe('always');
    expect(eventName('HEARTBEAT')).toBe('HEARTBEAT');
  });

  test('an edge handles its own event, and wildcards the events they cover', () => {
    expect(edgeHandles('done: reserveName', 'xstate.done.actor.0.upload.planning', invokes)).toBe(
      true,
    );
    expect(edgeHandles('xstate.done.actor.*', 'xstate.done.actor.upload:t1')).toBe(true);
    expect(edgeHandles('xstate.done.actor.*', 'xstate.error.actor.upload:t1')).toBe(false);
    expect(edgeHandles('*', 'ANY')).toBe(true);
    expect(edgeHandles('JOIN', 'HEARTBEAT')).toBe(false);
  });
});
