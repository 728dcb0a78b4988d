import type { ErrorCode, Message } from '../protocol/messages.ts';

/**
 * A failure with a wire error code, thrown by the actors that machines
 * invoke and carried to the member that asked: `retryable` tells it whether
 * the same request may succeed later.
 */
export class CloudletError extends Error {
  override readonly name = 'CloudletError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly retryable = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface Failure {
  code: ErrorCode;
  message: string;
  retryable: boolean;
}

/** Any thrown value as a failure to report; unknown errors are `internal`. */
export function toFailure(error: unknown): Failure {
  if (error instanceof CloudletError) {
    return { code: error.code, message: error.message, retryable: error.retryable };
  }
  return {
    code: 'internal',
    message: error instanceof Error ? error.message : String(error),
    retryable: false,
  };
}

/** A message for the runtime to publish: machines name it, actors/ sends it. */
export interface SendCommand {
  type: 'SEND';
  /** A member id; `null` for the broker's inbox. */
  to: string | null;
  message: Message;
  body?: Uint8Array;
  /**
   * The frame already encoded (a list page whose records went through
   * unparsed, protocol/frame `encodeListPage`): sent as it is, and `message`
   * only describes it (its files left out).
   */
  encoded?: Buffer;
}
