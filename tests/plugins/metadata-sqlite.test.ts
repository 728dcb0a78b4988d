import { Database } from 'bun:sqlite';
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createMetadataStore } from '../../plugins/metadata/index.ts';
import { createSqliteMetadata, SCHEMA_VERSION } from '../../plugins/metadata/sqlite.ts';
import { MetadataError, type MetadataStore } from '../../plugins/metadata/types.ts';
import type { SqliteDriver } from '../../runtime/sqlite.ts';
import { testMetadataStore, testRefusals } from './metadata-conformance.ts';
import { makeFile, makeVm } from './metadata-fixtures.ts';

const scratch = mkdtempSync(join(tmpdir(), 'cloudlet-metadata-sqlite-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let created = 0;
const paths = new WeakMap<MetadataStore, string>();

function open(path = join(scratch, `store-${++created}.db`), driver?: SqliteDriver): MetadataStore {
  const store = createSqliteMetadata({ path, ...(driver ? { driver } : {}) });
  paths.set(store, path);
  return store;
}

// The same suite through node:sqlite, the driver the store uses on Deno.
describe('through node:sqlite (as on Deno)', () => {
  testMetadataStore({
    name: 'sqlite',
    create: async () => open(undefined, 'node'),
    reopen: async (store) => {
      const path = paths.get(store) as string;
      await store.close();
      return open(path, 'node');
    },
  });
});

/** The error `create` throws, or a failure when it does not throw. */
function openingError(path: string): MetadataError {
  try {
    createSqliteMetadata({ path }).close();
  } catch (err) {
    expect(err).toBeInstanceOf(MetadataError);
    return err as MetadataError;
  }
  throw new Error(`opening ${path} succeeded`);
}

testMetadataStore({
  name: 'sqlite',
  create: async () => open(),
  reopen: async (store) => {
    const path = paths.get(store) as string;
    await store.close();
    return open(path);
  },
  additionalTests: (store) => {
    test('a closed store refuses operations with a MetadataError', async () => {
      const closing = open();
      await closing.close();
      await closing.close(); // twice is fine
      const error = await closing.getFile('x').catch((err) => err);
      expect(error).toBeInstanceOf(MetadataError);
      expect(error.message).toBe('sqlite metadata store: getFile "x": the store is closed');
    });

    testRefusals(store);

    test('uses WAL with synchronous FULL and the current schema version', async () => {
      const path = join(scratch, 'pragmas.db');
      await open(path).close();
      const db = new Database(path, { readonly: true });
      try {
        expect(db.query('PRAGMA journal_mode').get()).toEqual({ journal_mode: 'wal' });
        expect(db.query('PRAGMA user_version').get()).toEqual({ user_version: SCHEMA_VERSION });
      } finally {
        db.close();
      }
    });

    test('a second store on the same file sees what the first committed', async () => {
      const path = join(scratch, 'shared.db');
      const first = open(path);
      const second = open(path);
      try {
        await first.commitFile(makeFile('x', 'f1'));
        await first.putVm(makeVm('vm-1'));
        expect((await second.getFile('x'))?.fileId).toBe('f1');
        expect(await second.listVms()).toEqual([makeVm('vm-1')]);
      } finally {
        await first.close();
        await second.close();
      }
    });
  },
});

describe('opening a sqlite metadata store', () => {
  test('a missing directory is a clear error, not created', () => {
    const path = join(scratch, 'no-such-dir', 'meta.db');
    const error = openingError(path);
    expect(error.message).toBe(
      `sqlite metadata store: cannot open ${path}: the directory ${join(scratch, 'no-such-dir')} does not exist; create it first`,
    );
  });

  test('a path that is a directory or under a file is a clear error', () => {
    const dir = join(scratch, 'a-directory');
    mkdirSync(dir);
    expect(openingError(dir).message).toStartWith(
      `sqlite metadata store: cannot open ${dir}: unable to open database file`,
    );
    const file = join(scratch, 'a-file');
    writeFileSync(file, 'x');
    expect(openingError(join(file, 'meta.db')).message).toContain(`${file} is not a directory`);
  });

  test('a file that is not a SQLite database is a clear error and is left alone', async () => {
    const path = join(scratch, 'not-a-database.db');
    const text = 'these are not the bytes you are looking for\n'.repeat(200);
    writeFileSync(path, text);
    const error = openingError(path);
    expect(error.message).toStartWith(
      `sqlite metadata store: cannot open ${path}: file is not a database`,
    );
    expect(await Bun.file(path).text()).toBe(text);
  });

  test('a database from a newer cloudlet is refused, untouched', () => {
    const path = join(scratch, 'newer.db');
    const db = new Database(path);
    db.run(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    expect(openingError(path).message).toBe(
      `sqlite metadata store: cannot open ${path}: its schema version is ${SCHEMA_VERSION + 1}, newer than ${SCHEMA_VERSION}, the newest this cloudlet knows; upgrade cloudlet to use it`,
    );
    const again = new Database(path, { readonly: true });
    expect(again.query('PRAGMA user_version').get()).toEqual({ user_version: SCHEMA_VERSION + 1 });
    again.close();
  });

  test('another application’s database is refused, not mixed into', () => {
    const path = join(scratch, 'foreign.db');
    const db = new Database(path);
    db.run('CREATE TABLE files (path TEXT)');
    db.close();
    expect(openingError(path).message).toContain(
      'it is a SQLite database with tables (files) but no cloudlet schema version',
    );
  });

  test('a version 1 database (files in a rowid table) is migrated, nothing lost', async () => {
    const path = join(scratch, 'version-1.db');
    const store = open(path);
    const files = [
      makeFile('b.txt', 'f2', [[0, ['vm-1', 'vm-2']]]),
      makeFile('a.txt', 'f1', [
        [0, 'vm-1'],
        [1, null],
      ]),
      makeFile('c.txt', 'f3', [[0, 'vm-2']]),
    ];
    for (const file of files) await store.commitFile(file);
    await store.putVm(makeVm('vm-1'));
    await store.close();
    // Put the files back in version 1's table, as that version created it.
    const db = new Database(path);
    db.transaction(() =>
      db.run(`
        CREATE TABLE files_v1 (name TEXT PRIMARY KEY, file_id TEXT NOT NULL UNIQUE, json TEXT NOT NULL) STRICT;
        INSERT INTO files_v1 SELECT name, file_id, json FROM files;
        DROP TABLE files;
        ALTER TABLE files_v1 RENAME TO files;
        PRAGMA user_version = 1;`),
    )();
    db.close();

    const migrated = open(path);
    try {
      const listed = await migrated.listFiles({ limit: 10 });
      expect(listed.files.map((file) => file.name)).toEqual(['a.txt', 'b.txt', 'c.txt']);
      expect(listed.files).toEqual([...files].sort((x, y) => x.name.localeCompare(y.name)));
      expect(await migrated.hasFileId('f2')).toBe(true);
      expect((await migrated.chunksOn('vm-2')).map((chunk) => chunk.name).sort()).toEqual([
        'b.txt',
        'c.txt',
      ]);
      expect(await migrated.listVms()).toEqual([makeVm('vm-1')]);
      await migrated.commitFile(makeFile('a.txt', 'f4'));
      expect((await migrated.getFile('a.txt'))?.fileId).toBe('f4');
    } finally {
      await migrated.close();
    }
    const check = new Database(path, { readonly: true });
    try {
      expect(check.query('PRAGMA user_version').get()).toEqual({ user_version: SCHEMA_VERSION });
      const { sql } = check
        .query<{ sql: string }, []>("SELECT sql FROM sqlite_schema WHERE name = 'files'")
        .get() as { sql: string };
      expect(sql).toContain('WITHOUT ROWID');
    } finally {
      check.close();
    }
  });

  test('an empty file becomes a new store', async () => {
    const path = join(scratch, 'empty.db');
    writeFileSync(path, '');
    const store = open(path);
    await store.commitFile(makeFile('x', 'f1'));
    await store.close();
    const reopened = open(path);
    expect((await reopened.getFile('x'))?.fileId).toBe('f1');
    await reopened.close();
  });
});

describe('createMetadataStore with sqlite:PATH', () => {
  test('takes an absolute path', async () => {
    const path = join(scratch, 'spec-absolute.db');
    const store = createMetadataStore(`sqlite:${path}`);
    expect(store.name).toBe('sqlite');
    await store.commitFile(makeFile('x', 'f1'));
    await store.close();
    const reopened = createSqliteMetadata({ path });
    expect((await reopened.getFile('x'))?.fileId).toBe('f1');
    await reopened.close();
  });

  test('takes a path relative to the working directory', async () => {
    const path = join(scratch, 'spec-relative.db');
    const store = createMetadataStore(`sqlite:${relative(process.cwd(), path)}`);
    await store.putVm(makeVm('vm-1'));
    await store.close();
    const reopened = createSqliteMetadata({ path });
    expect(await reopened.listVms()).toEqual([makeVm('vm-1')]);
    await reopened.close();
  });

  test('without a path is an error that says what works', () => {
    expect(() => createMetadataStore('sqlite:')).toThrow(
      'sqlite metadata store: "sqlite:" names no file; use memory, redis://host:port[/db] or sqlite:PATH',
    );
  });
});
