/**
 * The page's tables and lists as HTML strings (every value escaped), so the
 * browser code only swaps them in and bun can test them without a DOM.
 */
import type { FileInfo, LiveActor, TransferView, VmInfo } from '../contract.ts';
import { formatBytes, percent, placementBar, timeAgo, vmColor } from './format.ts';
import { esc } from './render.ts';

/** What `GET /api/files` answers with, per file. */
export type ListedFile = Pick<FileInfo, 'name' | 'size' | 'sha256' | 'chunks'>;

export interface LogEntry {
  at: string;
  /** The event as the graph names it. */
  event: string;
  /** The deepest active states after it, without the machine's prefix. */
  state: string;
}

export function vmRows(vms: readonly VmInfo[], now = Date.now()): string {
  // Bars share one scale: the most free memory any VM reports.
  const scale = Math.max(1, ...vms.map((vm) => vm.memoryFree));
  return vms
    .map(
      (vm) =>
        `<tr data-testid="vm-row" data-vm-id="${esc(vm.id)}" class="${esc(vm.status)}">` +
        `<td class="id">${esc(vm.id)}</td>` +
        `<td>${esc(vm.address)}</td>` +
        `<td data-testid="vm-status"><span class="status ${esc(vm.status)}">${esc(vm.status)}</span></td>` +
        `<td class="num">${vm.penalty}</td>` +
        `<td><div class="membar" title="effective ${esc(formatBytes(vm.memoryEffective))} of ` +
        `${esc(formatBytes(vm.memoryFree))} free">` +
        `<span class="free" style="width:${round(percent(vm.memoryFree, scale))}%"></span>` +
        `<span class="effective" style="width:${round(percent(vm.memoryEffective, scale))}%"></span>` +
        `</div><span class="memtext">${esc(formatBytes(vm.memoryEffective))} / ` +
        `${esc(formatBytes(vm.memoryFree))}</span></td>` +
        `<td title="${esc(vm.lastSeen)}">${esc(timeAgo(vm.lastSeen, now))}</td></tr>`,
    )
    .join('');
}

export function fileRows(files: readonly ListedFile[]): string {
  return files
    .map((file) => {
      const slices = placementBar(file)
        .map((slice) => {
          const where = slice.vm ?? 'core only';
          return (
            `<span class="chunk" data-vm="${esc(slice.vm ?? '')}" title="chunk ${slice.index}: ${esc(where)}"` +
            ` style="left:${round(slice.left)}%;width:${round(slice.width)}%;` +
            `background:${vmColor(slice.vm)}"></span>`
          );
        })
        .join('');
      const holders = [...new Set(file.chunks.map((c) => c.vm ?? 'core'))].join(', ');
      return (
        `<tr data-testid="file-row" data-file="${esc(file.name)}">` +
        `<td class="name">${esc(file.name)}</td>` +
        `<td class="num">${esc(formatBytes(file.size))}</td>` +
        `<td class="num">${file.chunks.length}</td>` +
        `<td><div class="placement">${slices}</div><span class="holders">${esc(holders)}</span></td>` +
        `<td class="hash" title="${esc(file.sha256)}">${esc(file.sha256.slice(0, 12))}…</td></tr>`
      );
    })
    .join('');
}

/** One swatch per VM that holds a chunk, and the core. */
export function placementLegend(files: readonly ListedFile[]): string {
  const vms = [...new Set(files.flatMap((f) => f.chunks.map((c) => c.vm)))];
  vms.sort((a, b) => (a === null ? 1 : b === null ? -1 : a.localeCompare(b)));
  return vms
    .map(
      (vm) =>
        `<span class="swatch"><i style="background:${vmColor(vm)}"></i>${esc(vm ?? 'core only')}</span>`,
    )
    .join('');
}

export function transferRows(transfers: readonly TransferView[], now = Date.now()): string {
  return transfers
    .map((t) => {
      const known = t.size !== null && t.done !== null;
      const progress = known
        ? `<progress max="100" value="${round(percent(t.done, t.size))}"></progress> ` +
          `<span>${esc(formatBytes(t.done ?? 0))} / ${esc(formatBytes(t.size ?? 0))}</span>`
        : t.size !== null
          ? `<span>${esc(formatBytes(t.size))}</span>`
          : '—';
      return (
        `<tr data-testid="transfer-row" data-transfer-id="${esc(t.id)}">` +
        `<td><span class="kind ${t.kind}">${t.kind === 'upload' ? '↑' : '↓'} ${t.kind}</span></td>` +
        `<td class="name">${esc(t.name)}</td><td><code>${esc(t.state)}</code></td>` +
        `<td>${esc(t.requester)}</td><td class="progress">${progress}</td>` +
        `<td title="${esc(t.startedAt)}">${esc(timeAgo(t.startedAt, now))}</td></tr>`
      );
    })
    .join('');
}

/** The picker's options: value the actor's id, text its label. */
export function pickerOptions(actors: readonly LiveActor[], selected: string | null): string {
  return actors
    .map(
      (a) =>
        `<option value="${esc(a.id)}"${a.id === selected ? ' selected' : ''}>${esc(a.label)}</option>`,
    )
    .join('');
}

/** Newest first. */
export function logItems(entries: readonly LogEntry[]): string {
  return [...entries]
    .reverse()
    .map(
      (e) =>
        `<li><time datetime="${esc(e.at)}">${esc(clock(e.at))}</time> ` +
        `<code class="event">${esc(e.event)}</code> → <span class="to">${esc(e.state)}</span></li>`,
    )
    .join('');
}

/** The deepest of the active state ids, shown without the machine id: `alive.beating`. */
export function leafStates(machine: string, state: readonly string[]): string {
  const leaves = state.filter((id) => !state.some((other) => other.startsWith(`${id}.`)));
  return leaves.map((id) => (id === machine ? id : id.slice(machine.length + 1))).join(', ');
}

function clock(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toTimeString().slice(0, 8);
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
