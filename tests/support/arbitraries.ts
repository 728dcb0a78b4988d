/**
 * fast-check arbitraries for every wire message. The mapped type makes the
 * compiler refuse a message type without an arbitrary, so the property tests
 * cover every type by construction.
 */
import fc from 'fast-check';
import {
  type ChunkInfo,
  errorCode,
  type FileInfo,
  isValidFileName,
  MAX_CHUNKS,
  MEMBER_ID_PATTERN,
  type MessageOf,
  type MessageType,
  OPAQUE_ID_PATTERN,
  type VmInfo,
} from '../../protocol/index.ts';

export const memberIdArb = fc.stringMatching(MEMBER_ID_PATTERN);
export const opaqueIdArb = fc.stringMatching(OPAQUE_ID_PATTERN);
export const sha256Arb = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((bytes) => Buffer.from(bytes).toString('hex'));
export const byteCountArb = fc.maxSafeNat();
export const chunkIndexArb = fc.nat({ max: MAX_CHUNKS - 1 });
export const crc32Arb = fc.nat({ max: 0xffffffff });
export const segmentSizeArb = fc.integer({ min: 1, max: 64 * 1024 * 1024 });
export const windowArb = fc.integer({ min: 1, max: 1024 });
export const shortTextArb = fc.string({ maxLength: 200 });
export const fileNameArb = fc
  .oneof(
    fc.string({ minLength: 1, maxLength: 80 }),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }),
  )
  .filter(isValidFileName);
export const isoDateArb = fc
  .date({
    min: new Date('2000-01-01T00:00:00Z'),
    max: new Date('2999-12-31T23:59:59Z'),
    noInvalidDate: true,
  })
  .map((date) => date.toISOString());
export const cpuArb = fc.record({
  cores: fc.integer({ min: 1, max: 512 }),
  load: fc.double({ min: 0, max: 1000, noNaN: true, noDefaultInfinity: true }),
});

const chunkInfoArb: fc.Arbitrary<ChunkInfo> = fc.record({
  index: chunkIndexArb,
  offset: byteCountArb,
  size: byteCountArb,
  vm: fc.option(memberIdArb, { nil: null }),
  sha256: sha256Arb,
});

export const fileInfoArb: fc.Arbitrary<FileInfo> = fc.record({
  name: fileNameArb,
  fileId: opaqueIdArb,
  size: byteCountArb,
  sha256: sha256Arb,
  createdAt: isoDateArb,
  chunks: fc.array(chunkInfoArb, { maxLength: 5 }),
});

const vmInfoArb: fc.Arbitrary<VmInfo> = fc.record({
  id: memberIdArb,
  address: fc.string({ maxLength: 40 }),
  cpu: cpuArb,
  memoryFree: byteCountArb,
  memoryEffective: byteCountArb,
  penalty: fc.nat({ max: 1000 }),
  status: fc.constantFrom('alive', 'suspect', 'failed'),
  lastSeen: isoDateArb,
});

const request = { id: opaqueIdArb, from: memberIdArb };

type MessageArbitraries = { [T in MessageType]: fc.Arbitrary<MessageOf<T>> };

export const messageArbitraries: MessageArbitraries = {
  join: fc.record({
    ...request,
    type: fc.constant('join'),
    incarnation: opaqueIdArb,
    address: fc.string({ maxLength: 40 }),
    cpu: cpuArb,
    memoryFree: byteCountArb,
  }),
  'join.ack': fc.record({
    ...request,
    type: fc.constant('join.ack'),
    heartbeatMs: fc.integer({ min: 10, max: 3_600_000 }),
    penalty: fc.nat({ max: 1000 }),
    memoryEffective: byteCountArb,
  }),
  heartbeat: fc.record({
    from: memberIdArb,
    type: fc.constant('heartbeat'),
    incarnation: opaqueIdArb,
    cpu: cpuArb,
    memoryFree: byteCountArb,
  }),
  rejoin: fc.record({ from: memberIdArb, type: fc.constant('rejoin'), reason: shortTextArb }),
  stop: fc.record({
    from: memberIdArb,
    type: fc.constant('stop'),
    incarnation: opaqueIdArb,
    reason: shortTextArb,
  }),
  status: fc.record({
    from: memberIdArb,
    type: fc.constant('status'),
    incarnation: opaqueIdArb,
    online: fc.boolean(),
  }),
  'upload.begin': fc.record({
    ...request,
    type: fc.constant('upload.begin'),
    name: fileNameArb,
    size: byteCountArb,
    overwrite: fc.boolean(),
  }),
  'upload.ready': fc.record({
    ...request,
    type: fc.constant('upload.ready'),
    fileId: opaqueIdArb,
    segmentSize: segmentSizeArb,
    window: windowArb,
    chunks: fc.array(
      fc.record({
        index: chunkIndexArb,
        offset: byteCountArb,
        size: byteCountArb,
        vm: fc.option(memberIdArb, { nil: null }),
      }),
      { maxLength: 5 },
    ),
  }),
  'chunk.expect': fc.record({
    ...request,
    type: fc.constant('chunk.expect'),
    fileId: opaqueIdArb,
    index: chunkIndexArb,
    chunkSize: byteCountArb,
    uploader: memberIdArb,
  }),
  'upload.segment': fc.record({
    ...request,
    type: fc.constant('upload.segment'),
    index: chunkIndexArb,
    offset: byteCountArb,
    crc32: crc32Arb,
  }),
  'upload.ack': fc.record({
    ...request,
    type: fc.constant('upload.ack'),
    index: chunkIndexArb,
    offset: byteCountArb,
  }),
  'upload.end': fc.record(
    {
      ...request,
      type: fc.constant('upload.end'),
      sha256: sha256Arb,
      chunks: fc.array(sha256Arb, { maxLength: 5 }),
    },
    { requiredKeys: ['id', 'from', 'type', 'sha256'] },
  ),
  'upload.abort': fc.record({
    ...request,
    type: fc.constant('upload.abort'),
    reason: shortTextArb,
  }),
  'upload.done': fc.record({ ...request, type: fc.constant('upload.done'), file: fileInfoArb }),
  'chunk.store': fc.record({
    ...request,
    type: fc.constant('chunk.store'),
    fileId: opaqueIdArb,
    index: chunkIndexArb,
    chunkSize: byteCountArb,
    offset: byteCountArb,
    crc32: crc32Arb,
  }),
  'chunk.stored': fc.record(
    {
      ...request,
      type: fc.constant('chunk.stored'),
      fileId: opaqueIdArb,
      index: chunkIndexArb,
      offset: byteCountArb,
      length: byteCountArb,
      sha256: sha256Arb,
    },
    { requiredKeys: ['id', 'from', 'type', 'fileId', 'index', 'offset', 'length'] },
  ),
  'chunk.fetch': fc.record({
    ...request,
    type: fc.constant('chunk.fetch'),
    to: memberIdArb,
    fileId: opaqueIdArb,
    index: chunkIndexArb,
    chunkSize: byteCountArb,
    offset: byteCountArb,
    segmentSize: segmentSizeArb,
    window: windowArb,
  }),
  'chunk.data': fc.record({
    ...request,
    type: fc.constant('chunk.data'),
    index: chunkIndexArb,
    offset: byteCountArb,
    crc32: crc32Arb,
  }),
  'chunk.ack': fc.record({
    ...request,
    type: fc.constant('chunk.ack'),
    index: chunkIndexArb,
    offset: byteCountArb,
  }),
  'chunk.delete': fc.record(
    { ...request, type: fc.constant('chunk.delete'), fileId: opaqueIdArb, index: chunkIndexArb },
    { requiredKeys: ['id', 'from', 'type', 'fileId'] },
  ),
  'chunk.deleted': fc.record({
    ...request,
    type: fc.constant('chunk.deleted'),
    fileId: opaqueIdArb,
  }),
  inventory: fc.record({
    ...request,
    type: fc.constant('inventory'),
    count: fc.nat({ max: 1_000_000 }),
  }),
  'list.request': fc.record(
    {
      ...request,
      type: fc.constant('list.request'),
      name: fileNameArb,
      limit: fc.integer({ min: 1, max: 10_000 }),
      cursor: fc.string({ maxLength: 100 }),
    },
    { requiredKeys: ['id', 'from', 'type'] },
  ),
  'list.response': fc.record(
    {
      ...request,
      type: fc.constant('list.response'),
      files: fc.array(fileInfoArb, { maxLength: 4 }),
      nextCursor: fc.string({ maxLength: 100 }),
    },
    { requiredKeys: ['id', 'from', 'type', 'files'] },
  ),
  'download.request': fc.record(
    {
      ...request,
      type: fc.constant('download.request'),
      name: fileNameArb,
      direct: fc.record({
        fileId: opaqueIdArb,
        vms: fc.array(memberIdArb, { maxLength: 5 }),
      }),
    },
    { requiredKeys: ['id', 'from', 'type', 'name'] },
  ),
  'download.plan': fc.record(
    {
      ...request,
      type: fc.constant('download.plan'),
      file: fileInfoArb,
      sources: fc.array(
        fc.record({
          index: chunkIndexArb,
          source: fc.constantFrom('edge', 'core'),
          vm: fc.option(memberIdArb, { nil: null }),
        }),
        { maxLength: 5 },
      ),
      segmentSize: segmentSizeArb,
      window: windowArb,
      fetchTimeoutMs: fc.integer({ min: 1, max: 3_600_000 }),
      direct: fc.boolean(),
    },
    {
      requiredKeys: [
        'id',
        'from',
        'type',
        'file',
        'sources',
        'segmentSize',
        'window',
        'fetchTimeoutMs',
      ],
    },
  ),
  'chunk.read': fc.record({
    ...request,
    type: fc.constant('chunk.read'),
    fileId: opaqueIdArb,
    index: chunkIndexArb,
    chunkSize: byteCountArb,
    offset: byteCountArb,
    segmentSize: segmentSizeArb,
    window: windowArb,
  }),
  'download.fallback': fc.record({
    ...request,
    type: fc.constant('download.fallback'),
    name: fileNameArb,
    fileId: opaqueIdArb,
    index: chunkIndexArb,
    offset: byteCountArb,
    reason: fc.constantFrom('timeout', 'integrity', 'error'),
  }),
  'download.done': fc.record(
    {
      ...request,
      type: fc.constant('download.done'),
      ok: fc.boolean(),
      reason: shortTextArb,
      edgeBytes: byteCountArb,
      coreBytes: byteCountArb,
    },
    { requiredKeys: ['id', 'from', 'type', 'ok'] },
  ),
  'delete.request': fc.record({
    ...request,
    type: fc.constant('delete.request'),
    name: fileNameArb,
  }),
  'delete.done': fc.record({ ...request, type: fc.constant('delete.done'), name: fileNameArb }),
  'vms.request': fc.record({ ...request, type: fc.constant('vms.request') }),
  'vms.response': fc.record({
    ...request,
    type: fc.constant('vms.response'),
    vms: fc.array(vmInfoArb, { maxLength: 4 }),
  }),
  error: fc.record(
    {
      ...request,
      type: fc.constant('error'),
      code: fc.constantFrom(...errorCode.options),
      message: shortTextArb,
      retryable: fc.boolean(),
      index: chunkIndexArb,
    },
    { requiredKeys: ['from', 'type', 'code', 'message', 'retryable'] },
  ),
};

/** Any valid message of any type. */
export const anyMessageArb = fc
  .constantFrom(...(Object.keys(messageArbitraries) as MessageType[]))
  .chain((type) => messageArbitraries[type] as fc.Arbitrary<MessageOf<MessageType>>);
