/**
 * Bun 1.4 lacks `TracingChannel.prototype.hasSubscribers` (Node ≥ 20.13 has
 * it; oven-sh/bun#27805). node-redis reads it to skip tracing when nobody
 * listens; finding `undefined`, it traces every command — and stringifies
 * every argument of EVAL, 1 MiB chunk values included, which cost more CPU
 * than the rest of a transfer. This adds Node's getter where it is missing.
 * Import it before `redis`.
 */
import diagnostics from 'node:diagnostics_channel';

const probe = diagnostics.tracingChannel('cloudlet:probe');
const prototype = Object.getPrototypeOf(probe) as object;
if (!('hasSubscribers' in prototype)) {
  Object.defineProperty(prototype, 'hasSubscribers', {
    configurable: true,
    get(
      this: Record<
        'start' | 'end' | 'asyncStart' | 'asyncEnd' | 'error',
        { hasSubscribers: boolean }
      >,
    ) {
      return (
        this.start.hasSubscribers ||
        this.end.hasSubscribers ||
        this.asyncStart.hasSubscribers ||
        this.asyncEnd.hasSubscribers ||
        this.error.hasSubscribers
      );
    },
  });
}
