/**
 * The broker's data directory: where, with no flags, it keeps its metadata
 * (SQLite, `metadata.db`) and its core cloud (`core/`), so that a broker
 * stopped (or killed) and started again with the same command has every
 * file back. One broker at a time per directory: a lock file says which.
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { isProcessAlive } from '../plugins/pid.ts';

/** `$CLOUDLET_DATA_DIR` is read by the flag; this is what is left: XDG's data home. */
export function defaultDataDir(env: Record<string, string | undefined> = process.env): string {
  const base = env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local', 'share');
  return join(base, 'cloudlet');
}

/** The stores a broker uses when `--metadata` and `--core` are not given. */
export function dataDirStores(dir: string) {
  const root = resolve(dir);
  return { metadata: `sqlite:${join(root, 'metadata.db')}`, core: `fs:${join(root, 'core')}` };
}

export interface DataDirLock {
  readonly dir: string;
  release(): void;
}

/**
 * Creates `dir` (mode 0700) and takes its lock, `broker.pid`. A lock whose
 * process is gone (a broker killed with -9) is taken over; one whose process
 * lives is refused with its pid.
 */
export function lockDataDir(dir: string): DataDirLock {
  const root = resolve(dir);
  try {
    mkdirSync(root, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new Error(
      `cannot create the data directory ${root}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  const path = join(root, 'broker.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return {
        dir: root,
        release: () => {
          if (ownerOf(path) === process.pid) rmSync(path, { force: true });
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new Error(
          `cannot lock the data directory ${root}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
        );
      }
      const owner = ownerOf(path);
      if (owner !== null && owner !== process.pid && isProcessAlive(owner)) {
        throw new Error(
          `another broker (pid ${owner}) uses the data directory ${root}; stop it, or give this one its own --data-dir`,
        );
      }
      // Left by a broker that died: take it over.
      rmSync(path, { force: true });
    }
  }
  throw new Error(`cannot lock the data directory ${root}: another process keeps taking it`);
}

function ownerOf(path: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
