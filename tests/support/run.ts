// Runs a command to its end and returns what it printed, its exit code and
// its own peak RSS (polled from /proc: resourceUsage() after exit reports
// the largest of all children so far, not this one's).
import { readFileSync } from 'node:fs';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The process's peak resident set, in MiB, as last seen. */
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
  const poll = setInterval(() => {
    peak = Math.max(peak, peakRssMiB(child.pid));
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
      peakRssMiB: peak,
      wallMs: exitedAt - spawned,
      lingerMs: lastOutput > 0 ? Math.max(0, exitedAt - lastOutput) : 0,
    };
  } finally {
    clearInterval(poll);
  }
}

/** A process's peak RSS in MiB (Linux VmHWM); 0 once it is gone. */
export function peakRssMiB(pid: number | undefined): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}
