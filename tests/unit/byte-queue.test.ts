import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { ByteQueue } from '../../protocol/byte-queue.ts';

describe('ByteQueue', () => {
  test('takes back exactly the bytes pushed, in order, however reads and takes fall', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 12 }),
        fc.array(fc.nat({ max: 100 }), { maxLength: 20 }),
        (reads, takes) => {
          const queue = new ByteQueue();
          const all = Buffer.concat(reads.map((r) => Buffer.from(r)));
          for (const read of reads) queue.push(Buffer.from(read));
          expect(queue.length).toBe(all.byteLength);
          let at = 0;
          for (const want of takes) {
            const length = Math.min(want, queue.length);
            if (length > 0) expect(queue.byteAt(0)).toBe(all[at]);
            expect(queue.take(length).equals(all.subarray(at, at + length))).toBe(true);
            at += length;
          }
          expect(queue.length).toBe(all.byteLength - at);
        },
      ),
    );
  });

  test('a view when the bytes lie in one read, a copy in the given buffer when they span reads', () => {
    const queue = new ByteQueue();
    const first = Buffer.from('hello ');
    queue.push(first);
    queue.push(Buffer.from('world'));
    expect(queue.take(5).buffer).toBe(first.buffer);
    const into = Buffer.alloc(16);
    const spanning = queue.take(4, () => into);
    expect(spanning.toString()).toBe(' wor');
    expect(spanning.buffer).toBe(into.buffer);
  });

  test('indexOf counts from the front across reads; mark() goes back', () => {
    const queue = new ByteQueue();
    queue.push(Buffer.from('ab'));
    queue.push(Buffer.from('c\nd'));
    queue.take(1);
    expect(queue.indexOf(0x0a)).toBe(2);
    const back = queue.mark();
    queue.take(3);
    expect(queue.length).toBe(1);
    back();
    expect(queue.take(4).toString()).toBe('bc\nd');
    expect(queue.indexOf(0x0a)).toBe(-1);
  });
});
