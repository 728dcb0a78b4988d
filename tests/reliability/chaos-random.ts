/**
 * Seeded randomness for the chaos test: one seed decides the operations,
 * their sizes and bytes, and the chaos actor's schedule, so a failing run can
 * be replayed (`CLOUDLET_CHAOS_SEED`).
 */

export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** A whole number in [0, n). */
  int(n: number): number;
  /** Uniform in [min, max). */
  between(min: number, max: number): number;
  /** A new generator, independent of this one from here on. */
  fork(): Random;
}

/** mulberry32: small, fast, and good enough to pick operations. */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const random: Random = {
    next,
    int: (n) => Math.floor(next() * n),
    between: (min, max) => min + next() * (max - min),
    fork: () => seededRandom(Math.floor(next() * 2 ** 32)),
  };
  return random;
}

/** A size whose logarithm is uniform in [log min, log max]: as many 1–8 KiB files as 1–8 MiB ones. */
export function logUniformSize(random: Random, min: number, max: number): number {
  return Math.round(Math.exp(random.between(Math.log(min), Math.log(max))));
}

/** `size` bytes that only `seed` makes (xorshift32), so a replay uploads the same files. */
export function seededBytes(seed: number, size: number): Buffer {
  const words = new Uint32Array(Math.ceil(size / 4));
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return Buffer.from(words.buffer, 0, size);
}
