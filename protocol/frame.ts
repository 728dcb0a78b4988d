/**
 * The binary frame every MQTT payload carries:
 *
 *   offset  size  field
 *   0       2     magic "CL" (0x43 0x4C)
 *   2       1     version (1)
 *   3       4     header length H, unsigned big-endian
 *   7       4     body length B, unsigned big-endian
 *   11      H     header: UTF-8 JSON, one of `messageSchemas`
 *   11+H    B     body: raw bytes (data messages only)
 *
 * Both lengths are explicit so that a truncated or padded payload is caught
 * at the frame, not later as a checksum mismatch.
 *
 * Headers live in the payload rather than in MQTT 5 user properties so that
 * the protocol works on MQTT 3.1.1 servers too (aedes speaks only 3.1.1).
 * Decoding never throws: anything malformed yields a `FrameError` with a
 * reason, so one bad message can never crash or wedge a node.
 */
import type { z } from 'zod';
import {
  DATA_MESSAGE_TYPES,
  isMessageType,
  type Message,
  type MessageOf,
  type MessageType,
  messageSchemas,
  OPAQUE_ID_PATTERN,
} from './messages.ts';
import { MEMBER_ID_PATTERN } from './topics.ts';

export const FRAME_MAGIC = Buffer.from('CL', 'latin1');
export const FRAME_VERSION = 1;
export const FRAME_PREFIX_BYTES = 11;
/** Large enough for a page of 1,000 listed files; small enough to bound memory. */
export const DEFAULT_MAX_HEADER_BYTES = 1024 * 1024;

export type FrameErrorReason =
  | 'truncated'
  | 'trailing-bytes'
  | 'not-a-frame'
  | 'unsupported-version'
  | 'header-too-large'
  | 'bad-header'
  | 'unknown-type'
  | 'invalid-fields'
  | 'unexpected-body'
  // Valid frames on the wrong topic (checked by the link, not the decoder):
  | 'wrong-sender'
  | 'not-from-broker';

/** Why a payload was rejected, with what could be read of it for a reply. */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  constructor(
    readonly reason: FrameErrorReason,
    message: string,
    /** Best-effort fields of the rejected header, to address an error reply. */
    readonly partial: { type?: string; id?: string; from?: string } = {},
  ) {
    super(message);
  }
}

export interface Frame<M extends Message = Message> {
  readonly message: M;
  /** Raw bytes after the header; empty for non-data messages. */
  readonly body: Buffer;
  /**
   * Present when `body` lies in a buffer the link will reuse: whoever is
   * last to read the body calls it (once), and nobody reads the body after.
   * Not calling it is safe (the buffer is collected as usual).
   */
  readonly release?: () => void;
}

export type DecodeResult = { ok: true; frame: Frame } | { ok: false; error: FrameError };

export interface DecodeOptions {
  /** Headers longer than this are rejected before they are parsed. */
  maxHeaderBytes?: number;
}

const EMPTY = Buffer.alloc(0);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Encodes `message` (validated against its schema: an invalid one is a bug in
 * the caller, so it throws) and, for data messages, `body`.
 */
export function encodeFrame(message: Message, body?: Uint8Array): Buffer {
  const parts = encodeFrameParts(message, body);
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
}

/**
 * The same frame as `encodeFrame`, in two parts when it has a body: the
 * prefix and header, then the body itself, not copied (a link can write them
 * one after the other).
 */
export function encodeFrameParts(message: Message, body?: Uint8Array): Uint8Array[] {
  const schema: z.ZodType = messageSchemas[message.type];
  const checked = schema.safeParse(message);
  if (!checked.success) {
    throw new TypeError(`cannot encode ${message.type}: ${describeIssues(checked.error)}`);
  }
  if (body && body.byteLength > 0 && !DATA_MESSAGE_TYPES.has(message.type)) {
    throw new TypeError(`cannot encode ${message.type}: it carries no body`);
  }
  const head = framed([Buffer.from(JSON.stringify(message), 'utf8')], body?.byteLength ?? 0);
  return body && body.byteLength > 0 ? [head, body] : [head];
}

/**
 * A list page whose records are JSON text already, as the metadata store
 * keeps them: the rest of the header is checked, and the records are
 * spliced in unparsed (parsing, checking and writing 100,000 records again
 * was most of a listing). The receiver checks every record, as it checks
 * every frame (list.response's `files`). `records` is the JSON texts, or
 * their UTF-8 joined by commas (`joinListRecords`), which a broker can make
 * before it knows which request the page answers.
 */
export function encodeListPage(
  header: Omit<MessageOf<'list.response'>, 'files'>,
  records: readonly string[] | Buffer,
): Buffer {
  // `files` last, so the JSON ends with `"files":[]}`.
  const empty = { ...header, files: [] };
  const checked = messageSchemas['list.response'].safeParse(empty);
  if (!checked.success) {
    throw new TypeError(`cannot encode list.response: ${describeIssues(checked.error)}`);
  }
  const json = JSON.stringify(empty);
  const joined = Buffer.isBuffer(records) ? records : joinListRecords(records);
  return framed([Buffer.from(json.slice(0, -2), 'utf8'), joined, LIST_END], 0);
}

/** JSON records (text, or its UTF-8) as one list page's `files` holds them, without the brackets. */
export function joinListRecords(records: readonly (string | Buffer)[]): Buffer {
  if (records.every((record) => typeof record === 'string')) {
    return Buffer.from(records.join(','), 'utf8');
  }
  const parts: Buffer[] = [];
  records.forEach((record, i) => {
    if (i > 0) parts.push(COMMA);
    parts.push(typeof record === 'string' ? Buffer.from(record, 'utf8') : record);
  });
  return Buffer.concat(parts);
}

const COMMA = Buffer.from(',', 'utf8');

const LIST_END = Buffer.from(']}', 'utf8');

/** The prefix, then the header (its parts one after another); `bodyLength` bytes of body follow. */
function framed(header: readonly Buffer[], bodyLength: number): Buffer {
  const prefix = Buffer.allocUnsafe(FRAME_PREFIX_BYTES);
  FRAME_MAGIC.copy(prefix, 0);
  prefix.writeUInt8(FRAME_VERSION, 2);
  prefix.writeUInt32BE(
    header.reduce((sum, part) => sum + part.byteLength, 0),
    3,
  );
  prefix.writeUInt32BE(bodyLength, 7);
  return Buffer.concat([prefix, ...header]);
}

export function decodeFrame(bytes: Uint8Array, options: DecodeOptions = {}): DecodeResult {
  const maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  const buf = Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.byteLength < FRAME_PREFIX_BYTES) {
    if (buf.byteLength >= 2 && !buf.subarray(0, 2).equals(FRAME_MAGIC)) {
      return fail('not-a-frame', 'payload does not start with the cloudlet magic "CL"');
    }
    return fail(
      'truncated',
      `payload is ${buf.byteLength} bytes; a frame needs at least ${FRAME_PREFIX_BYTES}`,
    );
  }
  if (buf[0] !== FRAME_MAGIC[0] || buf[1] !== FRAME_MAGIC[1]) {
    return fail('not-a-frame', 'payload does not start with the cloudlet magic "CL"');
  }
  const version = buf.readUInt8(2);
  if (version !== FRAME_VERSION) {
    return fail(
      'unsupported-version',
      `frame version ${version} is not supported (this node speaks ${FRAME_VERSION})`,
    );
  }
  const headerLength = buf.readUInt32BE(3);
  if (headerLength > maxHeaderBytes) {
    return fail(
      'header-too-large',
      `header is ${headerLength} bytes; the limit is ${maxHeaderBytes}`,
    );
  }
  const bodyLength = buf.readUInt32BE(7);
  const bodyStart = FRAME_PREFIX_BYTES + headerLength;
  const expected = bodyStart + bodyLength;
  if (expected > buf.byteLength) {
    return fail(
      'truncated',
      `frame claims ${headerLength} header and ${bodyLength} body bytes but only ${buf.byteLength - FRAME_PREFIX_BYTES} follow`,
    );
  }
  if (expected < buf.byteLength) {
    return fail(
      'trailing-bytes',
      `frame has ${buf.byteLength - expected} bytes beyond its declared header and body`,
    );
  }

  let raw: unknown;
  try {
    raw = JSON.parse(utf8.decode(buf.subarray(FRAME_PREFIX_BYTES, bodyStart)));
  } catch (error) {
    return fail('bad-header', `header is not UTF-8 JSON: ${(error as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return fail('bad-header', 'header is not a JSON object');
  }
  const partial = readPartial(raw as Record<string, unknown>);
  const type = (raw as Record<string, unknown>).type;
  if (typeof type !== 'string') {
    return fail('bad-header', 'header has no "type" string', partial);
  }
  if (!isMessageType(type)) {
    return fail('unknown-type', `unknown message type ${JSON.stringify(type)}`, partial);
  }
  const schema: z.ZodType = messageSchemas[type];
  const checked = schema.safeParse(raw);
  if (!checked.success) {
    return fail('invalid-fields', `${type}: ${describeIssues(checked.error)}`, partial);
  }
  const body = bodyStart === buf.byteLength ? EMPTY : buf.subarray(bodyStart);
  if (body.byteLength > 0 && !DATA_MESSAGE_TYPES.has(type)) {
    return fail(
      'unexpected-body',
      `${type} carries no body, got ${body.byteLength} bytes`,
      partial,
    );
  }
  return { ok: true, frame: { message: checked.data as Message, body } };
}

/** Narrows a decoded frame to one of `types`. */
export function isFrameOf<T extends MessageType>(
  frame: Frame,
  ...types: T[]
): frame is Frame<Extract<Message, { type: T }>> {
  return (types as MessageType[]).includes(frame.message.type);
}

function fail(
  reason: FrameErrorReason,
  message: string,
  partial?: FrameError['partial'],
): DecodeResult {
  return { ok: false, error: new FrameError(reason, message, partial) };
}

function readPartial(raw: Record<string, unknown>): FrameError['partial'] {
  const partial: { type?: string; id?: string; from?: string } = {};
  if (typeof raw.type === 'string' && raw.type.length <= 64) partial.type = raw.type;
  if (typeof raw.id === 'string' && OPAQUE_ID_PATTERN.test(raw.id)) partial.id = raw.id;
  if (typeof raw.from === 'string' && MEMBER_ID_PATTERN.test(raw.from)) partial.from = raw.from;
  return partial;
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => {
      const path = issue.path.length > 0 ? issue.path.join('.') : '(header)';
      return `${path}: ${issue.message}`;
    })
    .join('; ');
}
