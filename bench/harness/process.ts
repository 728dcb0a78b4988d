// A child process under a test's control: started and probed until ready, then
// stopped, killed, paused or restarted on demand with the same command line.
// Used for mosquitto and redis-server (services.ts) and for our own node
// processes in e2e tests.
import { createConnection, createServer } from 'node:net';
import { constants } from 'node:os';
import type { Subprocess } from 'bun';

export type Readiness =
  /** Ready once the current run prints a matching line on stdout or stderr. */
  | { line: RegExp | ((line: string) => boolean) }
  /** Ready once this TCP port accepts a connection. */
  | { port: number; host?: string }
  /** Ready once this resolves true; it is called again until then, so keep each call short. */
  | { probe: () => Promise<boolean> };

export interface ProcessSpec {
  /** Names the process in errors, e.g. `redis-server`. */
  name: string;
  /** Path of the executable, or a name found on PATH. */
  command: string;
  args?: string[];
  /** Added to (and overriding) this process's environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Without it the process counts as ready as soon as it is spawned. */
  ready?: Readiness;
  /** How long start and restart wait for readiness; default 10 s. */
  readyTimeoutMs?: number;
}

export interface ManagedProcess {
  readonly name: string;
  /** Undefined while not running. */
  readonly pid: number | undefined;
  /** True from spawn until exit, paused or not. */
  readonly running: boolean;
  /** SIGTERM, then wait for exit (SIGKILL if it ignores SIGTERM for 5 s). */
  stop(): Promise<void>;
  /** SIGKILL, then wait for exit: a crash, with no chance to clean up. */
  kill(): Promise<void>;
  /** SIGSTOP: the process stays alive and keeps its sockets but answers nothing. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Start the same command again (stopping it first if running) and wait until ready. */
  restart(): Promise<void>;
  /** The last lines of stdout and stderr, across restarts. */
  output(): string;
  /** Same as stop(), for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** A start that failed; `output` holds what the process printed, for CI logs. */
export class ProcessStartError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(output ? `${message}\n--- last output ---\n${output}\n--- end of output ---` : message);
    this.name = 'ProcessStartError';
  }
}

const OUTPUT_LINES = 200;
const DEFAULT_READY_TIMEOUT_MS = 10_000;
const READY_POLL_MS = 25;
const STOP_GRACE_MS = 5_000;
// Output still in the pipes when a process exits; capped because a grandchild
// holding the pipe open would otherwise keep us waiting for ever.
const DRAIN_MS = 1_000;

export async function startProcess(spec: ProcessSpec): Promise<ManagedProcess> {
  const lines: string[] = [];
  const record = (line: string) => {
    lines.push(line);
    if (lines.length > OUTPUT_LINES) lines.shift();
  };
  let run: Run | undefined;

  const isRunning = () => run !== undefined && run.exitCode === undefined;
  const requireRunning = (action: string): Run => {
    if (!run || !isRunning()) throw new Error(`cannot ${action} ${spec.name}: it is not running`);
    return run;
  };

  const start = async () => {
    run = spawnRun(spec, record);
    try {
      await waitUntilReady(spec, run);
    } catch (error) {
      if (run.exitCode === undefined) run.proc.kill('SIGKILL');
      await run.proc.exited;
      await run.drained;
      const reason = error instanceof Error ? error.message : String(error);
      throw new ProcessStartError(reason, lines.join('\n'));
    }
  };

  const stop = async () => {
    if (!run || !isRunning()) return;
    const { proc } = run;
    proc.kill('SIGTERM');
    // A stopped process only acts on SIGTERM once it runs again.
    if (run.paused) proc.kill('SIGCONT');
    if (!(await settlesWithin(proc.exited, STOP_GRACE_MS))) proc.kill('SIGKILL');
    await proc.exited;
    await run.drained;
  };

  await start();
  return {
    name: spec.name,
    get pid() {
      return isRunning() ? run?.proc.pid : undefined;
    },
    get running() {
      return isRunning();
    },
    stop,
    async kill() {
      if (!run || !isRunning()) return;
      run.proc.kill('SIGKILL');
      await run.proc.exited;
      await run.drained;
    },
    pause() {
      const current = requireRunning('pause');
      current.proc.kill('SIGSTOP');
      current.paused = true;
    },
    resume() {
      const current = requireRunning('resume');
      current.proc.kill('SIGCONT');
      current.paused = false;
    },
    async restart() {
      await stop();
      await start();
    },
    output: () => lines.join('\n'),
    [Symbol.asyncDispose]: stop,
  };
}

interface Run {
  proc: Subprocess<'ignore', 'pipe', 'pipe'>;
  /** Undefined until the process has exited. */
  exitCode: number | null | undefined;
  paused: boolean;
  /** True once this run printed a line matching a `line` readiness. */
  sawReadyLine: boolean;
  /** Settles when both pipes are read to the end, or after DRAIN_MS. */
  drained: Promise<void>;
}

function spawnRun(spec: ProcessSpec, record: (line: string) => void): Run {
  const matches = lineMatcher(spec.ready);
  let proc: Subprocess<'ignore', 'pipe', 'pipe'>;
  try {
    proc = Bun.spawn({
      cmd: [spec.command, ...(spec.args ?? [])],
      env: { ...process.env, ...spec.env },
      cwd: spec.cwd,
      stdin: 'ignore',
      stdout: 'pipe',
      stderr: 'pipe',
    });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ProcessStartError(`could not spawn ${spec.name} (${spec.command}): ${reason}`, '');
  }
  trackChild(proc);
  const run: Run = {
    proc,
    exitCode: undefined,
    paused: false,
    sawReadyLine: false,
    drained: Promise.resolve(),
  };
  const onLine = (line: string) => {
    record(line);
    if (matches?.(line)) run.sawReadyLine = true;
  };
  const piped = Promise.allSettled([
    readLines(proc.stdout, onLine),
    readLines(proc.stderr, onLine),
  ]);
  run.drained = proc.exited.then(() => settlesWithin(piped, DRAIN_MS)).then(() => undefined);
  proc.exited.then((code) => {
    run.exitCode = code;
  });
  return run;
}

async function waitUntilReady(spec: ProcessSpec, run: Run): Promise<void> {
  const timeoutMs = spec.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const exited = run.proc.exited;
  for (;;) {
    if (run.exitCode !== undefined) {
      await run.drained;
      const how = run.proc.signalCode ? `signal ${run.proc.signalCode}` : `code ${run.exitCode}`;
      throw new Error(`${spec.name} exited with ${how} before it was ready`);
    }
    if (await isReady(spec.ready, run)) return;
    if (Date.now() >= deadline) {
      throw new Error(`${spec.name} was not ready within ${timeoutMs} ms (pid ${run.proc.pid})`);
    }
    await Promise.race([Bun.sleep(READY_POLL_MS), exited]);
  }
}

async function isReady(ready: Readiness | undefined, run: Run): Promise<boolean> {
  if (!ready) return true;
  if ('line' in ready) return run.sawReadyLine;
  if ('port' in ready) return canConnect(ready.port, { host: ready.host });
  return ready.probe();
}

function lineMatcher(ready: Readiness | undefined) {
  if (!ready || !('line' in ready)) return undefined;
  const { line } = ready;
  return typeof line === 'function' ? line : (text: string) => line.test(text);
}

async function readLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void) {
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const part of parts) onLine(part.replace(/\r$/, ''));
  }
  pending += decoder.decode();
  if (pending) onLine(pending);
}

/** Whether the promise settles within the time; the timer never outlives the answer. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: Timer | undefined;
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      timedOut,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// Children still alive when this process ends would outlive the test run and
// hold their ports, so every exit path SIGKILLs them: 'exit' covers normal
// ends, process.exit() and uncaught errors; signals do not emit 'exit', so they
// are turned into process.exit() with the shell's 128 + signal code.
const liveChildren = new Set<Subprocess>();
let exitHookInstalled = false;

function trackChild(proc: Subprocess) {
  liveChildren.add(proc);
  proc.exited.then(() => liveChildren.delete(proc));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveChildren) child.kill('SIGKILL');
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => process.exit(128 + constants.signals[signal]));
  }
}

/** A port the OS just handed out on 127.0.0.1; free now, though another process may take it. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') {
    throw new Error(`expected a TCP address from the OS, got ${String(address)}`);
  }
  return address.port;
}

export interface TcpOptions {
  /** Default 127.0.0.1. */
  host?: string | undefined;
  /** Default 1 s. */
  timeoutMs?: number;
}

/** Whether a TCP connection to the port opens within the timeout. */
export async function canConnect(port: number, options: TcpOptions = {}): Promise<boolean> {
  return (await tcpExchange(port, undefined, () => true, options)) !== undefined;
}

/**
 * Connects, writes `request` (if any) and collects the reply until `isComplete`
 * accepts it. Undefined when the connection fails, closes or times out first.
 * `farewell` is written as the connection closes, for protocols that want a
 * polite goodbye.
 */
export function tcpExchange(
  port: number,
  request: Uint8Array | undefined,
  isComplete: (reply: Buffer) => boolean,
  options: TcpOptions & { farewell?: Uint8Array } = {},
): Promise<Buffer | undefined> {
  const { host = '127.0.0.1', timeoutMs = 1_000, farewell } = options;
  return new Promise((resolve) => {
    const socket = createConnection({ port, host });
    let reply = Buffer.alloc(0);
    let done = false;
    const finish = (result: Buffer | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (result && farewell) socket.end(farewell);
      else socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    socket.once('connect', () => {
      if (request) socket.write(request);
      else finish(reply);
    });
    socket.on('data', (data) => {
      reply = Buffer.concat([reply, Buffer.from(data)]);
      if (isComplete(reply)) finish(reply);
    });
    // `on`, not `once`: a server may reset the socket while the farewell is written.
    socket.on('error', () => finish(undefined));
    socket.on('close', () => finish(undefined));
  });
}
