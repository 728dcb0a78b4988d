import { describe, expect, test } from 'bun:test';
import type { LiveActor, MachineGraph, VmInfo } from '../../server/contract.ts';
import { buildDashboard } from '../../server/dashboard/build.ts';
import { formatBytes, placementBar, timeAgo } from '../../server/dashboard/format.ts';
import {
  isRow,
  layoutStatechart,
  layoutToFit,
  type StateBox,
} from '../../server/dashboard/layout.ts';
import {
  adminEvent,
  applyActorEvent,
  edgesTaken,
  pickerOrder,
  type SseMessage,
  sseParser,
} from '../../server/dashboard/live.ts';
import { statechartSvg } from '../../server/dashboard/render.ts';
import { fileRows, leafStates, pickerOptions, vmRows } from '../../server/dashboard/views.ts';
import { allMachineGraphs } from '../../server/machine-graph.ts';

const graphs = allMachineGraphs();
const graph = (id: string) => graphs.find((g) => g.id === id) as MachineGraph;

describe('the dashboard build', () => {
  test('bundles the page script with everything in it, once', async () => {
    const built = await buildDashboard();
    expect(await buildDashboard()).toBe(built);
    expect(built.script.length).toBeGreaterThan(1000);
    // No CDN and no other host: the only URL is the SVG namespace, which is never fetched.
    for (const host of ['//cdn', 'unpkg', 'jsdelivr', 'googleapis', 'cdnjs']) {
      expect(built.script).not.toContain(host);
    }
    const urls = built.script.match(/https?:\/\/[^"'`\s)]*/g) ?? [];
    expect(new Set(urls)).toEqual(new Set(['http://www.w3.org/2000/svg']));
    expect(built.css).toContain('.state.active');
  });

  test('the page loads the bundle and the stylesheet, and has the test hooks', async () => {
    const { html } = await buildDashboard();
    expect(html).toContain('<script type="module" src="assets/dashboard.js"></script>');
    expect(html).toContain('href="assets/dashboard.css"');
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    for (const hook of ['actor-picker', 'transition-log', 'vm-table', 'token-form']) {
      expect(html).toContain(`data-testid="${hook}"`);
    }
    expect(html).toMatch(/<select id="actor-picker" data-testid="actor-picker">/);
    expect(html).toContain('<tbody id="vm-rows">');
    expect(html).toContain('id="chart"');
  });
});

const layouts = graphs.flatMap((g) =>
  (['LR', 'TB'] as const).map((dir) => [g.id, dir, g] as const),
);

describe.each(layouts)('the layout of %s (%s)', (_, direction, machine) => {
  const layout = layoutStatechart(machine, direction);
  const boxes = new Map(layout.boxes.map((b) => [b.node.id, b]));
  const inside = (inner: StateBox, outer: StateBox) =>
    inner.x >= outer.x &&
    inner.y >= outer.y &&
    inner.x + inner.width <= outer.x + outer.width + 0.01 &&
    inner.y + inner.height <= outer.y + outer.height + 0.01;

  test('has a box for every state, inside its parent, clear of its siblings', () => {
    expect([...boxes.keys()].sort()).toEqual(machine.nodes.map((n) => n.id).sort());
    for (const box of layout.boxes) {
      expect(box.x).toBeGreaterThanOrEqual(0);
      expect(box.x + box.width).toBeLessThanOrEqual(layout.width);
      const parent = box.node.parent ? boxes.get(box.node.parent) : undefined;
      if (parent) expect(inside(box, parent)).toBe(true);
      for (const other of layout.boxes) {
        if (other === box || other.node.parent !== box.node.parent) continue;
        const apart =
          box.x + box.width <= other.x ||
          other.x + other.width <= box.x ||
          box.y + box.height <= other.y ||
          other.y + other.height <= box.y;
        expect(apart).toBe(true);
      }
    }
  });

  test('draws every edge once: as an arrow from its source to its target, or as a row', () => {
    const drawn = [
      ...layout.arrows.map((a) => a.edge.id),
      ...layout.boxes.flatMap((b) => b.rows.map((r) => r.edge.id)),
    ];
    expect(drawn.sort()).toEqual(machine.edges.map((e) => e.id).sort());
    const near = (p: { x: number; y: number }, box: StateBox) =>
      p.x >= box.x - 2 &&
      p.x <= box.x + box.width + 2 &&
      p.y >= box.y - 2 &&
      p.y <= box.y + box.height + 2;
    for (const arrow of layout.arrows) {
      expect(isRow(arrow.edge)).toBe(false);
      expect(arrow.points.length).toBeGreaterThanOrEqual(2);
      expect(near(arrow.points[0] as never, boxes.get(arrow.edge.source) as StateBox)).toBe(true);
      expect(near(arrow.points.at(-1) as never, boxes.get(arrow.edge.target) as StateBox)).toBe(
        true,
      );
      for (const p of arrow.points) expect(Number.isFinite(p.x) && Number.isFinite(p.y)).toBe(true);
    }
    for (const box of layout.boxes) {
      for (const row of box.rows) expect(row.edge.source).toBe(box.node.id);
    }
  });

  test('marks the initial child of every compound state', () => {
    const compound = machine.nodes.filter((n) => n.initial !== null).map((n) => n.id);
    expect(layout.initials.map((i) => i.state).sort()).toEqual(compound.sort());
  });

  test('renders one group per state and per edge, with the hooks the page uses', () => {
    const svg = statechartSvg(machine, layout);
    expect(svg).toStartWith('<svg ');
    expect(svg).toContain(`data-testid="statechart" data-machine="${machine.id}"`);
    for (const node of machine.nodes) expect(svg).toContain(`data-state-id="${node.id}"`);
    for (const edge of machine.edges) expect(svg).toContain(`data-edge-id="${edge.id}"`);
    expect(svg).not.toContain('NaN');
  });
});

test('a chart is laid out across, or down when that shows it larger', () => {
  const broker = layoutToFit(graph('broker'), 900, 540);
  expect(broker).toEqual(layoutStatechart(graph('broker'), 'LR'));
  // Upload's chain of states is far too wide to read across a 900-pixel panel.
  const upload = layoutToFit(graph('upload'), 900, 540);
  expect(upload).toEqual(layoutStatechart(graph('upload'), 'TB'));
});

describe('the live state', () => {
  test('reads server-sent events however the stream is cut', () => {
    const text =
      ': keep-alive\n\nevent: vms\ndata: []\n\r\nevent: actor\r\ndata: {"a":\r\ndata: 1}\r\n\r\n' +
      'data: plain\n\nevent: empty\n\n';
    for (const size of [1, 2, 3, 7, text.length]) {
      const seen: SseMessage[] = [];
      const parser = sseParser((m) => seen.push(m));
      for (let i = 0; i < text.length; i += size) parser.push(text.slice(i, i + size));
      expect(seen).toEqual([
        { event: 'vms', data: '[]' },
        { event: 'actor', data: '{"a":\n1}' },
        { event: 'message', data: 'plain' },
      ]);
    }
  });

  test('turns messages into admin events, and ignores ones it does not know', () => {
    expect(adminEvent({ event: 'stopped', data: '{"id":"x"}' })).toEqual({
      type: 'stopped',
      data: { id: 'x' },
    });
    expect(adminEvent({ event: 'message', data: '{}' })).toBeNull();
    expect(adminEvent({ event: 'vms', data: 'not json' })).toBeNull();
  });

  const actor = (id: string, machine: string, label: string, state: string[] = []): LiveActor => ({
    id,
    machine,
    label,
    state,
    status: 'active',
    parent: null,
  });

  test('keeps the live actors, the broker first in the picker', () => {
    let actors = new Map<string, LiveActor>();
    actors = applyActorEvent(actors, { type: 'actor', data: actor('2', 'membership', 'VM b') });
    actors = applyActorEvent(actors, { type: 'actor', data: actor('3', 'membership', 'VM a') });
    actors = applyActorEvent(actors, { type: 'actor', data: actor('1', 'broker', 'broker') });
    const moved = actor('2', 'membership', 'VM b', ['membership', 'membership.suspect']);
    actors = applyActorEvent(actors, {
      type: 'transition',
      data: { actor: moved, event: 'x', at: '' },
    });
    expect(actors.get('2')?.state).toEqual(moved.state);
    actors = applyActorEvent(actors, { type: 'stopped', data: { id: '3' } });
    expect(pickerOrder(actors.values()).map((a) => a.label)).toEqual(['broker', 'VM b']);
    const options = pickerOptions(pickerOrder(actors.values()), '2');
    expect(options).toBe(
      '<option value="1">broker</option><option value="2" selected>VM b</option>',
    );
  });

  test('finds the edge a transition took', () => {
    const membership = graph('membership');
    const beating = ['membership', 'membership.alive', 'membership.alive.beating'];
    const suspect = ['membership', 'membership.suspect'];
    const failed = ['membership', 'membership.failed'];
    expect(
      edgesTaken(
        membership,
        beating,
        suspect,
        'xstate.after.suspectAfter.membership.alive.beating',
      ),
    ).toEqual(['membership.alive.beating:after suspectAfter:0']);
    expect(edgesTaken(membership, beating, failed, 'OFFLINE')).toEqual([
      'membership.alive:OFFLINE:0',
    ]);
    // Back to alive on a heartbeat: the guarded edge, not the one that asks to rejoin.
    expect(edgesTaken(membership, suspect, beating, 'HEARTBEAT')).toEqual([
      'membership.suspect:HEARTBEAT:0',
    ]);
    expect(edgesTaken(membership, suspect, suspect, 'JOIN')).toEqual([]);
    const upload = graph('upload');
    expect(
      edgesTaken(
        upload,
        ['upload', 'upload.planning'],
        ['upload', 'upload.placing'],
        'xstate.done.actor.0.upload.planning',
      ),
    ).toEqual(['upload.planning:done: reserveName:0']);
  });

  test('includes the eventless transitions taken on the way', () => {
    // A plan with nothing to fetch (an empty file): fetching is left at once.
    const download = graph('download');
    const taken = edgesTaken(
      download,
      ['download', 'download.locating'],
      ['download', 'download.verifying'],
      'PLAN',
    );
    expect(taken).toEqual(['download.locating:PLAN:0', 'download.fetching:always:0']);
  });
});

describe('the tables', () => {
  const vm: VmInfo = {
    id: 'vm-1',
    address: '10.0.0.1',
    cpu: { cores: 4, load: 0.5 },
    memoryFree: 2 * 1024 ** 3,
    memoryEffective: 1024 ** 3,
    penalty: 1,
    status: 'suspect',
    lastSeen: '2030-01-01T00:00:00.000Z',
  };

  test('a VM row carries the hooks and the status', () => {
    const html = vmRows([vm], Date.parse('2030-01-01T00:00:12Z'));
    expect(html).toContain('<tr data-testid="vm-row" data-vm-id="vm-1"');
    expect(html).toMatch(
      /<td data-testid="vm-status"><span class="status suspect">suspect<\/span>/,
    );
    expect(html).toContain('1 GiB / 2 GiB');
    expect(html).toContain('width:50%');
    expect(html).toContain('12 s ago');
  });

  test('files show where each chunk lives, the core for chunks without a VM', () => {
    const html = fileRows([
      {
        name: 'a<b>.txt',
        size: 300,
        sha256: 'f'.repeat(64),
        chunks: [
          { index: 0, offset: 0, size: 100, vm: 'vm-1', sha256: 'a'.repeat(64) },
          { index: 1, offset: 100, size: 200, vm: null, sha256: 'b'.repeat(64) },
        ],
      },
    ]);
    expect(html).toContain('a&#60;b&#62;.txt');
    expect(html).toContain('title="chunk 1: core only"');
    expect(html).toContain('vm-1, core');
  });

  test('formats sizes, times, placements and state names', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5 GiB');
    // Whole numbers keep their zeros: 300 MiB is not 3 MiB.
    expect(formatBytes(300 * 1024 ** 2)).toBe('300 MiB');
    expect(formatBytes(100 * 1024)).toBe('100 KiB');
    expect(formatBytes(1.25 * 1024 ** 2)).toBe('1.25 MiB');
    expect(timeAgo('2030-01-01T00:00:00Z', Date.parse('2030-01-01T00:03:00Z'))).toBe('3 min ago');
    expect(timeAgo('nonsense')).toBe('—');
    expect(
      placementBar({
        size: 0,
        chunks: [{ index: 0, offset: 0, size: 0, vm: null, sha256: '' }],
      }),
    ).toEqual([{ index: 0, vm: null, left: 0, width: 100 }]);
    expect(
      leafStates('upload', ['upload', 'upload.transferring', 'upload.transferring.sealing']),
    ).toBe('transferring.sealing');
  });
});
