/**
 * The chaos test's workload: seeded put/get/rm operations run by a few
 * workers at once against a model of what is committed (name → bytes of the
 * last committed version). A name is touched by one worker at a time, so the
 * model stays exact while transfers overlap.
 */
import { createHash } from 'node:crypto';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import type { Member } from '../../actors/member/member.ts';
import { CloudletError } from '../../machines/shared.ts';
import { logUniformSize, type Random, seededBytes } from './chaos-random.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
/** A get that fails retryably is tried again this many times at most (by default). */
const GET_RETRIES = 2;
/** The same for a remove. */
const RM_RETRIES = 3;

export type OperationKind = 'put' | 'get' | 'rm';

/**
 * One planned operation. Which name it touches is settled when a worker
 * takes it, from what is committed and free then: `pick` chooses among those.
 */
export interface Intent {
  index: number;
  kind: OperationKind;
  /** A put: replace a committed file rather than add a name. */
  overwrite: boolean;
  pick: number;
  size: number;
  contentSeed: number;
}

/** The last committed version of a name. */
export interface Committed {
  bytes: Buffer;
  sha256: string;
  fileId: string;
}

export interface Tally {
  /** Operations run to their end, whatever the outcome. */
  operations: number;
  put: {
    committed: number;
    new: number;
    overwrites: number;
    /** Failed retryably, by error code (the model kept the previous version). */
    failed: Record<string, number>;
    /**
     * Failed retryably, yet committed whole: the broker died between its
     * commit and its answer (only where `unacknowledgedCommits` allows it).
     */
    unacknowledged: number;
  };
  get: { ok: number; retries: number; chunksFromCore: number };
  rm: { ok: number; retries: number };
  bytesUploaded: number;
}

/** `count` operations: 45% puts (a third of those overwrites), 35% gets, 20% removes. */
export function planOperations(random: Random, count: number): Intent[] {
  return Array.from({ length: count }, (_, index) => {
    const draw = random.next();
    return {
      index,
      kind: draw < 0.45 ? 'put' : draw < 0.8 ? 'get' : 'rm',
      overwrite: random.next() < 1 / 3,
      pick: random.int(1 << 30),
      size: logUniformSize(random, KiB, 8 * MiB),
      contentSeed: random.int(2 ** 32),
    };
  });
}

export interface Workload {
  readonly model: ReadonlyMap<string, Committed>;
  readonly tally: Tally;
  /** Broken promises found so far: a non-retryable failure, a wrong byte. */
  readonly problems: readonly string[];
  /** The operations running now: the name each touches, and what it does to it. */
  readonly running: ReadonlyMap<string, OperationKind>;
  /** Runs the operations; stops taking new ones at the first problem. */
  run(workers: number): Promise<void>;
}

export function createWorkload(options: {
  member: Member;
  intents: readonly Intent[];
  /** Hears one line per operation. */
  journal(line: string): void;
  /** Retries of a get and of a remove that failed retryably. */
  retries?: { get: number; rm: number };
  /**
   * A put that failed retryably may show the new version, whole (its bytes'
   * sha256): when the broker itself dies, the commit can land and its answer
   * not. Otherwise that is a problem: the failed put must leave no trace.
   */
  unacknowledgedCommits?: boolean;
}): Workload {
  const { member, intents, journal } = options;
  const retries = options.retries ?? { get: GET_RETRIES, rm: RM_RETRIES };
  const model = new Map<string, Committed>();
  const busy = new Map<string, OperationKind>();
  const problems: string[] = [];
  const tally: Tally = {
    operations: 0,
    put: { committed: 0, new: 0, overwrites: 0, failed: {}, unacknowledged: 0 },
    get: { ok: 0, retries: 0, chunksFromCore: 0 },
    rm: { ok: 0, retries: 0 },
    bytesUploaded: 0,
  };
  let names = 0;
  let taken = 0;

  const problem = (intent: Intent, text: string) => {
    problems.push(`operation #${intent.index}: ${text}`);
    journal(`#${intent.index} PROBLEM ${text}`);
  };

  /** The operation as it will run: a get or rm with nothing to touch becomes a new put. */
  const settle = (intent: Intent): { kind: OperationKind; name: string } => {
    const free = [...model.keys()].filter((name) => !busy.has(name)).sort();
    const chosen = free.length > 0 ? free[intent.pick % free.length] : undefined;
    if (intent.kind !== 'put' && chosen !== undefined) return { kind: intent.kind, name: chosen };
    if (intent.kind === 'put' && intent.overwrite && chosen !== undefined)
      return { kind: 'put', name: chosen };
    names++;
    return { kind: 'put', name: `f-${String(names).padStart(3, '0')}.bin` };
  };

  /** The record of `name` now, or null; one retryable failure is tried again. */
  const statOrNull = async (name: string) => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await member.stat(name);
      } catch (error) {
        const { code, retryable } = failureOf(error);
        if (code === 'not-found') return null;
        if (!retryable || attempt > 0) throw error;
      }
    }
  };

  const put = async (intent: Intent, name: string) => {
    const bytes = seededBytes(intent.contentSeed, intent.size);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const previous = model.get(name);
    try {
      const file = await member.put(bufferSource(bytes), name, {
        overwrite: previous !== undefined,
      });
      if (file.size !== bytes.byteLength || file.sha256 !== sha256)
        problem(intent, `put ${name} committed ${file.size} bytes, sha256 ${file.sha256}`);
      model.set(name, { bytes, sha256, fileId: file.fileId });
      tally.put.committed++;
      tally.bytesUploaded += bytes.byteLength;
      if (previous) tally.put.overwrites++;
      else tally.put.new++;
      return `committed as ${file.fileId} on ${file.chunks.map((chunk) => chunk.vm).join(',')}`;
    } catch (error) {
      const { code, message, retryable } = failureOf(error);
      if (!retryable) {
        problem(intent, `put ${name} failed for good: ${code}: ${message}`);
        return `failed: ${code}`;
      }
      tally.put.failed[code] = (tally.put.failed[code] ?? 0) + 1;
      // Nothing of the failed upload may show: the name is absent, or still the old version.
      const now = await statOrNull(name);
      if (
        options.unacknowledgedCommits &&
        now &&
        now.fileId !== previous?.fileId &&
        now.sha256 === sha256 &&
        now.size === bytes.byteLength
      ) {
        model.set(name, { bytes, sha256, fileId: now.fileId });
        tally.put.unacknowledged++;
        return `failed retryably (${code}: ${message}), yet committed whole as ${now.fileId}`;
      }
      if (now?.fileId !== previous?.fileId)
        problem(
          intent,
          `put ${name} failed (${code}: ${message}) yet the name now shows ${now ? `${now.fileId} (sha256 ${now.sha256})` : 'nothing'}, not ${previous ? previous.fileId : 'nothing'}`,
        );
      return `failed retryably: ${code}: ${message}`;
    }
  };

  const get = async (intent: Intent, name: string) => {
    const expected = model.get(name) as Committed;
    for (let attempt = 0; ; attempt++) {
      const sink = memorySink();
      try {
        const got = await member.get(name, sink);
        const bytes = sink.bytes();
        if (!bytes.equals(expected.bytes)) {
          problem(
            intent,
            `get ${name} returned ${bytes.byteLength} bytes (sha256 ${createHash('sha256').update(bytes).digest('hex')}) that are not the committed ${expected.bytes.byteLength} (${expected.sha256})`,
          );
        }
        const fromCore = got.chunks.filter((chunk) => chunk.source === 'core');
        tally.get.ok++;
        tally.get.chunksFromCore += fromCore.length;
        return `ok, ${fromCore.length}/${got.chunks.length} chunks from the core${attempt > 0 ? ` after ${attempt} retries` : ''}`;
      } catch (error) {
        const { code, message, retryable } = failureOf(error);
        if (retryable && attempt < retries.get) {
          tally.get.retries++;
          journal(`#${intent.index} get ${name} failed retryably (${code}: ${message}); again`);
          continue;
        }
        problem(intent, `get ${name} failed (attempt ${attempt + 1}): ${code}: ${message}`);
        return `failed: ${code}`;
      }
    }
  };

  const rm = async (intent: Intent, name: string) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await member.remove(name);
      } catch (error) {
        const { code, message, retryable } = failureOf(error);
        if (retryable && attempt < retries.rm) {
          tally.rm.retries++;
          journal(`#${intent.index} rm ${name} failed retryably (${code}: ${message}); again`);
          continue;
        }
        // An attempt that failed retryably may have removed it all the same.
        if (!(code === 'not-found' && attempt > 0)) {
          problem(intent, `rm ${name} failed (attempt ${attempt + 1}): ${code}: ${message}`);
          return `failed: ${code}`;
        }
      }
      model.delete(name);
      tally.rm.ok++;
      const after = await statOrNull(name);
      if (after) problem(intent, `rm ${name} succeeded, yet it still shows ${after.fileId}`);
      return 'removed';
    }
  };

  const worker = async (number: number) => {
    while (problems.length === 0 && taken < intents.length) {
      const intent = intents[taken++] as Intent;
      const { kind, name } = settle(intent);
      const began = performance.now();
      busy.set(name, kind);
      let outcome: string;
      try {
        if (kind === 'put') outcome = await put(intent, name);
        else if (kind === 'get') outcome = await get(intent, name);
        else outcome = await rm(intent, name);
      } catch (error) {
        problem(intent, `${kind} ${name} threw ${(error as Error).stack ?? String(error)}`);
        outcome = 'threw';
      } finally {
        busy.delete(name);
      }
      tally.operations++;
      const size = kind === 'put' ? ` ${(intent.size / KiB).toFixed(0)} KiB` : '';
      const ms = Math.round(performance.now() - began);
      journal(`#${intent.index} w${number} ${kind} ${name}${size}: ${outcome} (${ms} ms)`);
    }
  };

  return {
    model,
    tally,
    problems,
    running: busy,
    async run(workers) {
      await Promise.all(Array.from({ length: workers }, (_, number) => worker(number + 1)));
    },
  };
}

function failureOf(error: unknown): { code: string; message: string; retryable: boolean } {
  if (error instanceof CloudletError)
    return { code: error.code, message: error.message, retryable: error.retryable };
  return { code: 'thrown', message: (error as Error)?.message ?? String(error), retryable: false };
}

/**
 * What the cloudlet lists against what the model says is committed
 * ([name, fileId] each, by name), and the names whose download differs from
 * the committed bytes.
 */
export async function checkAgainstModel(member: Member, model: ReadonlyMap<string, Committed>) {
  const files = await member.listAll();
  const listed = files.map((file) => [file.name, file.fileId]);
  const committed = [...model.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, { fileId }]) => [name, fileId]);
  const different: string[] = [];
  for (const file of files) {
    const sink = memorySink();
    await member.get(file.name, sink);
    const expected = model.get(file.name)?.bytes;
    if (!expected || !sink.bytes().equals(expected)) different.push(file.name);
  }
  return { listed, committed, different };
}
