/**
 * Lays a statechart out for drawing: every compound state is a box holding
 * its children, laid out by dagre one level at a time (dagre's own compound
 * mode cannot route an edge that ends on a cluster, and statecharts are full
 * of them). Transitions between states that do not contain one another are
 * arrows, routed piece by piece through the boxes they cross (`routeOf`);
 * the rest (actions only, re-entering the same state, into an own descendant
 * or out to an ancestor) are rows of text inside their source state. Pure:
 * no DOM, so bun tests it.
 */
import dagre from '@dagrejs/dagre';
import type { GraphEdge, GraphNode, MachineGraph } from '../contract.ts';

export interface Point {
  x: number;
  y: number;
}

export interface StateBox {
  node: GraphNode;
  /** Top-left corner and size, in the drawing's coordinates. */
  x: number;
  y: number;
  width: number;
  height: number;
  /** How deep in the chart: 0 for the machine itself. */
  depth: number;
  /** `entry / …`, `invoke …`, `exit / …`. */
  details: string[];
  /** Transitions drawn as text in the box, one per line under the details. */
  rows: Array<{ edge: GraphEdge; text: string }>;
}

export interface Arrow {
  edge: GraphEdge;
  points: Point[];
  /** Centre of the label. */
  label: Point & { text: string; width: number };
}

export interface StatechartLayout {
  width: number;
  height: number;
  /** Outermost first, so later boxes draw over their parents. */
  boxes: StateBox[];
  arrows: Arrow[];
  /** The dot and arrow into each compound state's initial child. */
  initials: Array<{ state: string; points: Point[] }>;
}

export const FONT_SIZE = 12;
export const LINE_HEIGHT = 16;
export const PADDING = 10;
const MARGIN = 8;
const INITIAL = '\u0000initial';

/** Roughly how wide `text` is in the page's sans-serif font; no DOM to measure with. */
export function textWidth(text: string, size = FONT_SIZE): number {
  return Math.ceil(text.length * size * 0.6);
}

/** `HEARTBEAT [sameIncarnation]`: what an arrow says. */
export function edgeLabel(edge: GraphEdge): string {
  return edge.guard ? `${edge.event} [${edge.guard}]` : edge.event;
}

/** Whether `id` is `ancestor` or lies inside it. */
export function isWithin(id: string, ancestor: string): boolean {
  return id === ancestor || id.startsWith(`${ancestor}.`);
}

/** Drawn as a row of text in its source's box rather than as an arrow. */
export function isRow(edge: GraphEdge): boolean {
  return isWithin(edge.target, edge.source) || isWithin(edge.source, edge.target);
}

/** Left to right, or top to bottom. */
export type Direction = 'LR' | 'TB';

/**
 * The layout that shows the chart largest in a `width` × `height` view (never
 * enlarged): left to right unless top to bottom fits better.
 */
export function layoutToFit(graph: MachineGraph, width: number, height: number) {
  const layouts = (['LR', 'TB'] as const).map((direction) => layoutStatechart(graph, direction));
  const scale = (l: StatechartLayout) => Math.min(1, width / l.width, height / l.height);
  const [across, down] = layouts as [StatechartLayout, StatechartLayout];
  return scale(down) > scale(across) * 1.15 ? down : across;
}

export function layoutStatechart(
  graph: MachineGraph,
  direction: Direction = 'LR',
): StatechartLayout {
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const children = new Map<string, GraphNode[]>();
  for (const node of graph.nodes) {
    if (node.parent !== null) push(children, node.parent, node);
  }
  const rowsOf = new Map<string, GraphEdge[]>();
  const routes: Route[] = [];
  // Pieces of arrows by the state among whose children they are laid out.
  const piecesAt = new Map<string, Piece[]>();
  for (const edge of graph.edges) {
    if (isRow(edge)) push(rowsOf, edge.source, edge);
    else routes.push(routeOf(edge, byId, piecesAt));
  }

  const boxes = new Map<string, StateBox>();
  const initialOf = new Map<string, { state: string; points: Point[] }>();

  /** Moves a box and everything drawn inside it. */
  const shift = (id: string, dx: number, dy: number) => {
    const box = boxes.get(id);
    if (!box) return;
    box.x += dx;
    box.y += dy;
    for (const piece of piecesAt.get(id) ?? []) {
      piece.points = piece.points.map(moved(dx, dy));
      if (piece.label) piece.label = moved(dx, dy)(piece.label);
    }
    const initial = initialOf.get(id);
    if (initial) initial.points = initial.points.map(moved(dx, dy));
    for (const child of children.get(id) ?? []) shift(child.id, dx, dy);
  };

  /** Sizes `node`, laying its children out inside it, with its corner at the origin. */
  const measure = (node: GraphNode, depth: number): StateBox => {
    const details = [
      ...node.invoke.map((i) => `invoke ${i.src}`),
      ...(node.entry.length > 0 ? [`entry / ${node.entry.join(', ')}`] : []),
      ...(node.exit.length > 0 ? [`exit / ${node.exit.join(', ')}`] : []),
    ];
    const rows = (rowsOf.get(node.id) ?? []).map((edge) => ({ edge, text: rowText(edge, node) }));
    const header = LINE_HEIGHT * (1 + details.length + rows.length) + PADDING;
    const box: StateBox = { node, x: 0, y: 0, width: 0, height: 0, depth, details, rows };
    boxes.set(node.id, box);
    const textWide = Math.max(
      textWidth(node.key, FONT_SIZE + 1),
      ...details.map((d) => textWidth(d)),
      ...rows.map((r) => textWidth(r.text)),
    );
    const inner = children.get(node.id) ?? [];
    if (inner.length === 0) {
      box.width = Math.max(textWide + 2 * PADDING, 70);
      box.height = header + (node.type === 'final' ? 6 : 0);
      return box;
    }
    const sizes = new Map(inner.map((child) => [child.id, measure(child, depth + 1)] as const));
    const level = layoutLevel(node, sizes, piecesAt.get(node.id) ?? [], direction);
    if (level.initial) initialOf.set(node.id, { state: node.id, points: level.initial });
    for (const [id, at] of level.placed) shift(id, at.x, at.y);
    box.width = Math.max(textWide, level.width) + 2 * PADDING;
    box.height = header + level.height + PADDING;
    // The level was laid out at the origin: move it under the header, centred.
    shift(node.id, (box.width - level.width) / 2, header);
    box.x = 0;
    box.y = 0;
    return box;
  };

  const root = graph.nodes.find((n) => n.parent === null);
  if (!root) throw new Error(`machine graph ${graph.id} has no root state`);
  const rootBox = measure(root, 0);
  shift(root.id, MARGIN, MARGIN);
  return {
    width: rootBox.width + 2 * MARGIN,
    height: rootBox.height + 2 * MARGIN,
    boxes: [...boxes.values()].sort((a, b) => a.depth - b.depth),
    arrows: routes.map(({ edge, pieces }) => {
      const main = pieces.find((p) => p.kind === 'main') as Piece;
      const text = edgeLabel(edge);
      const label = main.label ?? { x: 0, y: 0 };
      joinPieces(pieces, boxes, direction);
      return {
        edge,
        points: pieces.flatMap((p) => p.points),
        label: { ...label, text, width: textWidth(text) },
      };
    }),
    initials: [...initialOf.values()],
  };
}

/**
 * Where one piece meets the next at a box's border, the border point is
 * moved level with the port inside, so the arrow crosses the border straight
 * instead of looping back to wherever dagre met the box.
 */
function joinPieces(pieces: Piece[], boxes: Map<string, StateBox>, direction: Direction) {
  const across = direction === 'LR' ? 'y' : 'x';
  for (let i = 0; i + 1 < pieces.length; i++) {
    const piece = pieces[i] as Piece;
    const next = pieces[i + 1] as Piece;
    const port = piece.kind === 'out' ? piece.points.at(-1) : next.points[0];
    const box = boxes.get((piece.kind === 'out' ? next.from : piece.to) ?? '');
    if (!port || !box || (piece.kind !== 'out' && next.kind !== 'in')) continue;
    const leaving = piece.kind === 'out';
    const point = { x: 0, y: 0 };
    if (direction === 'LR') point.x = leaving ? box.x + box.width : box.x;
    else point.y = leaving ? box.y + box.height : box.y;
    const low = across === 'x' ? box.x : box.y;
    const high = low + (across === 'x' ? box.width : box.height);
    point[across] = Math.min(high, Math.max(low, port[across]));
    if (leaving) next.points[0] = point;
    else piece.points[piece.points.length - 1] = point;
  }
}

/** One piece of an arrow, laid out among the children of one state. */
interface Piece {
  kind: 'out' | 'main' | 'in';
  edge: GraphEdge;
  /** The child the piece leaves; `null` for an `in` piece, which starts at a port. */
  from: string | null;
  /** The child the piece enters; `null` for an `out` piece, which ends at a port. */
  to: string | null;
  points: Point[];
  label?: Point;
}

interface Route {
  edge: GraphEdge;
  /** In drawing order: out pieces from the source up, main, in pieces down to the target. */
  pieces: Piece[];
}

/**
 * Splits an arrow at the borders of the states it crosses: out of each state
 * holding its source (to a port at the right of that state's children), then
 * between the two children of the closest common ancestor that hold its ends
 * (with the label), then into each state holding its target (from a port at
 * the left). Each piece is laid out by dagre with the children it runs
 * among, so it goes round them instead of through them.
 */
function routeOf(edge: GraphEdge, byId: Map<string, GraphNode>, piecesAt: Map<string, Piece[]>) {
  const up = ancestry(edge.source, byId);
  const down = ancestry(edge.target, byId);
  let common = 0;
  while (up[common] === down[common]) common++;
  const pieces: Piece[] = [];
  const add = (at: string | undefined, piece: Omit<Piece, 'edge' | 'points'>) => {
    if (at === undefined) throw new Error(`edge ${edge.id} leaves the machine`);
    const full: Piece = { ...piece, edge, points: [] };
    pieces.push(full);
    push(piecesAt, at, full);
  };
  for (let i = up.length - 2; i >= common; i--) {
    add(up[i], { kind: 'out', from: up[i + 1] ?? null, to: null });
  }
  add(up[common - 1], { kind: 'main', from: up[common] ?? null, to: down[common] ?? null });
  for (let i = common; i < down.length - 1; i++) {
    add(down[i], { kind: 'in', from: null, to: down[i + 1] ?? null });
  }
  return { edge, pieces };
}

/**
 * Lays out the children of `parent` (already sized) with the pieces of arrows
 * that run among them; pieces get their points, and the result says where
 * each child's corner goes.
 */
function layoutLevel(
  parent: GraphNode,
  sizes: Map<string, StateBox>,
  pieces: Piece[],
  direction: Direction,
) {
  const ports = pieces.some((p) => p.kind !== 'main');
  // Ports go after every child (out) or before every child (in): edges to
  // them are given the length that reaches there from a first layout.
  const rank = ports
    ? ranks(runDagre(parent, sizes, [], direction), direction)
    : new Map<string, number>();
  const last = Math.max(0, ...rank.values());
  const g = runDagre(parent, sizes, pieces, direction, (piece) =>
    piece.kind === 'out'
      ? last - (rank.get(piece.from ?? '') ?? 0) + 1
      : (rank.get(piece.to ?? '') ?? 0) + 1,
  );
  for (const piece of pieces) {
    const [v, w] = ends(piece);
    const route = g.edge(v, w, piece.edge.id) as { points: Point[]; x: number; y: number };
    piece.points = route.points.map((p) => ({ x: p.x, y: p.y }));
    if (piece.kind === 'main') piece.label = { x: route.x, y: route.y };
  }
  const placed = new Map<string, Point>();
  for (const id of sizes.keys()) {
    const at = g.node(id) as { x: number; y: number; width: number; height: number };
    placed.set(id, { x: at.x - at.width / 2, y: at.y - at.height / 2 });
  }
  const initial = parent.initial
    ? (g.edge(INITIAL, parent.initial, INITIAL) as { points: Point[] }).points.map((p) => ({
        ...p,
      }))
    : null;
  const size = g.graph() as { width?: number; height?: number };
  return { width: size.width ?? 0, height: size.height ?? 0, placed, initial };
}

function runDagre(
  parent: GraphNode,
  sizes: Map<string, StateBox>,
  pieces: Piece[],
  direction: Direction,
  portLength: ((piece: Piece) => number) | null = null,
) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: direction, nodesep: 18, ranksep: 36, edgesep: 8, marginx: 0, marginy: 0 });
  for (const [id, box] of sizes) g.setNode(id, { width: box.width, height: box.height });
  if (parent.initial) {
    g.setNode(INITIAL, { width: 10, height: 10 });
    g.setEdge(INITIAL, parent.initial, { weight: 4 }, INITIAL);
  }
  for (const piece of pieces) {
    const [v, w] = ends(piece);
    if (piece.kind === 'main') {
      const width = textWidth(edgeLabel(piece.edge)) + 8;
      g.setEdge(v, w, { width, height: LINE_HEIGHT, labelpos: 'c' }, piece.edge.id);
      continue;
    }
    g.setNode(piece.kind === 'out' ? w : v, { width: 2, height: 6 });
    g.setEdge(v, w, { minlen: portLength?.(piece) ?? 1, weight: 0 }, piece.edge.id);
  }
  dagre.layout(g);
  return g;
}

/** A piece's two nodes in its level's graph: children, or a port of its own. */
function ends(piece: Piece): [string, string] {
  const port = `\u0000port ${piece.edge.id}`;
  return [piece.from ?? port, piece.to ?? port];
}

/** Each child's rank (its column left to right, or row top to bottom) in a laid-out level. */
function ranks(g: ReturnType<typeof runDagre>, direction: Direction): Map<string, number> {
  const along = (id: string) => Math.round((g.node(id) as Point)[direction === 'LR' ? 'x' : 'y']);
  const lines = [...new Set(g.nodes().map(along))].sort((a, b) => a - b);
  return new Map(g.nodes().map((id) => [id, lines.indexOf(along(id))]));
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V) {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** The ids from the root down to `id`. */
function ancestry(id: string, byId: Map<string, GraphNode>): string[] {
  const ids: string[] = [];
  for (let node = byId.get(id); node; node = node.parent ? byId.get(node.parent) : undefined) {
    ids.unshift(node.id);
  }
  return ids;
}

/** What a row says: `JOIN [sameIncarnation] ↻ / recordReport`, `ABORT → aborting / fail`. */
function rowText(edge: GraphEdge, source: GraphNode): string {
  const actions = edge.actions.length > 0 ? ` / ${edge.actions.join(', ')}` : '';
  let arrow = '';
  if (!edge.internal) {
    arrow =
      edge.target === edge.source
        ? ' ↻'
        : isWithin(edge.target, edge.source)
          ? ` → ${edge.target.slice(source.id.length + 1)}`
          : ` ↑ ${edge.target.slice(edge.target.lastIndexOf('.') + 1)}`;
  }
  return `${edgeLabel(edge)}${arrow}${actions}`;
}

function moved(dx: number, dy: number) {
  return (p: Point): Point => ({ x: p.x + dx, y: p.y + dy });
}
