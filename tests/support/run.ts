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
}

export async function runCommand(
  argv: string[],
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<RunResult> {
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
    const [stdout, stderr, code] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ]);
    return { code, stdout, stderr, peakRssMiB: peak };
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
