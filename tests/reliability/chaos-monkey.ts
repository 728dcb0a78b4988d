/**
 * The chaos actor: every so often it kills -9 a random VM process and
 * restarts it a little later, never leaving more than `maxDown` VMs down at
 * once. Its schedule comes from its own seeded generator. Given `inFlight`,
 * it aims: when some VMs take part in a transfer in flight, the victim is
 * drawn from those, and every kill records what it landed on.
 */
import type { Random } from './chaos-random.ts';

export interface ChaosTarget {
  readonly id: string;
  /** SIGKILL: no goodbye, the VM's chunk store (its redis-server) stays as it is. */
  kill(): Promise<void>;
  /** Starts the VM again and resolves once the broker holds it alive. */
  revive(): Promise<void>;
}

export interface ChaosOptions {
  targets: readonly ChaosTarget[];
  random: Random;
  maxDown: number;
  /** Pause between two kills, in ms: uniform in [min, max). */
  pauseMs: readonly [number, number];
  /** How long a killed VM stays down before its restart begins, in ms. */
  downMs: readonly [number, number];
  /**
   * The transfers in flight that VM `id` takes part in, looked at for every
   * VM up just before a kill (empty: killing it now hits nothing in flight).
   */
  inFlight?(id: string): Promise<readonly string[]>;
  /** Hears what the chaos actor did, for the test's log. */
  onEvent?(event: string): void;
}

export interface Chaos {
  readonly kills: number;
  /** Kills that landed on a VM taking part in a transfer in flight (see `inFlight`). */
  readonly killsInFlight: number;
  readonly restarts: number;
  /** VMs killed and not alive again yet. */
  readonly down: ReadonlySet<string>;
  /** Restarts that failed (a VM that would not come back), with why. */
  readonly failures: readonly string[];
  /** No more kills; resolves once every killed VM is alive again. */
  stop(): Promise<void>;
}

export function startChaos(options: ChaosOptions): Chaos {
  const { targets, random, maxDown } = options;
  const down = new Set<string>();
  const failures: string[] = [];
  const reviving = new Set<Promise<void>>();
  let kills = 0;
  let killsInFlight = 0;
  let restarts = 0;
  let stopped = false;
  let wake: () => void = () => {};
  const stopping = new Promise<void>((resolve) => {
    wake = resolve;
  });
  const pause = (ms: number) => Promise.race([Bun.sleep(ms), stopping]);
  const event = (text: string) => options.onEvent?.(text);

  const revive = async (target: ChaosTarget) => {
    // The last attempt's error is the one to report.
    for (let attempt = 1; ; attempt++) {
      try {
        await target.revive();
        restarts++;
        down.delete(target.id);
        event(`${target.id} restarted`);
        return;
      } catch (error) {
        event(`${target.id} restart attempt ${attempt} failed: ${(error as Error).message}`);
        if (attempt === 3) {
          failures.push(`${target.id}: ${(error as Error).message}`);
          return;
        }
      }
    }
  };

  const loop = (async () => {
    for (;;) {
      await pause(random.between(...options.pauseMs));
      if (stopped) return;
      // Drawn whether or not a kill happens, so the schedule stays the seed's.
      const choice = random.next();
      const downFor = random.between(...options.downMs);
      const up = targets.filter((target) => !down.has(target.id));
      if (down.size >= maxDown || up.length === 0) continue;
      const candidates: Array<{ target: ChaosTarget; hit: readonly string[] }> = [];
      for (const target of up)
        candidates.push({ target, hit: (await options.inFlight?.(target.id)) ?? [] });
      const busy = candidates.filter(({ hit }) => hit.length > 0);
      const pool = busy.length > 0 ? busy : candidates;
      const { target, hit } = pool[Math.floor(choice * pool.length)] as (typeof pool)[number];
      down.add(target.id);
      await target.kill();
      kills++;
      if (hit.length > 0) killsInFlight++;
      event(
        `${target.id} killed -9 (down for ${Math.round(downFor)} ms)` +
          (hit.length > 0 ? ` in the middle of ${hit.join(', ')}` : ', nothing of it in flight'),
      );
      const restart = Bun.sleep(downFor).then(() => revive(target));
      reviving.add(restart);
      void restart.finally(() => reviving.delete(restart));
    }
  })();

  return {
    get kills() {
      return kills;
    },
    get killsInFlight() {
      return killsInFlight;
    },
    get restarts() {
      return restarts;
    },
    down,
    failures,
    async stop() {
      stopped = true;
      wake();
      await loop;
      while (reviving.size > 0) await Promise.all(reviving);
    },
  };
}
