/**
 * What a member's request or transfer hears back, in arrival order, and the
 * broker's errors turned into thrown ones.
 */
import { CloudletError } from '../../machines/shared.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { Message } from '../../protocol/messages.ts';

export /** Frames of one request or transfer, in arrival order. */
class Inbox {
  private frames: Frame[] = [];
  /** Hears each frame taken that ends the exchange: an error, or a `*.done`. */
  onAnswer: () => void = () => {};
  private waiter: ((frame: Frame | null) => void) | null = null;
  private failure: Error | null = null;
  /** Makes the next wait throw: the transfer cannot go on. */
  fail(error: Error) {
    this.failure ??= error;
    this.waiter?.(null);
  }
  private seen(frame: Frame): Frame {
    const { type } = frame.message;
    if (type === 'error' || type.endsWith('.done')) this.onAnswer();
    return frame;
  }
  push(frame: Frame) {
    if (this.waiter) {
      const wake = this.waiter;
      this.waiter = null;
      wake(frame);
    } else this.frames.push(frame);
  }
  next(timeoutMs: number, signal?: AbortSignal): Promise<Frame | null> {
    if (this.failure) return Promise.reject(this.failure);
    const queued = this.frames.shift();
    if (queued) return Promise.resolve(this.seen(queued));
    return new Promise((resolve, reject) => {
      const finish = (frame: Frame | null) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.waiter = null;
        if (this.failure) reject(this.failure);
        else resolve(frame && this.seen(frame));
      };
      const onAbort = () => finish(null);
      const timer = setTimeout(() => finish(null), timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiter = finish;
    });
  }
}

export function throwIfError(message: Message) {
  if (message.type === 'error')
    throw new CloudletError(message.code, message.message, message.retryable);
}
