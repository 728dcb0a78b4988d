// Runs a command to its end and returns what it printed, its exit code and
// its own peak RSS (polled from /proc: resourceUsage() after exit reports
// the largest of all children so far, not this one's). A peak that could not
// be measured is NaN, never 0, so that a bound on it fails instead of
// passing on nothing.
import { readFileSync } from 'node:fs';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /**
   * The process's peak resident set, in MiB, as last seen; NaN when it was
   * never measured (/proc unreadable, or it ended before the first look).
   */
  peakRssMiB: number;
  /** From spawn to exit. */
  wallMs: number;
  /** From its last byte of output (stdout or stderr) to its exit; 0 with no output. */
  lingerMs: number;
}

export async function runCommand(
  argv: string[],
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<RunResult> {
  const spawned = performance.now();
  const child = Bun.spawn(argv, {
    ...(options.cwd ? { cwd: options.cwd } : {}),
    env: { ...process.env, ...options.env },
    stdout: 'pipe',
    stderr: 'pipe',
  });
  let peak = 0;
  let unmeasured = false;
  const poll = setInterval(() => {
    const now = peakRssMiB(child.pid);
    if (Number.isNaN(now)) unmeasured = true;
    else peak = Math.max(peak, now);
  }, 50);
  try {
    let lastOutput = 0;
    const read = async (stream: ReadableStream<Uint8Array>) => {
      const chunks: Uint8Array[] = [];
      for await (const chunk of stream) {
        chunks.push(chunk);
        lastOutput = performance.now();
      }
      return Buffer.concat(chunks).toString('utf8');
    };
    let exitedAt = 0;
    const [stdout, stderr, code] = await Promise.all([
      read(child.stdout),
      read(child.stderr),
      child.exited.then((exitCode) => {
        exitedAt = performance.now();
        return exitCode;
      }),
    ]);
    return {
      code,
      stdout,
      stderr,
      peakRssMiB: unmeasured || peak === 0 ? Number.NaN : peak,
      wallMs: exitedAt - spawned,
      lingerMs: lastOutput > 0 ? Math.max(0, exitedAt - lastOutput) : 0,
    };
  } finally {
    clearInterval(poll);
  }
}

/**
 * A process's peak RSS in MiB (Linux VmHWM); 0 once it has exited (gone, or
 * a zombie not reaped yet). NaN when it cannot be measured: no pid (a
 * process not running), or no /proc status to read for a process that is
 * alive — a bound on it then fails rather than passes on a 0.
 */
export function peakRssMiB(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return isAlive(pid) ? Number.NaN : 0;
  }
  const kB = /^VmHWM:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kB !== undefined) return Number(kB) / 1024;
  return /^State:\s+Z/m.test(status) ? 0 : Number.NaN;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, under another user; ESRCH: there is no such process.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
