/**
 * Replies awaited by one I/O call (a VM confirming a delete): the bridge
 * offers every inbound frame here first, and what nobody waits for goes on
 * to the statechart.
 */
import type { Frame } from '../../protocol/frame.ts';
import type { MessageType } from '../../protocol/messages.ts';

export interface ReplyBox {
  /**
   * Resolves with the first frame that matches (of any of the types, from
   * `from`, answering `id`), or `null` after `timeoutMs` or once `signal`
   * aborts. However it ends, nothing of the wait is left behind: no timer,
   * no registration.
   */
  wait(
    match: { type: MessageType | readonly MessageType[]; id: string; from: string },
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<Frame | null>;
  /** Takes `frame` if someone waits for it. */
  offer(frame: Frame): boolean;
}

export function createReplyBox(): ReplyBox {
  const waiting = new Map<string, (frame: Frame | null) => void>();
  const keyOf = (type: string, id: string, from: string) => `${type}\u0000${id}\u0000${from}`;
  return {
    wait({ type, id, from }, timeoutMs, signal) {
      const keys = (typeof type === 'string' ? [type] : type).map((each) => keyOf(each, id, from));
      return new Promise((resolve) => {
        // A later wait for the same reply replaces this one: each removes only itself.
        const take = (frame: Frame | null) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', abandon);
          for (const key of keys) if (waiting.get(key) === take) waiting.delete(key);
          resolve(frame);
        };
        const abandon = () => take(null);
        const timer = setTimeout(abandon, timeoutMs);
        for (const key of keys) waiting.set(key, take);
        if (signal?.aborted) abandon();
        else signal?.addEventListener('abort', abandon, { once: true });
      });
    },
    offer(frame) {
      const { message } = frame;
      if (!('id' in message) || message.id === undefined) return false;
      const resolve = waiting.get(keyOf(message.type, message.id, message.from));
      resolve?.(frame);
      return resolve !== undefined;
    },
  };
}
