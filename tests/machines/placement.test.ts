import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import {
  chunksFor,
  effectiveMemory,
  missingReplicas,
  planPlacement,
} from '../../machines/placement.ts';

const MiB = 1024 * 1024;

describe('planPlacement (§V.D step 3)', () => {
  test("the paper's §VI set-up: 3 MiB over 300/200/100 MiB VMs, split 2", () => {
    const plan = planPlacement(
      [
        { id: 'vm-c', memoryEffective: 100 * MiB },
        { id: 'vm-a', memoryEffective: 300 * MiB },
        { id: 'vm-b', memoryEffective: 200 * MiB },
      ],
      3 * MiB,
      2,
    );
    expect(plan).toEqual([
      { index: 0, offset: 0, size: 1_887_437, vm: 'vm-a', replicas: ['vm-a'] },
      { index: 1, offset: 1_887_437, size: 1_258_291, vm: 'vm-b', replicas: ['vm-b'] },
    ]);
  });

  test('fewer candidates than split: all of them', () => {
    const plan = planPlacement([{ id: 'a', memoryEffective: 1000 }], 100, 3);
    expect(plan).toEqual([{ index: 0, offset: 0, size: 100, vm: 'a', replicas: ['a'] }]);
  });

  test('no candidate: the core only, one chunk', () => {
    const coreOnly = [{ index: 0, offset: 0, size: 42, vm: null, replicas: [] }];
    expect(planPlacement([], 42, 2)).toEqual(coreOnly);
    expect(planPlacement([{ id: 'a', memoryEffective: 0 }], 42, 2)).toEqual(coreOnly);
  });

  test('ties are broken by id, whatever the input order', () => {
    const vms = [
      { id: 'vm-2', memoryEffective: 100 },
      { id: 'vm-1', memoryEffective: 100 },
      { id: 'vm-3', memoryEffective: 100 },
    ];
    const expected = planPlacement(vms, 10, 2);
    expect(expected.map((chunk) => chunk.vm)).toEqual(['vm-1', 'vm-2']);
    expect(expected.map((chunk) => chunk.size)).toEqual([5, 5]);
    expect(planPlacement([...vms].reverse(), 10, 2)).toEqual(expected);
    // An odd byte goes to the first of the tied VMs.
    expect(planPlacement(vms, 11, 2).map((chunk) => chunk.size)).toEqual([6, 5]);
  });

  test('tiny and empty files', () => {
    const vms = [
      { id: 'a', memoryEffective: 300 },
      { id: 'b', memoryEffective: 200 },
    ];
    expect(planPlacement(vms, 0, 2)).toEqual([
      { index: 0, offset: 0, size: 0, vm: 'a', replicas: ['a'] },
    ]);
    expect(planPlacement(vms, 1, 2)).toEqual([
      { index: 0, offset: 0, size: 1, vm: 'a', replicas: ['a'] },
    ]);
  });

  test('a file bigger than the VMs hold: what fits nowhere stays in the core only', () => {
    const vms = [
      { id: 'a', memoryEffective: 30 },
      { id: 'b', memoryEffective: 20 },
    ];
    const plan = planPlacement(vms, 60, 2);
    expect(plan.map((chunk) => chunk.size)).toEqual([36, 24]);
    // 36 fits on neither; 24 does not fit on b, but on a.
    expect(plan.map((chunk) => chunk.replicas)).toEqual([[], ['a']]);
    expect(planPlacement(vms, 200, 2).every((chunk) => chunk.vm === null)).toBe(true);
  });

  test('properties: contiguous, exact sum, proportional within one byte, deterministic', () => {
    const vm = fc.record({
      id: fc.stringMatching(/^vm-[a-z0-9]{1,6}$/),
      memoryEffective: fc.integer({ min: 0, max: 2 ** 40 }),
    });
    fc.assert(
      fc.property(
        fc.uniqueArray(vm, { selector: (v) => v.id, maxLength: 12 }),
        fc.integer({ min: 0, max: 2 ** 42 }),
        fc.integer({ min: 1, max: 8 }),
        (vms, wanted, split) => {
          // The paper's case: the file fits in the chosen VMs' memory.
          const top = vms
            .map((v) => v.memoryEffective)
            .sort((a, b) => b - a)
            .slice(0, split)
            .reduce((sum, m) => sum + m, 0);
          const size = Math.min(wanted, top);
          const plan = planPlacement(vms, size, split);
          expect(plan.length).toBeGreaterThanOrEqual(1);
          expect(plan.length).toBeLessThanOrEqual(split);
          let offset = 0;
          for (const [index, chunk] of plan.entries()) {
            expect(chunk.index).toBe(index);
            expect(chunk.offset).toBe(offset);
            offset += chunk.size;
          }
          expect(offset).toBe(size);
          const chosen = plan.filter((chunk) => chunk.vm !== null);
          const memory = new Map(vms.map((v) => [v.id, v.memoryEffective]));
          const total = chosen.reduce((sum, chunk) => sum + (memory.get(chunk.vm ?? '') ?? 0), 0);
          for (const chunk of chosen) {
            const ideal = (size * (memory.get(chunk.vm ?? '') ?? 0)) / total;
            expect(Math.abs(chunk.size - ideal)).toBeLessThanOrEqual(1.000001);
          }
          // Nobody left out has more memory than someone chosen.
          const least = Math.min(...chosen.map((chunk) => memory.get(chunk.vm ?? '') ?? 0));
          const chosenIds = new Set(chosen.map((chunk) => chunk.vm));
          const outside = vms.filter((v) => !chosenIds.has(v.id) && v.memoryEffective > 0);
          if (chosen.length === Math.min(split, vms.filter((v) => v.memoryEffective > 0).length)) {
            for (const v of outside) expect(v.memoryEffective).toBeLessThanOrEqual(least);
          }
          expect(planPlacement([...vms].reverse(), size, split)).toEqual(plan);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('ranking only the best candidates', () => {
  test('gives the plan a full ranking gives, for any table, split and r', () => {
    // Few distinct memories and ids, so ties are common.
    const vm = fc.record({
      id: fc.stringMatching(/^vm-[a-d0-9]{1,2}$/),
      memoryEffective: fc.oneof(
        fc.constantFrom(0, 100, 200, 300),
        fc.integer({ min: 0, max: 2 ** 30 }),
      ),
    });
    fc.assert(
      fc.property(
        fc.uniqueArray(vm, { selector: (v) => v.id, maxLength: 40 }),
        fc.integer({ min: 0, max: 2 ** 31 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 4 }),
        (vms, size, split, replicas) => {
          expect(planPlacement(vms, size, split, replicas)).toEqual(
            planPlacement(vms, size, split, replicas, Number.POSITIVE_INFINITY),
          );
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe('replicas (beyond the paper)', () => {
  const vms = [
    { id: 'a', memoryEffective: 300 },
    { id: 'b', memoryEffective: 200 },
    { id: 'c', memoryEffective: 100 },
  ];

  test('r = 2, split 2: each chunk also on the VM with the most memory left', () => {
    const plan = planPlacement(vms, 100, 2, 2);
    expect(plan).toEqual([
      { index: 0, offset: 0, size: 60, vm: 'a', replicas: ['a', 'b'] },
      { index: 1, offset: 60, size: 40, vm: 'b', replicas: ['b', 'a'] },
    ]);
  });

  test('r above the VM count: as many replicas as there are VMs', () => {
    const plan = planPlacement(vms, 90, 3, 5);
    for (const chunk of plan) expect([...chunk.replicas].sort()).toEqual(['a', 'b', 'c']);
  });

  test('a copy that fits nowhere is left out; missingReplicas counts it', () => {
    const small = [
      { id: 'a', memoryEffective: 100 },
      { id: 'b', memoryEffective: 50 },
    ];
    const plan = planPlacement(small, 120, 2, 2);
    expect(plan.map((chunk) => chunk.replicas)).toEqual([['a'], ['b']]);
    expect(missingReplicas(plan, 2, () => 2)).toBe(2);
    expect(missingReplicas(plan, 2, () => 1)).toBe(0);
  });

  test('properties: no VM over its memory, distinct replicas, at most r, deterministic', () => {
    const vm = fc.record({
      id: fc.stringMatching(/^vm-[a-z0-9]{1,6}$/),
      memoryEffective: fc.integer({ min: 0, max: 2 ** 30 }),
    });
    fc.assert(
      fc.property(
        fc.uniqueArray(vm, { selector: (v) => v.id, maxLength: 10 }),
        fc.integer({ min: 0, max: 2 ** 32 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 4 }),
        (vms, size, split, replicas) => {
          const plan = planPlacement(vms, size, split, replicas);
          expect(plan.reduce((sum, chunk) => sum + chunk.size, 0)).toBe(size);
          const used = new Map<string, number>();
          for (const chunk of plan) {
            expect(chunk.replicas.length).toBeLessThanOrEqual(replicas);
            expect(new Set(chunk.replicas).size).toBe(chunk.replicas.length);
            expect(chunk.vm).toBe(chunk.replicas[0] ?? null);
            for (const id of chunk.replicas) used.set(id, (used.get(id) ?? 0) + chunk.size);
          }
          for (const v of vms) expect(used.get(v.id) ?? 0).toBeLessThanOrEqual(v.memoryEffective);
          expect(planPlacement([...vms].reverse(), size, split, replicas)).toEqual(plan);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('effectiveMemory (§IV.4.b)', () => {
  test('memoryFree − penalty × reductionFactor, never below zero', () => {
    expect(effectiveMemory(300 * MiB, 0, 50 * MiB)).toBe(300 * MiB);
    expect(effectiveMemory(300 * MiB, 1, 50 * MiB)).toBe(250 * MiB);
    expect(effectiveMemory(300 * MiB, 2, 50 * MiB)).toBe(200 * MiB);
    expect(effectiveMemory(100 * MiB, 3, 50 * MiB)).toBe(0);
  });
});

describe('chunksFor: no chunk smaller than the minimum, on average', () => {
  test.each([
    [4096, 2, 65536, 1],
    [131_071, 2, 65536, 1],
    [131_072, 2, 65536, 2],
    [3 * 1024 * 1024, 2, 65536, 2],
    [10 * 65536, 3, 65536, 3],
    [0, 2, 65536, 1],
    [4096, 2, 0, 2],
  ])('%d bytes, split %d, minimum %d: %d chunk(s)', (size, split, minChunk, chunks) => {
    expect(chunksFor(size, split, minChunk)).toBe(chunks);
  });
});
