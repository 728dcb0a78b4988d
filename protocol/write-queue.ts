/**
 * What a connection writes to a socket that takes what it can and says when
 * it can take more (Bun's native sockets: `write` returns the bytes taken,
 * `drain` follows): pieces go out in order, large ones as they are (never
 * copied), small ones queued in the same tick joined into one write — each
 * write is a system call, and on a small request those were most of a
 * process's CPU. Used by the MQTT fast lane and the Redis lane.
 */
export interface WritableSocket {
  /** Bytes of `data` from `byteOffset` the socket took (fewer: wait for drain; negative: closed). */
  write(data: Uint8Array, byteOffset?: number, byteLength?: number): number;
}

/** A Bun socket as both lanes hold it. */
export interface NativeSocket extends WritableSocket {
  end(): void;
  terminate?(): void;
  setNoDelay?(on: boolean): void;
}

/** Closes at once: what is still queued is dropped (the lane failed, or is done). */
export function closeNow(socket: NativeSocket) {
  if (socket.terminate) socket.terminate();
  else socket.end();
}

interface Piece {
  data: Uint8Array;
  offset: number;
  /** Called once every byte is written, or with the error that stopped it. */
  done?: ((error?: Error) => void) | undefined;
}

/** Pieces smaller than this are joined with their neighbours, up to JOIN_MAX in one write. */
const SMALL = 16 * 1024;
const JOIN_MAX = 64 * 1024;

export class WriteQueue {
  private readonly pieces: Piece[] = [];
  private socket: WritableSocket | null = null;
  private waitingForDrain = false;
  private scheduled = false;
  private failure: Error | null = null;

  /** Writes start once there is a socket. */
  attach(socket: WritableSocket) {
    this.socket = socket;
    this.schedule();
  }

  /** Queues `data`; `done` hears when it is all written (or why it never will be). */
  push(data: Uint8Array, done?: (error?: Error) => void) {
    if (this.failure) {
      done?.(this.failure);
      return;
    }
    this.pieces.push({ data, offset: 0, done });
    this.schedule();
  }

  /** The socket can take more. */
  drained() {
    this.waitingForDrain = false;
    this.flush();
  }

  /** Nothing more will be written: what is queued fails with `error`. */
  fail(error: Error) {
    if (this.failure) return;
    this.failure = error;
    this.socket = null;
    for (const piece of this.pieces.splice(0)) piece.done?.(error);
  }

  // What is pushed in one tick goes out together.
  private schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush() {
    const socket = this.socket;
    if (!socket || this.waitingForDrain) return;
    while (this.pieces.length > 0) {
      this.joinSmall();
      const head = this.pieces[0] as Piece;
      const left = head.data.byteLength - head.offset;
      if (left > 0) {
        const written = socket.write(head.data, head.offset, left);
        if (written < 0) return; // closed: the connection fails what is queued
        head.offset += written;
        if (written < left) {
          this.waitingForDrain = true;
          return;
        }
      }
      this.pieces.shift();
      head.done?.();
    }
  }

  /** Joins the small pieces at the front (none of it written yet) into one. */
  private joinSmall() {
    let count = 0;
    let bytes = 0;
    for (const piece of this.pieces) {
      const size = piece.data.byteLength;
      if (piece.offset !== 0 || size >= SMALL || bytes + size > JOIN_MAX) break;
      count++;
      bytes += size;
    }
    if (count < 2) return;
    const joined = this.pieces.splice(0, count);
    this.pieces.unshift({
      data: Buffer.concat(joined.map((piece) => piece.data)),
      offset: 0,
      done: (error) => {
        for (const piece of joined) piece.done?.(error);
      },
    });
  }
}
