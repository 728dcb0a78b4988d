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
 * - `serveHttp`: `Bun.serve` or `Deno.serve`;
 * - `bundleForBrowser`: `Bun.build`, or esbuild where there is none (Deno);
 * - `scriptCommand`: how to run one of our scripts as a child process;
 * - `readingAll`: a socket whose read() returns everything buffered (a
 *   Deno node:net quirk that stalled aedes).
 *
 * SQLite is runtime/sqlite.ts. Nothing outside runtime/ names Bun or Deno.
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

export interface HttpServer {
  /** The port it listens on (the one asked for, or the one given for 0). */
  readonly port: number;
  /** Stops listening and closes open connections. */
  stop(): Promise<void>;
}

/** Serves `fetch` on `hostname:port`: `Bun.serve` on Bun, `Deno.serve` on Deno. */
export function serveHttp(options: {
  hostname: string;
  port: number;
  fetch: (request: Request) => Response | Promise<Response>;
  /** The largest request body (Bun; Deno does not cap it). */
  maxRequestBodySize: number;
}): HttpServer {
  if (bun) {
    const server = bun.serve({
      hostname: options.hostname,
      port: options.port,
      fetch: options.fetch,
      // Event streams stay open; they send a comment every 15 s of their own.
      idleTimeout: 0,
      maxRequestBodySize: options.maxRequestBodySize,
    });
    return { port: server.port ?? options.port, stop: () => server.stop(true) };
  }
  const deno = (globalThis as { Deno?: DenoServe }).Deno;
  if (!deno) throw new Error(`serving HTTP needs Bun or Deno (this is ${runtimeName})`);
  const server = deno.serve(
    { hostname: options.hostname, port: options.port, onListen: () => {} },
    options.fetch,
  );
  return { port: server.addr.port, stop: () => server.shutdown() };
}

interface DenoServe {
  serve(
    options: { hostname: string; port: number; onListen: () => void },
    handler: (request: Request) => Response | Promise<Response>,
  ): { addr: { port: number }; shutdown(): Promise<void> };
}

/** A browser bundle of `entry`, minified: `Bun.build` on Bun, esbuild elsewhere (Deno has no bundler API). */
export async function bundleForBrowser(entry: string): Promise<string> {
  if (!bun) {
    const esbuild = await import('esbuild');
    const result = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      minify: true,
      format: 'esm',
      platform: 'browser',
      write: false,
      logLevel: 'silent',
    });
    const [script] = result.outputFiles;
    if (!script) throw new Error('the dashboard script did not build: esbuild wrote nothing');
    return script.text;
  }
  const result = await bun.build({ entrypoints: [entry], target: 'browser', minify: true });
  const [script] = result.outputs;
  if (!result.success || !script) {
    const logs = result.logs.map((log) => String(log)).join('\n');
    throw new Error(`the dashboard script did not build:\n${logs}`);
  }
  return script.text();
}

/** The command that runs TypeScript file `script` on this runtime, as a child process. */
export function scriptCommand(script: string): string[] {
  return runtimeName === 'deno'
    ? [process.execPath, 'run', '-A', script]
    : [process.execPath, script];
}
