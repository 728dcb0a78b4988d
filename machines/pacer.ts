/**
 * The pace of the edge's background copies (beyond the paper: repair,
 * re-warming, rebalancing, restores and read-repair), so that they never
 * starve the transfers in the foreground: at most `rate` bytes per second,
 * all copies together. One virtual clock says when the next background byte
 * may go; each segment books its bytes on it. Pure arithmetic, no timers:
 * the clock is given, and the caller sleeps what `book` says.
 *
 * A segment asked for after the pacer was idle goes at once (nothing is
 * owed), and its bytes are paid for after it; idle time is not banked, so
 * no burst ever goes faster than the rate beyond that one segment.
 */
export interface Pacer {
  /**
   * Books `bytes` to go as soon as the rate allows: the ms to wait before
   * sending them (0: now). Callers asking at once queue one after another.
   */
  book(bytes: number): number;
}

/** `rate`: bytes per second, more than 0; `now`: a clock in ms. */
export function createPacer(rate: number, now: () => number): Pacer {
  if (!(rate > 0))
    throw new RangeError(`a pacer's rate is bytes per second, more than 0, not ${rate}`);
  // When the next background byte may go.
  let nextAt = Number.NEGATIVE_INFINITY;
  return {
    book(bytes) {
      const at = now();
      const wait = Math.max(0, nextAt - at);
      nextAt = Math.max(at, nextAt) + (bytes / rate) * 1000;
      return wait;
    },
  };
}
