/**
 * The payloads of the fuzz test (issue 7): random bytes, and valid frames
 * mutated in every way the frame and its topic can be wrong. Each case knows
 * what its maker meant (a reason, "rejected", "accepted", or "either" for
 * blind mutations) and what the node must do with it (`expected`, read with
 * the same decoder and channel rule as the link). Generation is one
 * fast-check sample, so a seed replays every byte.
 */
import fc from 'fast-check';
import { BROKER_ONLY, channelProblem } from '../../actors/link/mqtt-link.ts';
import {
  DATA_MESSAGE_TYPES,
  DEFAULT_MAX_HEADER_BYTES,
  decodeFrame,
  encodeFrame,
  FRAME_PREFIX_BYTES,
  type FrameErrorReason,
  isMessageType,
  type Message,
  type MessageType,
  messageSchemas,
  type ParsedTopic,
  type Topics,
} from '../../protocol/index.ts';
import { anyMessageArb, memberIdArb, messageArbitraries } from '../support/arbitraries.ts';

export const BROKER_ID = 'broker';
export const VM_ID = 'vm-1';
/** Members that write to the broker on their own topic; none of them is a VM. */
export const FUZZ_SENDERS = ['fz-1', 'fz-2', 'fz-3'] as const;
/** A VM id nobody runs: its status topic is the broker's, and nobody else's. */
const GHOST_VM = 'fz-ghost';

export interface FuzzTarget {
  /** The node whose counters must show the payload. */
  node: 'broker' | 'vm';
  topic: ParsedTopic;
}

export type Outcome = FrameErrorReason | 'accepted';
/** What the maker of a payload meant it to be. */
export type Intent = Outcome | 'rejected' | 'either';

export interface FuzzCase {
  target: FuzzTarget;
  /** Which mutation made it. */
  kind: string;
  payload: Buffer;
  made: Intent;
  expected: Outcome;
}

/**
 * Valid messages on a member's own topic change the broker's state when they
 * are joins (a VM that never answers, then chosen for placement) or upload
 * starts (transfers held for their idle timeout): the fuzz tests the gate,
 * not those flows, so it lets neither through. Everything else it sends is
 * answered (an error, a rejoin, a listing) or dropped as meaningless.
 */
const KEPT_OUT_OF_THE_BROKER: ReadonlySet<MessageType> = new Set(['join', 'upload.begin']);

export function topicOf(topics: Topics, topic: ParsedTopic): string {
  switch (topic.kind) {
    case 'to-broker':
      return topics.toBroker(topic.sender);
    case 'peer':
      return topics.node(topic.id);
    case 'from-broker':
      return topics.fromBroker(topic.id);
    case 'status':
      return topics.status(topic.id);
    case 'upload':
      return topics.upload(topic.sender, topic.holder, topic.core);
  }
}

/** What the link must do with `payload` on `target`'s topic. */
export function outcomeOf(
  target: FuzzTarget,
  payload: Buffer,
): { outcome: Outcome; type?: string } {
  const decoded = decodeFrame(payload);
  if (!decoded.ok) return { outcome: decoded.error.reason };
  const { message } = decoded.frame;
  const problem = channelProblem(target.topic, message, BROKER_ID);
  return { outcome: problem ? problem.reason : 'accepted', type: message.type };
}

/** Whether a node may be handed this valid frame without the test losing its footing. */
function mayAccept(target: FuzzTarget, type: string | undefined) {
  if (target.topic.kind === 'from-broker') return false; // a real instruction
  if (target.topic.kind === 'to-broker') return !KEPT_OUT_OF_THE_BROKER.has(type as MessageType);
  return true;
}

export function fuzzCases(seed: number, count: number): FuzzCase[] {
  return fc.sample(caseArb, { seed, numRuns: count });
}

// ------------------------------------------------------------- generation

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Made = { kind: string; payload: Buffer; made: Intent };
type Base = { message: Message; body: Buffer };

const MAX = DEFAULT_MAX_HEADER_BYTES;
const EMPTY = Buffer.alloc(0);

/** Where the payloads go, and how often: a few members' topics to the broker,
 * a ghost VM's status topic (the broker reads every status), and both of the
 * VM's inboxes. */
export const FUZZ_TARGETS: ReadonlyArray<{ target: FuzzTarget; weight: number }> = [
  ...FUZZ_SENDERS.map((sender) => ({
    target: { node: 'broker', topic: { kind: 'to-broker', sender } } as const,
    weight: 15,
  })),
  { target: { node: 'broker', topic: { kind: 'status', id: GHOST_VM } }, weight: 5 },
  { target: { node: 'vm', topic: { kind: 'peer', id: VM_ID } }, weight: 30 },
  { target: { node: 'vm', topic: { kind: 'from-broker', id: VM_ID } }, weight: 20 },
  // Uploads: segments straight to a VM, and the first copy to the broker too.
  {
    target: { node: 'vm', topic: { kind: 'upload', sender: 'fz-2', holder: VM_ID, core: false } },
    weight: 10,
  },
  {
    target: {
      node: 'broker',
      topic: { kind: 'upload', sender: 'fz-3', holder: GHOST_VM, core: true },
    },
    weight: 10,
  },
];

const targetArb = fc.oneof(
  ...FUZZ_TARGETS.map(({ target, weight }) => ({ weight, arbitrary: fc.constant(target) })),
);

/** Deterministic noise: fast-check draws a length and a seed, xorshift fills. */
function noise(length: number, seed: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  let x = seed | 0 || 0x2545f491;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}
const noiseArb = (min: number, max: number) =>
  fc.tuple(fc.integer({ min, max }), fc.integer()).map(([length, seed]) => noise(length, seed));
/** Sizes spread over orders of magnitude, 2^lo to 2^hi. */
const magnitudeArb = (lo: number, hi: number) =>
  fc
    .integer({ min: lo, max: hi - 1 })
    .chain((bits) => fc.integer({ min: 2 ** bits, max: 2 ** (bits + 1) }));

/** The `from` a valid frame on this topic has. */
function rightFrom(topic: ParsedTopic): fc.Arbitrary<string> {
  switch (topic.kind) {
    case 'to-broker':
      return fc.constant(topic.sender);
    case 'status':
      return fc.constant(topic.id);
    case 'from-broker':
      return fc.constant(BROKER_ID);
    case 'peer':
      return fc.oneof(memberIdArb, fc.constantFrom(BROKER_ID, ...FUZZ_SENDERS));
    case 'upload':
      return fc.constant(topic.sender);
  }
}

const someFromArb = fc.oneof(memberIdArb, fc.constantFrom(BROKER_ID, VM_ID, ...FUZZ_SENDERS));

function baseArb(message: fc.Arbitrary<Message>, from: fc.Arbitrary<string>): fc.Arbitrary<Base> {
  return fc.tuple(message, from, noiseArb(0, 2048)).map(([m, f, body]) => {
    const withFrom = { ...m, from: f } as Message;
    return { message: withFrom, body: DATA_MESSAGE_TYPES.has(withFrom.type) ? body : EMPTY };
  });
}
const encoded = ({ message, body }: Base) => encodeFrame(message, body);
const typesArb = (types: Iterable<MessageType>) =>
  fc.constantFrom(...types).chain((type) => messageArbitraries[type] as fc.Arbitrary<Message>);

/** A frame around `header` (and `body`), with every prefix field overridable. */
function frame(
  header: string | Buffer,
  body: Buffer = EMPTY,
  prefix: { version?: number; headerLength?: number; bodyLength?: number } = {},
) {
  const headerBytes = typeof header === 'string' ? Buffer.from(header, 'utf8') : header;
  const start = Buffer.alloc(FRAME_PREFIX_BYTES);
  start.write('CL', 0, 'latin1');
  start.writeUInt8(prefix.version ?? 1, 2);
  start.writeUInt32BE(prefix.headerLength ?? headerBytes.byteLength, 3);
  start.writeUInt32BE(prefix.bodyLength ?? body.byteLength, 7);
  return Buffer.concat([start, headerBytes, body]);
}

/** `header` (a JSON object's text) with one more key. */
const withKey = (header: string, key: string, valueText: string) =>
  `${header.slice(0, -1)},${JSON.stringify(key)}:${valueText}}`;

/** `message`'s header with the value at `path` replaced by raw JSON text. */
function replaceAt(message: Message, path: (string | number)[], valueText: string) {
  const SENTINEL = '\u0000fuzz\u0000';
  const copy = structuredClone(message) as unknown as Json;
  let node = copy as Record<string | number, Json>;
  for (const step of path.slice(0, -1)) node = node[step] as Record<string | number, Json>;
  node[path.at(-1) as string | number] = SENTINEL;
  return JSON.stringify(copy).replace(JSON.stringify(SENTINEL), () => valueText);
}

/** Every path in `value`, parents before children. */
function pathsOf(value: Json, prefix: (string | number)[] = []): (string | number)[][] {
  if (value === null || typeof value !== 'object') return [];
  const entries: [string | number, Json][] = Array.isArray(value)
    ? value.map((item, index) => [index, item])
    : Object.entries(value);
  return entries.flatMap(([key, item]) => [[...prefix, key], ...pathsOf(item, [...prefix, key])]);
}
const valueAt = (value: Json, path: (string | number)[]) =>
  path.reduce<Json>((node, step) => (node as Record<string | number, Json>)[step] as Json, value);
const jsonKind = (value: Json) =>
  value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;

const schemaKeys = (type: MessageType) =>
  new Set(Object.keys((messageSchemas[type] as unknown as { shape: object }).shape));

/** Random JSON for extra fields and not-an-object headers. */
const jsonValueArb = fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>;

// A valid frame meant for this topic, and one from anyone.
const mutators = (target: FuzzTarget): fc.WeightedArbitrary<Made>[] => {
  const right = baseArb(anyMessageArb, rightFrom(target.topic));
  const any = baseArb(anyMessageArb, fc.oneof(rightFrom(target.topic), someFromArb));
  const weighted = (weight: number, arbitrary: fc.Arbitrary<Made>) => ({ weight, arbitrary });
  return [
    weighted(
      12,
      noiseArb(0, 4096).map((payload) => ({ kind: 'random bytes', payload, made: 'rejected' })),
    ),
    weighted(
      5,
      fc.tuple(noiseArb(8, 8), noiseArb(0, 2048)).map(([lengths, tail]) => ({
        kind: 'magic and random lengths',
        payload: Buffer.concat([Buffer.from([0x43, 0x4c, 1]), lengths, tail]),
        made: 'rejected',
      })),
    ),
    weighted(
      14,
      fc
        .tuple(
          any,
          fc.array(fc.tuple(fc.nat(), fc.nat({ max: 7 })), { minLength: 1, maxLength: 8 }),
        )
        .map(([base, flips]) => {
          const payload = encoded(base);
          for (const [at, bit] of flips) {
            const index = at % payload.byteLength;
            payload[index] = (payload[index] as number) ^ (1 << bit);
          }
          return { kind: 'bit flips', payload, made: 'either' };
        }),
    ),
    weighted(
      7,
      fc.tuple(any, fc.nat()).map(([base, cut]) => {
        const whole = encoded(base);
        return {
          kind: 'truncated',
          payload: whole.subarray(0, cut % whole.byteLength),
          made: 'truncated',
        };
      }),
    ),
    weighted(
      5,
      fc.tuple(any, noiseArb(1, 512)).map(([base, extra]) => ({
        kind: 'extended',
        payload: Buffer.concat([encoded(base), extra]),
        made: 'trailing-bytes',
      })),
    ),
    weighted(7, fc.tuple(any, fc.nat({ max: 4 }), fc.nat()).map(lengthFieldCorrupted)),
    weighted(
      7,
      fc.tuple(any, fc.nat(), fc.nat()).map(([base, pick, choice]) => {
        const header = base.message as unknown as Json;
        const paths = pathsOf(header).filter((path) => !(path.length === 1 && path[0] === 'type'));
        const path = paths[pick % paths.length] as (string | number)[];
        const original = jsonKind(valueAt(header, path));
        const nullableString = original === 'string' || original === 'null';
        const replacements = ([12345, true, [], {}, 'text', null] as Json[]).filter(
          (value) =>
            jsonKind(value) !== original &&
            !(nullableString && (value === 'text' || value === null)),
        );
        const value = replacements[choice % replacements.length] as Json;
        return {
          kind: 'field of the wrong type',
          payload: frame(replaceAt(base.message, path, JSON.stringify(value)), base.body),
          made: 'invalid-fields',
        };
      }),
    ),
    weighted(
      5,
      fc
        .tuple(
          any,
          fc.oneof(
            fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty', '', 'x'),
            fc.string({ maxLength: 20 }),
          ),
          jsonValueArb,
        )
        .filter(([base, key]) => !schemaKeys(base.message.type).has(key))
        .map(([base, key, value]) => ({
          kind: 'extra field',
          payload: frame(
            withKey(JSON.stringify(base.message), key, JSON.stringify(value)),
            base.body,
          ),
          made: 'invalid-fields',
        })),
    ),
    weighted(
      3,
      fc
        .tuple(
          any,
          fc.nat(),
          fc.constantFrom('x', 'é', '€', '😀', '"', '\\', '\u0000'),
          fc.oneof(
            { weight: 9, arbitrary: magnitudeArb(10, 18) },
            { weight: 1, arbitrary: fc.integer({ min: MAX + 1, max: MAX + 65_536 }) },
          ),
        )
        .map(([base, pick, unit, length]) => {
          const fields = Object.entries(base.message)
            .filter(([key, value]) => key !== 'type' && typeof value === 'string')
            .map(([key]) => key);
          const field = fields[pick % fields.length] as string;
          const huge = length > MAX ? 'x'.repeat(length) : unit.repeat(length);
          const header = Buffer.from(replaceAt(base.message, [field], JSON.stringify(huge)));
          return {
            kind: 'huge string',
            payload: frame(header, base.body),
            made: header.byteLength > MAX ? 'header-too-large' : 'invalid-fields',
          };
        }),
    ),
    weighted(
      2,
      fc
        .tuple(any, magnitudeArb(1, 16), fc.boolean(), fc.nat())
        .map(([base, depth, arrays, pick]) => {
          const nested = arrays
            ? `${'['.repeat(depth + 1)}${']'.repeat(depth + 1)}`
            : `${'{"a":'.repeat(depth + 1)}1${'}'.repeat(depth + 1)}`;
          return {
            kind: 'deep nesting',
            payload: frame(inKnownOrExtraField(base.message, pick, nested), base.body),
            made: 'invalid-fields',
          };
        }),
    ),
    weighted(
      2,
      fc
        .tuple(
          any,
          fc.integer({ min: 2, max: 2000 }),
          fc.constantFrom('{}', '0', 'null', '"x"', '[]'),
          fc.nat(),
        )
        .map(([base, width, item, pick]) => ({
          kind: 'wide array',
          payload: frame(
            inKnownOrExtraField(base.message, pick, `[${Array(width).fill(item).join(',')}]`),
            base.body,
          ),
          made: 'invalid-fields',
        })),
    ),
    weighted(
      4,
      fc
        .tuple(
          any,
          fc.oneof(
            fc.constantFrom(
              '__proto__',
              'constructor',
              'toString',
              'JOIN',
              'join ',
              'upload',
              '',
              'vms.request\u0000',
            ),
            fc.string({ maxLength: 80 }),
          ),
        )
        .filter(([, type]) => !isMessageType(type))
        .map(([base, type]) => ({
          kind: 'unknown type',
          payload: frame(JSON.stringify({ ...base.message, type })),
          made: 'unknown-type',
        })),
    ),
    weighted(
      2,
      fc
        .tuple(any, fc.constantFrom<Json>(1, null, true, [], {}, ['vms.request']))
        .map(([base, type]) => {
          const header = JSON.parse(JSON.stringify(base.message)) as Record<string, Json>;
          if (type === null) delete header.type;
          else header.type = type;
          return {
            kind: 'type not a string',
            payload: frame(JSON.stringify(header)),
            made: 'bad-header',
          };
        }),
    ),
    weighted(
      2,
      jsonValueArb
        .filter((value) => value === null || typeof value !== 'object' || Array.isArray(value))
        .map((value) => ({
          kind: 'header not an object',
          payload: frame(JSON.stringify(value)),
          made: 'bad-header',
        })),
    ),
    weighted(
      2,
      fc.tuple(any, fc.nat(), noiseArb(0, 64)).map(([base, at, tail]) => {
        // 0xff never occurs in UTF-8: the header cannot be decoded.
        const header = Buffer.from(JSON.stringify(base.message));
        const bad = Buffer.concat([
          header.subarray(0, at % header.byteLength),
          Buffer.from([0xff]),
          tail,
        ]);
        return { kind: 'header not UTF-8', payload: frame(bad, base.body), made: 'bad-header' };
      }),
    ),
    weighted(
      3,
      fc
        .tuple(
          any,
          fc.integer({ min: 0, max: 255 }).filter((version) => version !== 1),
        )
        .map(([base, version]) => ({
          kind: 'wrong version',
          payload: frame(JSON.stringify(base.message), base.body, { version }),
          made: 'unsupported-version',
        })),
    ),
    weighted(
      2,
      fc.tuple(any, fc.nat({ max: 1 }), fc.integer({ min: 1, max: 255 })).map(([base, at, xor]) => {
        const payload = encoded(base);
        payload[at] = (payload[at] as number) ^ xor;
        return { kind: 'wrong magic', payload, made: 'not-a-frame' };
      }),
    ),
    weighted(
      3,
      fc
        .tuple(
          baseArb(
            typesArb(
              Object.keys(messageSchemas).filter(
                (type) => !DATA_MESSAGE_TYPES.has(type as MessageType),
              ) as MessageType[],
            ),
            rightFrom(target.topic),
          ),
          noiseArb(1, 2048),
        )
        .map(([base, body]) => ({
          kind: 'body on a message without one',
          payload: frame(JSON.stringify(base.message), body),
          made: 'unexpected-body',
        })),
    ),
    weighted(
      2,
      fc.tuple(right, someFromArb).map(([base, other]) => {
        // JSON lets a key repeat; the last one counts.
        const header = withKey(JSON.stringify(base.message), 'from', JSON.stringify(other));
        return { kind: 'from given twice', payload: frame(header, base.body), made: 'either' };
      }),
    ),
    weighted(
      2,
      fc
        .tuple(
          right,
          fc.nat(),
          fc.constantFrom(-1, 1.5, 1e308, -0, 2 ** 53, 2 ** 53 + 2, 4096, 1e-7),
        )
        .map(([base, pick, value]) => {
          const header = base.message as unknown as Json;
          const numbers = pathsOf(header).filter(
            (path) => typeof valueAt(header, path) === 'number',
          );
          const path = numbers[pick % Math.max(1, numbers.length)];
          const text = path
            ? replaceAt(base.message, path, JSON.stringify(value))
            : JSON.stringify(header);
          return { kind: 'edge number', payload: frame(text, base.body), made: 'either' };
        }),
    ),
    weighted(8, misplaced(target)),
    weighted(8, target.topic.kind === 'from-broker' ? misplaced(target) : acceptable(target)),
  ];
};

/** A length field that disagrees with the bytes that follow. */
function lengthFieldCorrupted([base, variant, amount]: [Base, number, number]): Made {
  const header = Buffer.from(JSON.stringify(base.message));
  const H = header.byteLength;
  const B = base.body.byteLength;
  const at = (lengths: { headerLength?: number; bodyLength?: number }, made: Intent): Made => ({
    kind: 'length field corrupted',
    payload: frame(header, base.body, lengths),
    made,
  });
  switch (variant) {
    case 0:
      return at({ headerLength: H + 1 + (amount % (MAX - H)) }, 'truncated');
    case 1:
      return at({ headerLength: H - 1 - (amount % H) }, 'trailing-bytes');
    case 2:
      return at({ headerLength: MAX + 1 + (amount % (0xffffffff - MAX)) }, 'header-too-large');
    case 3:
      if (B > 0) return at({ bodyLength: B - 1 - (amount % B) }, 'trailing-bytes');
      return at({ bodyLength: B + 1 + (amount % (0xffffffff - B)) }, 'truncated');
    default:
      return at({ bodyLength: B + 1 + (amount % (0xffffffff - B)) }, 'truncated');
  }
}

/** `valueText` as the value of one of the message's own keys, or of an extra one. */
function inKnownOrExtraField(message: Message, pick: number, valueText: string) {
  const keys = Object.keys(message).filter((key) => key !== 'type');
  const key = keys[pick % (keys.length + 1)];
  return key === undefined
    ? withKey(JSON.stringify(message), 'nested', valueText)
    : replaceAt(message, [key], valueText);
}

/** A valid frame on a topic that is not its place. */
function misplaced(target: FuzzTarget): fc.Arbitrary<Made> {
  const { topic } = target;
  const made = (payload: Buffer, reason: FrameErrorReason) => ({
    kind: 'valid frame, wrong topic',
    payload,
    made: reason,
  });
  switch (topic.kind) {
    case 'to-broker':
      return baseArb(
        anyMessageArb,
        someFromArb.filter((from) => from !== topic.sender),
      ).map((base) => made(encoded(base), 'wrong-sender'));
    case 'from-broker':
      return baseArb(
        anyMessageArb,
        someFromArb.filter((from) => from !== BROKER_ID),
      ).map((base) => made(encoded(base), 'wrong-sender'));
    case 'status':
      return fc
        .oneof(
          baseArb(anyMessageArb, someFromArb).filter(({ message }) => message.type !== 'status'),
          baseArb(
            messageArbitraries.status as fc.Arbitrary<Message>,
            someFromArb.filter((from) => from !== topic.id),
          ),
        )
        .map((base) => made(encoded(base), 'wrong-sender'));
    case 'peer':
      return baseArb(typesArb(BROKER_ONLY), someFromArb).map((base) =>
        made(encoded(base), 'not-from-broker'),
      );
    case 'upload':
      return fc
        .oneof(
          baseArb(anyMessageArb, someFromArb).filter(
            ({ message }) => message.type !== 'upload.segment',
          ),
          baseArb(
            messageArbitraries['upload.segment'] as fc.Arbitrary<Message>,
            someFromArb.filter((from) => from !== topic.sender),
          ),
        )
        .map((base) => made(encoded(base), 'wrong-sender'));
  }
}

/** A valid frame in its place, that the node takes and answers or drops. */
function acceptable(target: FuzzTarget): fc.Arbitrary<Made> {
  const types = Object.keys(messageSchemas) as MessageType[];
  const allowed =
    target.topic.kind === 'to-broker'
      ? types.filter((type) => !KEPT_OUT_OF_THE_BROKER.has(type))
      : target.topic.kind === 'status'
        ? (['status'] as MessageType[])
        : target.topic.kind === 'upload'
          ? (['upload.segment'] as MessageType[])
          : types.filter((type) => !BROKER_ONLY.has(type));
  return baseArb(typesArb(allowed), rightFrom(target.topic)).map((base) => ({
    kind: 'valid frame',
    payload: encoded(base),
    made: 'accepted',
  }));
}

const mutatorsByTarget = new Map<FuzzTarget, fc.Arbitrary<Made>>();
const caseArb: fc.Arbitrary<FuzzCase> = targetArb
  .chain((target) => {
    const mutation = mutatorsByTarget.get(target) ?? fc.oneof(...mutators(target));
    mutatorsByTarget.set(target, mutation);
    return mutation.map((made) => {
      const { outcome, type } = outcomeOf(target, made.payload);
      return {
        target,
        ...made,
        expected: outcome,
        acceptable: outcome !== 'accepted' || mayAccept(target, type),
      };
    });
  })
  .filter((fuzz) => fuzz.acceptable)
  .map(({ acceptable: _, ...fuzz }) => fuzz);
