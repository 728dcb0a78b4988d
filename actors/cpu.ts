/**
 * CPU time of this thread: what a placement itself costs. The process's
 * (cpuUsage) also counts the collector's and the I/O threads' work done
 * meanwhile (bench:scale at 3 VMs: 0.15–0.17 ms by the process in earlier
 * runs, 0.04 ms by this thread; at 1,000 VMs about the same either way,
 * 1.3–1.6 ms: there the work is the placement's own).
 */
export const threadCpu: (since?: NodeJS.CpuUsage) => NodeJS.CpuUsage =
  typeof process.threadCpuUsage === 'function'
    ? (since) => process.threadCpuUsage(since)
    : (since) => process.cpuUsage(since);
