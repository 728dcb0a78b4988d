/**
 * Polls `check` until it holds; throws naming `what` after `timeoutMs`. For
 * outcomes that arrive asynchronously (a VM rejoining, a sweep finishing):
 * the bound is a hang guard, not a performance claim.
 */
export async function until(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await Bun.sleep(25);
  }
}
