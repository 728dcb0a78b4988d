import { describe, expect, test } from 'bun:test';
import { createReplyBox } from '../../actors/link/replies.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { Message } from '../../protocol/messages.ts';

const frame = (message: Message): Frame => ({ message, body: Buffer.alloc(0) });
const stored = frame({
  type: 'chunk.stored',
  id: 'c1',
  from: 'vm-1',
  fileId: 'f1',
  index: 0,
  offset: 0,
  length: 1,
  sha256: 'ab'.repeat(32),
});
const refused = frame({
  type: 'error',
  id: 'c1',
  from: 'vm-1',
  code: 'no-space',
  message: 'full',
  retryable: true,
});

describe('reply box', () => {
  test('a wait for several types takes the first that comes, and nothing after it', async () => {
    const replies = createReplyBox();
    const waiting = replies.wait(
      { type: ['chunk.stored', 'error'], id: 'c1', from: 'vm-1' },
      60_000,
    );
    expect(replies.offer(refused)).toBe(true);
    expect(await waiting).toBe(refused);
    // The other type's registration went with it (it used to wait out its timer).
    expect(replies.offer(stored)).toBe(false);
    expect(replies.offer(refused)).toBe(false);
  });

  test('only the sender and request it names', async () => {
    const replies = createReplyBox();
    const waiting = replies.wait({ type: 'chunk.stored', id: 'c1', from: 'vm-2' }, 60_000);
    expect(replies.offer(stored)).toBe(false);
    const fromVm2 = frame({ ...stored.message, from: 'vm-2' } as Message);
    expect(replies.offer(fromVm2)).toBe(true);
    expect(await waiting).toBe(fromVm2);
  });

  test('an abort ends the wait with null and unregisters it, as a timeout does', async () => {
    const replies = createReplyBox();
    const copy = new AbortController();
    const aborted = replies.wait(
      { type: ['chunk.stored', 'error'], id: 'c1', from: 'vm-1' },
      60_000,
      copy.signal,
    );
    copy.abort();
    expect(await aborted).toBeNull();
    expect(replies.offer(stored)).toBe(false);

    const timedOut = replies.wait({ type: 'chunk.stored', id: 'c1', from: 'vm-1' }, 5);
    expect(await timedOut).toBeNull();
    expect(replies.offer(stored)).toBe(false);

    // A signal already aborted: over at once.
    expect(
      await replies.wait({ type: 'error', id: 'c1', from: 'vm-1' }, 60_000, copy.signal),
    ).toBeNull();
    expect(replies.offer(refused)).toBe(false);
  });

  test('a later wait for the same reply replaces an earlier one, and the earlier one ending does not remove it', async () => {
    const replies = createReplyBox();
    const first = new AbortController();
    const earlier = replies.wait(
      { type: 'chunk.stored', id: 'c1', from: 'vm-1' },
      60_000,
      first.signal,
    );
    const later = replies.wait({ type: 'chunk.stored', id: 'c1', from: 'vm-1' }, 60_000);
    first.abort();
    expect(await earlier).toBeNull();
    expect(replies.offer(stored)).toBe(true);
    expect(await later).toBe(stored);
  });
});
