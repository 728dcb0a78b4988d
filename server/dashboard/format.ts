/** How the page writes sizes, times and placements. Pure: no DOM. */
import type { FileInfo } from '../contract.ts';

/** `1.5 MiB`: binary units, three significant figures at most. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const precise = value.toPrecision(3);
  // Trailing zeros go only after a decimal point: 300 stays 300.
  const shown =
    unit === 0 ? String(value) : precise.includes('.') ? precise.replace(/\.?0+$/, '') : precise;
  return `${shown} ${units[unit]}`;
}

/** `just now`, `12 s ago`, `3 min ago`, `2 h ago`, or the date for older times. */
export function timeAgo(iso: string, now = Date.now()): string {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return '—';
  const seconds = Math.round((now - then) / 1000);
  if (seconds < 2) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(then).toISOString().slice(0, 10);
}

/** A steady colour for each VM (its id hashed onto the hue circle); the core is grey. */
export function vmColor(vm: string | null): string {
  if (vm === null) return 'hsl(210 10% 72%)';
  let hash = 0;
  for (const c of vm) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 55% 60%)`;
}

/** A file's chunks as slices of a bar: where each starts and how wide it is, in percent. */
export function placementBar(
  file: Pick<FileInfo, 'size' | 'chunks'>,
): Array<{ index: number; vm: string | null; left: number; width: number }> {
  const count = file.chunks.length;
  return file.chunks.map((chunk) => {
    // An empty file still shows its one chunk.
    const left = file.size > 0 ? (chunk.offset / file.size) * 100 : (chunk.index / count) * 100;
    const width = file.size > 0 ? (chunk.size / file.size) * 100 : 100 / count;
    return { index: chunk.index, vm: chunk.vm, left, width };
  });
}

/** Percent of `part` in `whole`, 0–100; 0 when the whole is unknown or empty. */
export function percent(part: number | null, whole: number | null): number {
  if (part === null || whole === null || whole <= 0) return 0;
  return Math.max(0, Math.min(100, (part / whole) * 100));
}
