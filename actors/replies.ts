/**
 * Replies awaited by one I/O call (a VM confirming a delete): the bridge
 * offers every inbound frame here first, and what nobody waits for goes on
 * to the statechart.
 */
import type { Frame } from '../protocol/frame.ts';
import type { MessageType } from '../protocol/messages.ts';

export interface ReplyBox {
  /** Resolves with the matching frame, or `null` after `timeoutMs`. */
  wait(
    match: { type: MessageType; id: string; from: string },
    timeoutMs: number,
  ): Promise<Frame | null>;
  /** Takes `frame` if someone waits for it. */
  offer(frame: Frame): boolean;
}

export function createReplyBox(): ReplyBox {
  const waiting = new Map<string, (frame: Frame | null) => void>();
  const keyOf = (type: string, id: string, from: string) => `${type}\u0000${id}\u0000${from}`;
  return {
    wait({ type, id, from }, timeoutMs) {
      const key = keyOf(type, id, from);
      return new Promise((resolve) => {
        // A later wait for the same reply replaces this one: each removes only itself.
        const take = (frame: Frame | null) => {
          clearTimeout(timer);
          if (waiting.get(key) === take) waiting.delete(key);
          resolve(frame);
        };
        const timer = setTimeout(() => take(null), timeoutMs);
        waiting.set(key, take);
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
