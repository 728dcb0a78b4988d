import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import {
  DATA_MESSAGE_TYPES,
  DEFAULT_MAX_HEADER_BYTES,
  decodeFrame,
  encodeFrame,
  FRAME_PREFIX_BYTES,
  type FrameErrorReason,
  MESSAGE_TYPES,
  type Message,
} from '../../protocol/index.ts';
import { anyMessageArb, messageArbitraries } from '../support/arbitraries.ts';

const bodyArb = fc.uint8Array({ maxLength: 2048 });

function rawFrame(header: string | Uint8Array, body: Uint8Array = new Uint8Array(), version = 1) {
  const headerBytes = typeof header === 'string' ? Buffer.from(header, 'utf8') : header;
  const prefix = Buffer.alloc(FRAME_PREFIX_BYTES);
  prefix.write('CL', 0, 'latin1');
  prefix.writeUInt8(version, 2);
  prefix.writeUInt32BE(headerBytes.byteLength, 3);
  prefix.writeUInt32BE(body.byteLength, 7);
  return Buffer.concat([prefix, headerBytes, body]);
}

function expectRejected(bytes: Uint8Array, reason: FrameErrorReason) {
  const result = decodeFrame(bytes);
  if (result.ok) throw new Error(`expected ${reason}, decoded ${result.frame.message.type}`);
  expect(result.error.reason).toBe(reason);
  expect(result.error.message.length).toBeGreaterThan(0);
  return result.error;
}

const heartbeat: Message = {
  type: 'heartbeat',
  from: 'vm-1',
  incarnation: 'abc',
  cpu: { cores: 2, load: 0.5 },
  memoryFree: 1024,
};

describe('frame codec: round trips', () => {
  for (const type of MESSAGE_TYPES) {
    test(`${type} survives encode → decode`, () => {
      const carriesBody = DATA_MESSAGE_TYPES.has(type);
      fc.assert(
        fc.property(messageArbitraries[type], bodyArb, (message, body) => {
          const sent = carriesBody ? body : new Uint8Array();
          const result = decodeFrame(encodeFrame(message as Message, sent));
          if (!result.ok) throw result.error;
          expect(result.frame.message).toEqual(message as Message);
          expect(Buffer.compare(result.frame.body, Buffer.from(sent))).toBe(0);
        }),
        { numRuns: 200 },
      );
    });
  }

  test('data messages carry bytes raw, not encoded in the header', () => {
    const body = Buffer.from([0, 255, 1, 254, 0x43, 0x4c]);
    const bytes = encodeFrame(
      { type: 'chunk.data', id: 't1', from: 'vm-1', index: 0, offset: 0, crc32: 0 },
      body,
    );
    expect(bytes.subarray(bytes.byteLength - body.byteLength).equals(body)).toBe(true);
    expect(bytes.byteLength).toBe(FRAME_PREFIX_BYTES + bytes.readUInt32BE(3) + body.byteLength);
  });

  test('encoding an invalid message is a programming error and throws', () => {
    expect(() => encodeFrame({ ...heartbeat, from: 'no/slashes' })).toThrow(/from/);
    expect(() => encodeFrame(heartbeat, Buffer.from('x'))).toThrow(/carries no body/);
  });
});

describe('frame codec: malformed input is rejected with a reason, never thrown', () => {
  test('random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => {
        const result = decodeFrame(bytes);
        expect(result.ok).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  test('random bytes behind a valid prefix', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.uint8Array({ maxLength: 64 }), (h, b) => {
        const result = decodeFrame(rawFrame(h, b));
        expect(result.ok).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });

  test('mutated valid frames: flipped, dropped, inserted and overwritten bytes', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip'), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
      fc.record({ kind: fc.constant('truncate'), at: fc.nat() }),
      fc.record({ kind: fc.constant('insert'), at: fc.nat(), byte: fc.nat({ max: 255 }) }),
      fc.record({ kind: fc.constant('set'), at: fc.nat(), byte: fc.nat({ max: 255 }) }),
    );
    fc.assert(
      fc.property(
        anyMessageArb,
        bodyArb,
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        (m, b, ms) => {
          let bytes = Buffer.from(encodeFrame(m, DATA_MESSAGE_TYPES.has(m.type) ? b : undefined));
          for (const step of ms) {
            const at = step.at % Math.max(1, bytes.byteLength);
            if (step.kind === 'flip' && bytes.byteLength > 0) {
              bytes[at] = (bytes[at] ?? 0) ^ (1 << step.bit);
            } else if (step.kind === 'truncate') {
              bytes = bytes.subarray(0, at);
            } else if (step.kind === 'insert' && 'byte' in step) {
              bytes = Buffer.concat([
                bytes.subarray(0, at),
                Buffer.from([step.byte]),
                bytes.subarray(at),
              ]);
            } else if (step.kind === 'set' && 'byte' in step && bytes.byteLength > 0) {
              bytes[at] = step.byte;
            }
          }
          const result = decodeFrame(bytes);
          // A mutation may land on a byte that keeps the frame valid (a body
          // byte, a digit of a number): then what decodes must itself be valid.
          if (result.ok)
            expect(() => encodeFrame(result.frame.message, result.frame.body)).not.toThrow();
          else expect(result.error.reason).toBeString();
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('truncated: every cut of a valid frame', () => {
    const bytes = encodeFrame(
      { type: 'chunk.data', id: 't1', from: 'vm-1', index: 0, offset: 0, crc32: 0 },
      Buffer.from('0123456789'),
    );
    for (let cut = 0; cut < bytes.byteLength; cut++) {
      expectRejected(bytes.subarray(0, cut), 'truncated');
    }
  });

  test('trailing bytes beyond the declared body', () => {
    const bytes = encodeFrame(heartbeat);
    expectRejected(Buffer.concat([bytes, Buffer.from([0])]), 'trailing-bytes');
  });

  test('not a frame: wrong magic', () => {
    expectRejected(Buffer.from('{"type":"heartbeat"}'), 'not-a-frame');
    expectRejected(Buffer.from('hello'), 'not-a-frame');
  });

  test('wrong version', () => {
    const error = expectRejected(
      rawFrame(JSON.stringify(heartbeat), undefined, 2),
      'unsupported-version',
    );
    expect(error.message).toContain('version 2');
  });

  test('header over the size limit is refused before it is parsed', () => {
    const prefix = Buffer.alloc(FRAME_PREFIX_BYTES);
    prefix.write('CL', 0, 'latin1');
    prefix.writeUInt8(1, 2);
    prefix.writeUInt32BE(DEFAULT_MAX_HEADER_BYTES + 1, 3);
    expectRejected(prefix, 'header-too-large');
    const small = decodeFrame(encodeFrame(heartbeat), { maxHeaderBytes: 16 });
    expect(small.ok).toBe(false);
    if (!small.ok) expect(small.error.reason).toBe('header-too-large');
  });

  test('header that is not UTF-8 JSON object', () => {
    expectRejected(rawFrame('not json'), 'bad-header');
    expectRejected(rawFrame(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), 'bad-header');
    expectRejected(rawFrame('[1,2]'), 'bad-header');
    expectRejected(rawFrame('null'), 'bad-header');
    expectRejected(rawFrame('{"id":"x"}'), 'bad-header');
  });

  test('unknown type, with what could be read for a reply', () => {
    const error = expectRejected(
      rawFrame(JSON.stringify({ type: 'teleport', id: 'r1', from: 'vm-9' })),
      'unknown-type',
    );
    expect(error.partial).toEqual({ type: 'teleport', id: 'r1', from: 'vm-9' });
  });

  test('fields that fail the schema, naming the field', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...heartbeat, memoryFree: -1 }, /memoryFree/],
      [{ ...heartbeat, memoryFree: 1.5 }, /memoryFree/],
      [{ ...heartbeat, from: '../etc' }, /from/],
      [{ ...heartbeat, extra: true }, /extra|unrecognized/i],
      [
        { type: 'upload.begin', id: 'u1', from: 'c1', name: 'a/b', size: 1, overwrite: false },
        /path separator/,
      ],
      [
        { type: 'upload.begin', id: 'u1', from: 'c1', name: 'x\u0000', size: 1, overwrite: false },
        /control/,
      ],
      [{ type: 'upload.end', id: 'u1', from: 'c1', sha256: 'ABC' }, /sha256/],
      [{ type: 'chunk.fetch', id: 'u1', from: 'c1' }, /to|fileId/],
    ];
    for (const [header, pattern] of cases) {
      const error = expectRejected(rawFrame(JSON.stringify(header)), 'invalid-fields');
      expect(error.message).toMatch(pattern);
    }
  });

  test('a body on a message that carries none', () => {
    expectRejected(rawFrame(JSON.stringify(heartbeat), Buffer.from('x')), 'unexpected-body');
  });
});
