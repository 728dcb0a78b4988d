/**
 * `--inspect`: the broker's or VM's statecharts in the Stately inspector,
 * through @statelyai/inspect. With a URL the inspection events go to that
 * WebSocket; without one a local inspector server is started (its page
 * embeds the Stately UI, which needs the internet). Bytes in events and
 * contexts are replaced by their length: a segment is a megabyte.
 */
import { createWebSocketInspector } from '@statelyai/inspect';
import { createInspectorServer } from '@statelyai/inspect/server';
import type { InspectionEvent } from 'xstate';

export interface StatelyInspection {
  readonly url: string;
  inspect(event: InspectionEvent): void;
  stop(): void;
}

export const DEFAULT_INSPECTOR_PORT = 8090;

export function startStatelyInspection(url?: string): StatelyInspection {
  const server = url
    ? null
    : createInspectorServer({ port: DEFAULT_INSPECTOR_PORT, autoOpen: false });
  const target = url ?? `ws://127.0.0.1:${DEFAULT_INSPECTOR_PORT}`;
  const inspector = createWebSocketInspector({
    url: target,
    // Before the inspector serializes them (a segment would be a megabyte of JSON)…
    sanitizeEvent: (event) => withoutBytes(event) as typeof event,
    sanitizeContext: (context) => withoutBytes(context) as typeof context,
    // …and after, for whatever it serialized on its own.
    serialize: (event) => withoutBytes(event) as typeof event,
  });
  return {
    url: server ? `http://127.0.0.1:${DEFAULT_INSPECTOR_PORT}` : target,
    inspect: (event) => inspector.inspect.next?.(event),
    stop() {
      inspector.stop();
      server?.stop();
    },
  };
}

/** The value with every byte array (or its JSON form) replaced by a note of its length. */
export function withoutBytes(value: unknown, depth = 0): unknown {
  if (value instanceof Uint8Array) return `<${value.byteLength} bytes>`;
  if (isSerializedBuffer(value)) return `<${value.data.length} bytes>`;
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((item) => withoutBytes(item, depth + 1));
  return Object.fromEntries(
    Object.entries(value).map(([key, item]) => [key, withoutBytes(item, depth + 1)]),
  );
}

function isSerializedBuffer(value: unknown): value is { type: 'Buffer'; data: unknown[] } {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { type?: unknown }).type === 'Buffer' &&
    Array.isArray((value as { data?: unknown }).data)
  );
}
