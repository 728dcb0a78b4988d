/**
 * SQLite, as the metadata store uses it, on either runtime: Bun's own
 * `bun:sqlite` where it is there (the faster, and what the store was built
 * on), else `node:sqlite` (Deno 2; Bun has it too, which is how the tests
 * check this side). One small interface: statements that get one row (null
 * when there is none), all rows, or run; SQL run as it is; transactions;
 * close.
 */
import { createRequire } from 'node:module';
import { DatabaseSync } from 'node:sqlite';
import { runtimeName } from './index.ts';

export interface SqliteStatement<Row, Params extends unknown[]> {
  get(...params: Params): Row | null;
  all(...params: Params): Row[];
  run(...params: Params): unknown;
  /** Frees the statement (bun:sqlite; node:sqlite frees with the database). */
  finalize?(): void;
}

export interface SqliteDatabase {
  query<Row, Params extends unknown[]>(sql: string): SqliteStatement<Row, Params>;
  /** Runs one or more statements, with no result. */
  run(sql: string): void;
  /** `work` inside BEGIN … COMMIT, rolled back if it throws. */
  transaction<Args extends unknown[], Result>(
    work: (...args: Args) => Result,
  ): (...args: Args) => Result;
  close(): void;
}

export type SqliteDriver = 'bun' | 'node';

/** Opens (creating when missing) the database at `path`, read-write. */
export function openSqlite(path: string, driver: SqliteDriver = defaultDriver()): SqliteDatabase {
  if (driver === 'bun') {
    const { Database } = createRequire(import.meta.url)(
      'bun:sqlite',
    ) as typeof import('bun:sqlite');
    // Its API is this interface (positional parameters, `strict` names).
    return new Database(path, {
      create: true,
      readwrite: true,
      strict: true,
    }) as unknown as SqliteDatabase;
  }
  return nodeSqlite(path);
}

function defaultDriver(): SqliteDriver {
  return runtimeName === 'bun' ? 'bun' : 'node';
}

function nodeSqlite(path: string): SqliteDatabase {
  const db = new DatabaseSync(path);
  const statements = new Map<string, ReturnType<DatabaseSync['prepare']>>();
  const prepared = (sql: string) => {
    let statement = statements.get(sql);
    if (!statement) {
      statement = db.prepare(sql);
      statements.set(sql, statement);
    }
    return statement;
  };
  let depth = 0;
  return {
    query<Row, Params extends unknown[]>(sql: string): SqliteStatement<Row, Params> {
      const statement = prepared(sql);
      type Bound = Parameters<typeof statement.get>;
      const bind = (params: unknown[]) => params as unknown as Bound;
      return {
        get: (...params) => (statement.get(...bind(params)) as Row | undefined) ?? null,
        all: (...params) => statement.all(...bind(params)) as Row[],
        run: (...params) => statement.run(...bind(params)),
      };
    },
    run(sql) {
      db.exec(sql);
    },
    transaction(work) {
      return (...args) => {
        // Nested: a savepoint inside the outer transaction, as bun:sqlite does.
        const name = `t${depth}`;
        db.exec(depth === 0 ? 'BEGIN' : `SAVEPOINT ${name}`);
        depth++;
        try {
          const result = work(...args);
          depth--;
          db.exec(depth === 0 ? 'COMMIT' : `RELEASE ${name}`);
          return result;
        } catch (error) {
          depth--;
          db.exec(depth === 0 ? 'ROLLBACK' : `ROLLBACK TO ${name}; RELEASE ${name}`);
          throw error;
        }
      };
    },
    close() {
      statements.clear();
      db.close();
    },
  };
}
