import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { type FileInfo, holdersOf } from '../../protocol/messages.ts';
import { openSqlite, type SqliteDatabase, type SqliteDriver } from '../../runtime/sqlite.ts';
import { type ChunkPlacement, checkChunkUpdate, checkUses, fileUse, withChunks } from './memory.ts';
import {
  type Cleanup,
  type CleanupReason,
  MetadataError,
  type MetadataStore,
  type PlacedChunk,
  type VmRecord,
} from './types.ts';

export interface SqliteMetadataOptions {
  /** The database file; its directory must exist. Created when missing. */
  path: string;
  /** Which SQLite: the runtime's own by default (runtime/sqlite.ts). */
  driver?: SqliteDriver;
}

export const DRIVER_NAME = 'sqlite';
/** PRAGMA user_version of the schema below; bump it with a migration. */
export const SCHEMA_VERSION = 3;

// STRICT tables refuse a value of the wrong type instead of storing it.
// TEXT compares with the BINARY collation, i.e. by UTF-8 bytes, which is the
// Unicode code point order the interface promises for names. Files are kept
// in name order (WITHOUT ROWID): a listing reads them in that order, and
// through a rowid table each record was a lookup of its own, 4× slower over
// 100,000 files (schema version 1). `used_at` (epoch ms, touchFiles) is
// beside the record, not in it: listings pass `json` on as it is (version 3).
const FILES_TABLE = (name: string) => `
CREATE TABLE ${name} (
  name TEXT PRIMARY KEY,
  file_id TEXT NOT NULL UNIQUE,
  json TEXT NOT NULL,
  used_at INTEGER
) STRICT, WITHOUT ROWID;`;

const SCHEMA = `${FILES_TABLE('files')}
-- Only chunks that are on a VM: this table exists for chunksOn. One row per
-- VM holding a chunk (each of its replicas, holdersOf).
CREATE TABLE chunks (
  file_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  vm TEXT NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL
) STRICT;
CREATE INDEX chunks_by_vm ON chunks (vm, file_id, idx);
CREATE INDEX chunks_by_file ON chunks (file_id);
CREATE TABLE ledger (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  file_id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  reason TEXT NOT NULL CHECK (reason IN ('upload', 'replaced', 'deleted')),
  since TEXT NOT NULL
) STRICT;
CREATE TABLE vms (
  id TEXT PRIMARY KEY,
  json TEXT NOT NULL
) STRICT;
PRAGMA user_version = ${SCHEMA_VERSION};
`;

/**
 * Metadata in one SQLite file, for a broker that must remember its files
 * across restarts without a Redis server. Opens (and if need be creates) the
 * database at once, so a bad path fails when the broker starts.
 */
export function createSqliteMetadata(options: SqliteMetadataOptions): MetadataStore {
  const path = options.path;
  const db = openDatabase(path);
  let closed = false;

  const statements = {
    getFile: db.query<{ json: string }, [string]>('SELECT json FROM files WHERE name = ?'),
    ownerOf: db.query<{ name: string }, [string]>('SELECT name FROM files WHERE file_id = ?'),
    listFirst: db.query<{ name: string; json: string }, [number]>(
      'SELECT name, json FROM files ORDER BY name LIMIT ?',
    ),
    listAfter: db.query<{ name: string; json: string }, [string, number]>(
      'SELECT name, json FROM files WHERE name > ? ORDER BY name LIMIT ?',
    ),
    chunksOn: db.query<PlacedChunk, [string]>(
      `SELECT files.name AS name, chunks.file_id AS fileId, chunks.idx AS "index",
              chunks.size AS size, chunks.sha256 AS sha256
       FROM chunks JOIN files ON files.file_id = chunks.file_id
       WHERE chunks.vm = ? ORDER BY chunks.file_id, chunks.idx, chunks.rowid`,
    ),
    // A name committed again keeps its used_at.
    putFile: db.query<unknown, [string, string, string]>(
      `INSERT INTO files (name, file_id, json) VALUES (?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET file_id = excluded.file_id, json = excluded.json`,
    ),
    touch: db.query<unknown, [number, string]>('UPDATE files SET used_at = ? WHERE name = ?'),
    lastUsed: db.query<{ name: string; at: number }, []>(
      'SELECT name, used_at AS at FROM files WHERE used_at IS NOT NULL ORDER BY used_at, name',
    ),
    deleteFile: db.query<unknown, [string]>('DELETE FROM files WHERE name = ?'),
    putChunk: db.query<unknown, [string, number, string, number, string]>(
      'INSERT INTO chunks (file_id, idx, vm, size, sha256) VALUES (?, ?, ?, ?, ?)',
    ),
    deleteChunks: db.query<unknown, [string]>('DELETE FROM chunks WHERE file_id = ?'),
    // REPLACE deletes the old row first, so a re-entered fileId gets a new seq:
    // the ledger lists it as entered now.
    enter: db.query<unknown, [string, string, CleanupReason, string]>(
      'INSERT OR REPLACE INTO ledger (file_id, name, reason, since) VALUES (?, ?, ?, ?)',
    ),
    leave: db.query<unknown, [string]>('DELETE FROM ledger WHERE file_id = ?'),
    cleanups: db.query<Cleanup, []>(
      'SELECT file_id AS fileId, name, reason, since FROM ledger ORDER BY seq',
    ),
    putVm: db.query<unknown, [string, string]>(
      `INSERT INTO vms (id, json) VALUES (?, ?)
       ON CONFLICT (id) DO UPDATE SET json = excluded.json`,
    ),
    listVms: db.query<{ json: string }, []>('SELECT json FROM vms ORDER BY id'),
  };

  const enter = (fileId: string, name: string, reason: CleanupReason) =>
    statements.enter.run(fileId, name, reason, new Date().toISOString());

  /** Rows for every VM holding each chunk of `file` (whose old rows are gone). */
  const place = (file: FileInfo) => {
    for (const chunk of file.chunks) {
      // A VM named twice in one chunk's replicas still holds it once.
      for (const vm of new Set(holdersOf(chunk))) {
        statements.putChunk.run(file.fileId, chunk.index, vm, chunk.size, chunk.sha256);
      }
    }
  };

  const commit = db.transaction((file: FileInfo): FileInfo | null => {
    const owner = statements.ownerOf.get(file.fileId)?.name;
    if (owner !== undefined && owner !== file.name) {
      throw new MetadataError(
        DRIVER_NAME,
        `commitFile ${JSON.stringify(file.name)}: fileId ${JSON.stringify(file.fileId)} already belongs to ${JSON.stringify(owner)}; every upload needs its own fileId`,
      );
    }
    const replaced = parseJson<FileInfo>(statements.getFile.get(file.name));
    if (replaced) {
      statements.deleteChunks.run(replaced.fileId);
      if (replaced.fileId !== file.fileId) enter(replaced.fileId, replaced.name, 'replaced');
    }
    statements.putFile.run(file.name, file.fileId, JSON.stringify(file));
    place(file);
    statements.leave.run(file.fileId);
    return replaced;
  });

  const update = db.transaction(
    (name: string, fileId: string, chunks: readonly ChunkPlacement[]): boolean => {
      const file = parseJson<FileInfo>(statements.getFile.get(name));
      if (!file || file.fileId !== fileId) return false;
      const next = withChunks(DRIVER_NAME, file, chunks);
      statements.putFile.run(name, fileId, JSON.stringify(next));
      statements.deleteChunks.run(fileId);
      place(next);
      return true;
    },
  );

  const remove = db.transaction((name: string): FileInfo | null => {
    const removed = parseJson<FileInfo>(statements.getFile.get(name));
    if (!removed) return null;
    statements.deleteChunks.run(removed.fileId);
    statements.deleteFile.run(name);
    enter(removed.fileId, removed.name, 'deleted');
    return removed;
  });

  const touch = db.transaction((uses: [string, number][]) => {
    for (const [name, at] of uses) statements.touch.run(at, name);
  });

  /** Turns SQLite's exceptions into MetadataErrors that say where and what. */
  async function run<T>(action: string, op: () => T): Promise<T> {
    if (closed) throw new MetadataError(DRIVER_NAME, `${action}: the store is closed`);
    try {
      return op();
    } catch (err) {
      if (err instanceof MetadataError) throw err;
      throw new MetadataError(DRIVER_NAME, `${action} in ${path} failed: ${describe(err)}`, {
        cause: err,
      });
    }
  }

  /** A page of records as stored, and the name to go on after. */
  function recordPage(action: string, { limit, after }: { limit: number; after?: string }) {
    if (!(Number.isInteger(limit) && limit >= 1)) {
      throw new MetadataError(
        DRIVER_NAME,
        `${action}: limit must be a whole number ≥ 1, got ${limit}`,
      );
    }
    // One more than asked tells whether there is a next page.
    const rows =
      after === undefined
        ? statements.listFirst.all(limit + 1)
        : statements.listAfter.all(after, limit + 1);
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    return {
      records: page.map((row) => ({ name: row.name, json: row.json })),
      ...(rows.length > limit && last ? { next: last.name } : {}),
    };
  }

  return {
    name: DRIVER_NAME,
    getFile: (name) =>
      run(`getFile ${JSON.stringify(name)}`, () =>
        parseJson<FileInfo>(statements.getFile.get(name)),
      ),
    listFiles: (options) =>
      run('listFiles', () => {
        const { records, next } = recordPage('listFiles', options);
        return {
          files: records.map((record) => JSON.parse(record.json) as FileInfo),
          ...(next !== undefined ? { next } : {}),
        };
      }),
    listFileRecords: (options) =>
      run('listFileRecords', () => recordPage('listFileRecords', options)),
    chunksOn: (vm) => run(`chunksOn ${JSON.stringify(vm)}`, () => statements.chunksOn.all(vm)),
    hasFileId: (fileId) =>
      run(`hasFileId ${JSON.stringify(fileId)}`, () => statements.ownerOf.get(fileId) !== null),
    beginUpload: ({ fileId, name }) =>
      run(`beginUpload ${JSON.stringify(fileId)}`, () => {
        enter(fileId, name, 'upload');
      }),
    commitFile: (file) => run(`commitFile ${JSON.stringify(file.name)}`, () => commit(file)),
    removeFile: (name) => run(`removeFile ${JSON.stringify(name)}`, () => remove(name)),
    updateChunks: (name, fileId, chunks) =>
      run(`updateChunks ${JSON.stringify(name)}`, () => {
        checkChunkUpdate(DRIVER_NAME, name, chunks);
        return update(name, fileId, chunks);
      }),
    touchFiles: (entries) =>
      run('touchFiles', () => {
        touch(checkUses(DRIVER_NAME, entries));
      }),
    lastUsed: () =>
      run('lastUsed', () => statements.lastUsed.all().map((row) => fileUse(row.name, row.at))),
    settle: (fileId) =>
      run(`settle ${JSON.stringify(fileId)}`, () => {
        statements.leave.run(fileId);
      }),
    cleanups: () => run('cleanups', () => statements.cleanups.all()),
    putVm: (record) =>
      run(`putVm ${JSON.stringify(record.id)}`, () => {
        statements.putVm.run(record.id, JSON.stringify(record));
      }),
    listVms: () =>
      run('listVms', () => statements.listVms.all().map((row) => JSON.parse(row.json) as VmRecord)),
    async close() {
      if (closed) return;
      closed = true;
      for (const statement of Object.values(statements)) statement.finalize?.();
      db.close();
    },
  };
}

export default createSqliteMetadata;

/** Opens the database and brings its schema to SCHEMA_VERSION, or says why it cannot. */
function openDatabase(path: string, driver?: SqliteDriver): SqliteDatabase {
  const fail = (reason: string, cause?: unknown): never => {
    throw new MetadataError(DRIVER_NAME, `cannot open ${path}: ${reason}`, { cause });
  };
  if (path === '') fail('the path is empty');
  const directory = dirname(resolve(path));
  if (!existsSync(directory)) fail(`the directory ${directory} does not exist; create it first`);
  if (!statSync(directory).isDirectory()) fail(`${directory} is not a directory`);

  let db: SqliteDatabase;
  try {
    db = openSqlite(path, driver);
  } catch (err) {
    return fail(describe(err), err);
  }
  try {
    // A database that is busy in another process waits a little, not forever.
    db.run('PRAGMA busy_timeout = 5000');
    // WAL: readers never block the writer. FULL, not NORMAL: in WAL mode
    // NORMAL may lose the last commits on a power cut, and a lost commitFile
    // whose `upload` entry survived would have its chunks deleted as an
    // orphan — the user's file gone after "stored". Metadata writes are one
    // per upload or VM change, so the fsync each costs nothing that matters.
    db.run('PRAGMA journal_mode = WAL');
    db.run('PRAGMA synchronous = FULL');
    migrate(db, path);
    return db;
  } catch (err) {
    db.close();
    if (err instanceof MetadataError) throw err;
    return fail(describe(err), err);
  }
}

function migrate(db: SqliteDatabase, path: string) {
  const version = db.query<{ user_version: number }, []>('PRAGMA user_version').get()?.user_version;
  if (version === SCHEMA_VERSION) return;
  if (version !== undefined && version > SCHEMA_VERSION) {
    throw new MetadataError(
      DRIVER_NAME,
      `cannot open ${path}: its schema version is ${version}, newer than ${SCHEMA_VERSION}, the newest this cloudlet knows; upgrade cloudlet to use it`,
    );
  }
  if (version === 1) {
    db.transaction(() => db.run(MIGRATE_FROM_1))();
    return;
  }
  if (version === 2) {
    db.transaction(() => db.run(MIGRATE_FROM_2))();
    return;
  }
  const tables = db
    .query<{ name: string }, []>("SELECT name FROM sqlite_schema WHERE type = 'table'")
    .all();
  if (tables.length > 0) {
    throw new MetadataError(
      DRIVER_NAME,
      `cannot open ${path}: it is a SQLite database with tables (${tables.map((t) => t.name).join(', ')}) but no cloudlet schema version; give the metadata store a file of its own`,
    );
  }
  db.transaction(() => db.run(SCHEMA))();
}

/** Version 1 kept files in a rowid table; the records move over unchanged (with no used_at). */
const MIGRATE_FROM_1 = `${FILES_TABLE('files_by_name')}
INSERT INTO files_by_name (name, file_id, json) SELECT name, file_id, json FROM files;
DROP TABLE files;
ALTER TABLE files_by_name RENAME TO files;
PRAGMA user_version = ${SCHEMA_VERSION};
`;

/** Version 2 had no last-use times: every file starts without one. */
const MIGRATE_FROM_2 = `
ALTER TABLE files ADD COLUMN used_at INTEGER;
PRAGMA user_version = ${SCHEMA_VERSION};
`;

function parseJson<T>(row: { json: string } | null): T | null {
  return row === null ? null : (JSON.parse(row.json) as T);
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && !err.message.includes(code)
    ? `${err.message} (${code})`
    : err.message;
}
