/**
 * Waits for `promise`, or `ms` at most. The timer is cleared either way: a
 * `Bun.sleep` left racing kept the event loop (and so every CLI command, and
 * a stopping broker) alive until it ran out.
 */
export async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      promise,
      new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
