/**
 * The one place that names a runtime. cloudlet runs on Bun and on Deno 2
 * (issue 18, under way); what differs between them is asked for here, and
 * every other file uses what this module hands out:
 *
 * - `sleep`: a timer, the same everywhere (`setTimeout`);
 * - `collectGarbage`: a full collection where the runtime lets a program
 *   ask for one (Bun: `Bun.gc(true)`; elsewhere only with `--expose-gc`);
 * - `nativeConnect`: Bun's own TCP/TLS sockets (`Bun.connect`), which the
 *   MQTT and Redis fast lanes use; undefined elsewhere, where they step
 *   aside for mqtt.js and node-redis.
 *
 * Still naming Bun outside this module (later slices): SQLite metadata
 * (`bun:sqlite`), the admin endpoint (`Bun.serve`), the dashboard bundle
 * (`Bun.build`), `bun run start`'s children (`Bun.spawn`).
 */

type BunGlobal = typeof import('bun');

const bun = (globalThis as { Bun?: BunGlobal }).Bun;

/** Which runtime this process is. */
export const runtimeName: 'bun' | 'deno' | 'node' = bun
  ? 'bun'
  : 'Deno' in globalThis
    ? 'deno'
    : 'node';

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A full, synchronous collection if the runtime allows one; false if it does not. */
export function collectGarbage(): boolean {
  if (bun) {
    bun.gc(true);
    return true;
  }
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function') return false;
  gc();
  return true;
}

/** Bun's native sockets, or undefined where there are none. */
export const nativeConnect: BunGlobal['connect'] | undefined =
  typeof bun?.connect === 'function' ? bun.connect.bind(bun) : undefined;

/**
 * A socket whose `read()` (no size) returns everything buffered, as Node's
 * does. Deno 2's node:net hands back one chunk and then emits no further
 * 'readable' while data is left, which stalls consumers that read that way
 * (aedes, the embedded MQTT server, on any packet over ~64 KiB). Elsewhere
 * the socket is returned as it is.
 */
export function readingAll<S extends { read(size?: number): unknown }>(socket: S): S {
  if (runtimeName !== 'deno') return socket;
  const read = socket.read.bind(socket) as (size?: number) => Buffer | null;
  socket.read = ((size?: number | null) => {
    if (size !== undefined && size !== null) return read(size);
    const parts: Buffer[] = [];
    for (let part = read(); part !== null; part = read()) parts.push(part);
    if (parts.length === 0) return null;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }) as S['read'];
  return socket;
}
