/**
 * Draws a laid-out statechart as SVG markup: one `<g data-state-id>` per
 * state and one `<g data-edge-id>` per transition (arrow or row), so the page
 * can light up active states and flash a transition by toggling classes.
 * Pure: it returns a string.
 */
import type { MachineGraph } from '../contract.ts';
import {
  FONT_SIZE,
  LINE_HEIGHT,
  layoutStatechart,
  PADDING,
  type Point,
  type StateBox,
  type StatechartLayout,
} from './layout.ts';

export function statechartSvg(graph: MachineGraph, layout = layoutStatechart(graph)): string {
  const { width, height } = layout;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" data-testid="statechart" data-machine="${esc(graph.id)}"`,
    ` viewBox="0 0 ${round(width)} ${round(height)}" width="${round(width)}" height="${round(height)}"`,
    ` font-size="${FONT_SIZE}" role="img" aria-label="statechart of ${esc(graph.id)}">`,
    '<defs><marker id="arrowhead" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"',
    ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#52606d"/></marker></defs>',
    ...layout.boxes.map(stateMarkup),
    ...layout.initials.map(
      ({ state, points }) =>
        `<g class="initial" data-initial-of="${esc(state)}">${circle(points[0])}` +
        `<path d="${pathData(points.slice(1))}" marker-end="url(#arrowhead)"/></g>`,
    ),
    ...arrowsMarkup(layout),
    '</svg>',
  ].join('');
}

function stateMarkup(box: StateBox): string {
  const { node, x, y, width, height } = box;
  const classes = ['state', node.type, box.depth === 0 ? 'root' : ''].filter(Boolean).join(' ');
  const parts = [
    `<g class="${classes}" data-state-id="${esc(node.id)}">`,
    `<title>${esc(node.id)}</title>`,
    `<rect x="${round(x)}" y="${round(y)}" width="${round(width)}" height="${round(height)}" rx="8"/>`,
  ];
  if (node.type === 'final') {
    parts.push(
      `<rect class="inner" x="${round(x + 3)}" y="${round(y + 3)}" width="${round(width - 6)}"` +
        ` height="${round(height - 6)}" rx="6"/>`,
    );
  }
  const line = (n: number) => round(y + PADDING / 2 + LINE_HEIGHT * (n + 0.75));
  const left = round(x + PADDING);
  parts.push(`<text class="title" x="${left}" y="${line(0)}">${esc(node.key)}</text>`);
  box.details.forEach((detail, i) => {
    parts.push(`<text class="detail" x="${left}" y="${line(i + 1)}">${esc(detail)}</text>`);
  });
  box.rows.forEach(({ edge, text }, i) => {
    parts.push(
      `<g class="edge row" data-edge-id="${esc(edge.id)}"><title>${esc(edgeTitle(edge))}</title>` +
        `<text x="${left}" y="${line(box.details.length + i + 1)}">${esc(text)}</text></g>`,
    );
  });
  parts.push('</g>');
  return parts.join('');
}

function arrowsMarkup(layout: StatechartLayout): string[] {
  return layout.arrows.map(({ edge, points, label }) => {
    const w = label.width + 8;
    return (
      `<g class="edge arrow" data-edge-id="${esc(edge.id)}"><title>${esc(edgeTitle(edge))}</title>` +
      `<path d="${pathData(points)}" marker-end="url(#arrowhead)"/>` +
      `<rect class="label" x="${round(label.x - w / 2)}" y="${round(label.y - LINE_HEIGHT / 2)}"` +
      ` width="${round(w)}" height="${LINE_HEIGHT}" rx="3"/>` +
      `<text x="${round(label.x)}" y="${round(label.y + FONT_SIZE / 2 - 2)}" text-anchor="middle">` +
      `${esc(label.text)}</text></g>`
    );
  });
}

/** The hover text: the whole transition, actions included. */
function edgeTitle(edge: MachineGraph['edges'][number]): string {
  const guard = edge.guard ? ` [${edge.guard}]` : '';
  const target = edge.internal ? ' (stays)' : ` → ${edge.target}`;
  const actions = edge.actions.length > 0 ? ` / ${edge.actions.join(', ')}` : '';
  return `${edge.source}: ${edge.event}${guard}${target}${actions}`;
}

/** A smooth path through dagre's points. */
export function pathData(points: Point[]): string {
  const [first, ...rest] = points;
  if (!first) return '';
  if (rest.length < 2) {
    return `M${round(first.x)},${round(first.y)}${rest.map((p) => ` L${round(p.x)},${round(p.y)}`).join('')}`;
  }
  // Quadratic curves through the midpoints of the segments between points.
  let d = `M${round(first.x)},${round(first.y)}`;
  for (let i = 0; i < rest.length - 1; i++) {
    const control = rest[i] as Point;
    const next = rest[i + 1] as Point;
    const end = i === rest.length - 2 ? next : mid(control, next);
    d += ` Q${round(control.x)},${round(control.y)} ${round(end.x)},${round(end.y)}`;
  }
  return d;
}

function circle(p: Point | undefined): string {
  return p ? `<circle cx="${round(p.x)}" cy="${round(p.y)}" r="4"/>` : '';
}

function mid(a: Point, b: Point): Point {
  return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}

export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
