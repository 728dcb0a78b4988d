/**
 * Metadata in Redis (`--metadata redis://…`): file records, the VM table,
 * the upload ledger and last uses under the cloudlet's topic root, so that
 * several brokers can share them; with a lease (a standby broker), every
 * write is checked against it in the same script.
 *
 * Kept whole: one backend of the metadata contract (types.ts), which its
 * conformance suite checks as a whole.
 */
import type { FileInfo } from '../../protocol/messages.ts';
import {
  type Connected,
  createRedisConnection,
  leaseKey,
  type RedisClient,
  type RedisConnectionOptions,
} from '../redis-connection.ts';
import { byCodePoint, checkChunkUpdate, checkUses, fileUse, withChunks } from './memory.ts';
import {
  type Cleanup,
  type CleanupReason,
  MetadataError,
  type MetadataStore,
  type PlacedChunk,
  type VmRecord,
} from './types.ts';

export interface RedisMetadataOptions extends RedisConnectionOptions {
  /** Keeps this broker's keys apart from others sharing the server. */
  namespace?: string;
  /**
   * Fencing (a standby broker, issue 9): every write checks, in the same
   * script, that the lease of the namespace (plugins/lease/redis.ts) is
   * still held by `token`; otherwise it changes nothing, `onFenced` hears
   * it and the write fails. A broker that lost the lease cannot write, even
   * before it notices.
   */
  fence?: { token: string; onFenced?: (reason: string) => void };
}

export const DRIVER_NAME = 'redis';
const DEFAULT_NAMESPACE = 'cloudlet';

// Every script gets the same KEYS, in this order, then the lease (KEYS[10]).
const KEY_KINDS = [
  'files', // hash: name → FileInfo JSON
  'names', // sorted set, all scores 0: names in byte order, for paging
  'placements', // sorted set, all scores 0: one member per chunk on a VM (see PRELUDE)
  'file-ids', // hash: fileId → name, for hasFileId
  'ledger', // hash: fileId → {name, reason, since} JSON
  'ledger-order', // sorted set: fileId scored by when it entered the ledger
  'ledger-seq', // counter behind those scores
  'vms', // hash: VM id → VmRecord JSON
  'used', // sorted set: name scored by when it was last used (epoch ms), apart from its record
] as const;
type KeyKind = (typeof KEY_KINDS)[number];

// A placement is `vm NUL fileId NUL index NUL size NUL sha256 NUL name`, the
// index zero-padded: byte order is then (vm, fileId, index), so one VM's
// chunks are one ZRANGEBYLEX and come out in the order chunksOn promises.
// A chunk has one per VM holding it: each of its `replicas`, or its `vm` in a
// record without them (holdersOf). Scripts derive placements from the stored
// JSON, so the members removed with a record are exactly the ones added with
// it. Scripts never re-encode a record: cjson would write an empty array as
// `{}` and numbers with 14 digits, so records are built in TypeScript.
const PRELUDE = `
local files, names, placements, fileIds = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local vms, used, lease = KEYS[8], KEYS[9], KEYS[10]
local ledger, ledgerOrder, ledgerSeq = KEYS[5], KEYS[6], KEYS[7]
local NUL = string.char(0)
local function placementsOf(record)
  local members = {}
  for _, chunk in ipairs(record.chunks) do
    local holders = {}
    if type(chunk.replicas) == 'table' then holders = chunk.replicas
    elseif type(chunk.vm) == 'string' then holders = {chunk.vm} end
    for _, vm in ipairs(holders) do
      members[#members + 1] = table.concat({
        vm, record.fileId, string.format('%016d', chunk.index),
        string.format('%d', chunk.size), chunk.sha256, record.name,
      }, NUL)
    end
  end
  return members
end
local function place(record)
  for _, member in ipairs(placementsOf(record)) do redis.call('ZADD', placements, 0, member) end
end
local function unplace(record)
  for _, member in ipairs(placementsOf(record)) do redis.call('ZREM', placements, member) end
end
local function enter(fileId, entry)
  redis.call('HSET', ledger, fileId, entry)
  redis.call('ZADD', ledgerOrder, redis.call('INCR', ledgerSeq), fileId)
end
local function leave(fileId)
  redis.call('HDEL', ledger, fileId)
  redis.call('ZREM', ledgerOrder, fileId)
end
`;

/**
 * First in every script that writes: the last ARGV is the fencing token
 * (empty when the store is not fenced), and a lease held by another token,
 * or by nobody, refuses the write before anything changes.
 */
const FENCE = `
local fenceToken = ARGV[#ARGV]
if fenceToken ~= '' then
  local holder = redis.call('GET', lease)
  if holder ~= fenceToken then
    return redis.error_reply('FENCED ' .. (holder and (holder .. ' holds the lease') or 'nobody holds the lease'))
  end
end
`;
const FENCED_PREFIX = 'FENCED ';

/** ARGV: file JSON, ledger entry for a replaced record. Returns {'taken', owner} or {'ok'[, old JSON]}. */
const COMMIT_SCRIPT = `${PRELUDE}${FENCE}
local file = cjson.decode(ARGV[1])
local owner = redis.call('HGET', fileIds, file.fileId)
if owner and owner ~= file.name then return {'taken', owner} end
local old = redis.call('HGET', files, file.name)
if old then
  local replaced = cjson.decode(old)
  unplace(replaced)
  if replaced.fileId ~= file.fileId then
    redis.call('HDEL', fileIds, replaced.fileId)
    enter(replaced.fileId, ARGV[2])
  end
end
redis.call('HSET', files, file.name, ARGV[1])
redis.call('ZADD', names, 0, file.name)
place(file)
redis.call('HSET', fileIds, file.fileId, file.name)
leave(file.fileId)
if old then return {'ok', old} end
return {'ok'}`;

/** ARGV: name, ledger entry. Returns the removed record's JSON, or nil. */
const REMOVE_SCRIPT = `${PRELUDE}${FENCE}
local old = redis.call('HGET', files, ARGV[1])
if not old then return false end
local record = cjson.decode(old)
unplace(record)
redis.call('HDEL', files, ARGV[1])
redis.call('ZREM', names, ARGV[1])
redis.call('HDEL', fileIds, record.fileId)
redis.call('ZREM', used, ARGV[1])
enter(record.fileId, ARGV[2])
return old`;

/**
 * ARGV: name, fileId, the record JSON read, the record JSON to write.
 * Compare-and-set: replaces the record only if it is still the one read.
 * Returns 'ok', 'gone' (the name no longer holds fileId) or 'changed' (it
 * does, but the record changed since it was read: read it again).
 */
const UPDATE_SCRIPT = `${PRELUDE}${FENCE}
local current = redis.call('HGET', files, ARGV[1])
if current ~= ARGV[3] then
  if redis.call('HGET', fileIds, ARGV[2]) == ARGV[1] then return 'changed' end
  return 'gone'
end
unplace(cjson.decode(current))
redis.call('HSET', files, ARGV[1], ARGV[4])
place(cjson.decode(ARGV[4]))
return 'ok'`;
/** Reads of a record that keeps changing before updateChunks gives up. */
const UPDATE_ATTEMPTS = 20;

/** ARGV: fileId, ledger entry. */
const ENTER_SCRIPT = `${PRELUDE}${FENCE}
enter(ARGV[1], ARGV[2])
return 1`;

/** ARGV: fileId. */
const SETTLE_SCRIPT = `${PRELUDE}${FENCE}
leave(ARGV[1])
return 1`;

/** ARGV: name, epoch ms, name, epoch ms, …; a name with no record is skipped. */
const TOUCH_SCRIPT = `${PRELUDE}${FENCE}
for i = 1, #ARGV - 1, 2 do
  if redis.call('HEXISTS', files, ARGV[i]) == 1 then
    redis.call('ZADD', used, ARGV[i + 1], ARGV[i])
  end
end
return 1`;

/** ARGV: VM id, its row JSON. */
const PUT_VM_SCRIPT = `${PRELUDE}${FENCE}
redis.call('HSET', vms, ARGV[1], ARGV[2])
return 1`;

/**
 * Metadata in Redis under `<namespace>:metadata:<kind>` (kinds in KEY_KINDS).
 * Every change that touches more than one key runs as one Lua script, which
 * Redis executes atomically. Connects on first use; while the server is
 * unreachable every operation fails within `timeoutMs`, and node-redis keeps
 * reconnecting in the background until it is back.
 */
export function createRedisMetadata(options: RedisMetadataOptions): MetadataStore {
  const { run, bounded, close } = createRedisConnection(DRIVER_NAME, MetadataError, options);
  // Encoded so that no namespace reaches into another's keys: the first `:`
  // always ends the namespace.
  const prefix = `${encodeURIComponent(options.namespace ?? DEFAULT_NAMESPACE)}:metadata:`;
  const key = (kind: KeyKind) => prefix + kind;
  const scriptKeys = [...KEY_KINDS.map(key), leaseKey(options.namespace ?? DEFAULT_NAMESPACE)];
  const fenceToken = options.fence?.token ?? '';

  async function script(client: RedisClient, source: string, args: string[]): Promise<unknown> {
    try {
      return await bounded(
        client.eval(source, { keys: scriptKeys, arguments: [...args, fenceToken] }),
      );
    } catch (error) {
      const message = (error as Error)?.message ?? '';
      if (!message.startsWith(FENCED_PREFIX)) throw error;
      const reason = message.slice(FENCED_PREFIX.length);
      options.fence?.onFenced?.(reason);
      throw new MetadataError(
        DRIVER_NAME,
        `refused a write: this broker no longer holds the lease (${reason})`,
      );
    }
  }

  /** A page of records as stored, and the name to go on after. */
  async function recordPage(
    { client, binary }: Pick<Connected, 'client' | 'binary'>,
    { limit, after }: { limit: number; after?: string },
  ) {
    checkLimit(limit);
    const min = after === undefined ? '-' : `(${after}`;
    // One more than asked tells whether there is a next page. Names, then
    // their records: two commands, not one script, which cost Redis 4× the
    // time (building Lua tables) for 100,000 files. A file removed between
    // the two is skipped, as if the page had been read after the removal; a
    // commit writes name and record in one step, so none is seen half made.
    const names = await bounded(
      client.zRangeByLex(key('names'), min, '+', { LIMIT: { offset: 0, count: limit + 1 } }),
    );
    const page = names.slice(0, limit);
    // As bytes: they go on into a list page as they are.
    const found = page.length === 0 ? [] : await bounded(binary.hmGet(key('files'), page));
    const records: { name: string; json: Buffer }[] = [];
    page.forEach((name, i) => {
      const json = found[i];
      if (Buffer.isBuffer(json)) records.push({ name, json });
    });
    const last = page.at(-1);
    return {
      records,
      ...(names.length > limit && last !== undefined ? { next: last } : {}),
    };
  }

  return {
    name: DRIVER_NAME,
    getFile: (name) =>
      run(`getFile ${JSON.stringify(name)}`, async ({ client }) =>
        parseJson<FileInfo>(await bounded(client.hGet(key('files'), name))),
      ),
    listFiles: (options) =>
      run('listFiles', async (connected) => {
        const { records, next } = await recordPage(connected, options);
        return {
          files: records.map((record) => JSON.parse(record.json.toString('utf8')) as FileInfo),
          ...(next !== undefined ? { next } : {}),
        };
      }),
    listFileRecords: (options) =>
      run('listFileRecords', (connected) => recordPage(connected, options)),
    chunksOn: (vm) =>
      run(`chunksOn ${JSON.stringify(vm)}`, async ({ client }) => {
        const start = `${vm}\0`;
        const members = await bounded(
          client.zRangeByLex(key('placements'), `[${start}`, `(${vm}\u0001`),
        );
        return members.map((member) => parsePlacement(member.slice(start.length)));
      }),
    hasFileId: (fileId) =>
      run(
        `hasFileId ${JSON.stringify(fileId)}`,
        async ({ client }) => (await bounded(client.hExists(key('file-ids'), fileId))) === 1,
      ),
    beginUpload: ({ fileId, name }) =>
      run(`beginUpload ${JSON.stringify(fileId)}`, async ({ client }) => {
        checkWellFormed({ name, fileId });
        await script(client, ENTER_SCRIPT, [fileId, ledgerEntry(name, 'upload')]);
      }),
    commitFile: (file) =>
      run(`commitFile ${JSON.stringify(file.name)}`, async ({ client }) => {
        checkWellFormed(file);
        const reply = (await script(client, COMMIT_SCRIPT, [
          JSON.stringify(file),
          ledgerEntry(file.name, 'replaced'),
        ])) as [string, string?];
        if (reply[0] === 'taken') throw fileIdTaken(file, reply[1] ?? '');
        return parseJson<FileInfo>(reply[1] ?? null);
      }),
    removeFile: (name) =>
      run(`removeFile ${JSON.stringify(name)}`, async ({ client }) => {
        const old = await script(client, REMOVE_SCRIPT, [name, ledgerEntry(name, 'deleted')]);
        return parseJson<FileInfo>(old as string | null);
      }),
    updateChunks: (name, fileId, chunks) =>
      run(`updateChunks ${JSON.stringify(name)}`, async ({ client }) => {
        checkChunkUpdate(DRIVER_NAME, name, chunks);
        // No record can have a name or fileId that is not valid Unicode.
        if (!name.isWellFormed() || !fileId.isWellFormed()) return false;
        for (let attempt = 0; attempt < UPDATE_ATTEMPTS; attempt++) {
          const old = await bounded(client.hGet(key('files'), name));
          const file = parseJson<FileInfo>(old);
          if (old === null || file?.fileId !== fileId) return false;
          const next = JSON.stringify(withChunks(DRIVER_NAME, file, chunks));
          const reply = await script(client, UPDATE_SCRIPT, [name, fileId, old, next]);
          if (reply === 'ok') return true;
          if (reply === 'gone') return false;
        }
        throw new MetadataError(
          DRIVER_NAME,
          `updateChunks ${JSON.stringify(name)}: the record changed under it ${UPDATE_ATTEMPTS} times in a row; try again`,
        );
      }),
    touchFiles: (entries) =>
      run('touchFiles', async ({ client }) => {
        // No record can have a name that is not valid Unicode.
        const uses = checkUses(DRIVER_NAME, entries).filter(([name]) => name.isWellFormed());
        if (uses.length === 0) return;
        // Fenced like every write: a broker that lost the lease (frozen, then
        // thawed) does not reorder the new one's LRU with its old uses.
        await script(
          client,
          TOUCH_SCRIPT,
          uses.flatMap(([name, at]) => [name, String(at)]),
        );
      }),
    lastUsed: () =>
      run('lastUsed', async ({ client }) => {
        // Equal scores come in member (byte) order: ties by name.
        const uses = await bounded(client.zRangeWithScores(key('used'), 0, -1));
        return uses.map(({ value, score }) => fileUse(value, score));
      }),
    settle: (fileId) =>
      run(`settle ${JSON.stringify(fileId)}`, async ({ client }) => {
        await script(client, SETTLE_SCRIPT, [fileId]);
      }),
    cleanups: () =>
      run('cleanups', async ({ client }) => {
        const [order, entries] = (await bounded(
          client.multi().zRange(key('ledger-order'), 0, -1).hGetAll(key('ledger')).exec(),
        )) as unknown as [string[], Record<string, string>];
        return order.flatMap((fileId): Cleanup[] => {
          const entry = entries[fileId];
          return entry === undefined ? [] : [{ fileId, ...JSON.parse(entry) }];
        });
      }),
    putVm: (record) =>
      run(`putVm ${JSON.stringify(record.id)}`, async ({ client }) => {
        await script(client, PUT_VM_SCRIPT, [record.id, JSON.stringify(record)]);
      }),
    listVms: () =>
      run('listVms', async ({ client }) => {
        const records = await bounded(client.hVals(key('vms')));
        return records
          .map((json) => JSON.parse(json) as VmRecord)
          .sort((a, b) => byCodePoint(a.id, b.id));
      }),
    close,
  };
}

export default createRedisMetadata;

/** What a ledger hash field holds: the Cleanup without its fileId (the field). */
function ledgerEntry(name: string, reason: CleanupReason): string {
  return JSON.stringify({ name, reason, since: new Date().toISOString() });
}

function parseJson<T>(json: string | null): T | null {
  return json === null ? null : (JSON.parse(json) as T);
}

/** `fileId NUL index NUL size NUL sha256 NUL name`: a placement without its VM. */
function parsePlacement(rest: string): PlacedChunk {
  const [fileId = '', index = '', size = '', sha256 = '', ...name] = rest.split('\0');
  return { name: name.join('\0'), fileId, index: Number(index), size: Number(size), sha256 };
}

function checkLimit(limit: number) {
  if (!(Number.isInteger(limit) && limit >= 1)) {
    throw new MetadataError(
      DRIVER_NAME,
      `listFiles: limit must be a whole number ≥ 1, got ${limit}`,
    );
  }
}

/**
 * Scripts read names and fileIds back out of JSON, where a lone surrogate is
 * an escape Lua cannot decode; the key the client sends would differ anyway.
 */
function checkWellFormed({ name, fileId }: { name: string; fileId: string }) {
  for (const [field, text] of [
    ['name', name],
    ['fileId', fileId],
  ]) {
    if (!text?.isWellFormed()) {
      throw new MetadataError(
        DRIVER_NAME,
        `${field} ${JSON.stringify(text)} is not valid Unicode (a lone surrogate)`,
      );
    }
  }
}

function fileIdTaken(file: FileInfo, owner: string): MetadataError {
  return new MetadataError(
    DRIVER_NAME,
    `commitFile ${JSON.stringify(file.name)}: fileId ${JSON.stringify(file.fileId)} already belongs to ${JSON.stringify(owner)}; every upload needs its own fileId`,
  );
}
