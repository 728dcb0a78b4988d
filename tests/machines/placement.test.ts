import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { effectiveMemory, planPlacement } from '../../machines/placement.ts';

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
      { index: 0, offset: 0, size: 1_887_437, vm: 'vm-a' },
      { index: 1, offset: 1_887_437, size: 1_258_291, vm: 'vm-b' },
    ]);
  });

  test('fewer candidates than split: all of them', () => {
    const plan = planPlacement([{ id: 'a', memoryEffective: 10 }], 100, 3);
    expect(plan).toEqual([{ index: 0, offset: 0, size: 100, vm: 'a' }]);
  });

  test('no candidate: the core only, one chunk', () => {
    expect(planPlacement([], 42, 2)).toEqual([{ index: 0, offset: 0, size: 42, vm: null }]);
    expect(planPlacement([{ id: 'a', memoryEffective: 0 }], 42, 2)).toEqual([
      { index: 0, offset: 0, size: 42, vm: null },
    ]);
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
    expect(planPlacement(vms, 0, 2)).toEqual([{ index: 0, offset: 0, size: 0, vm: 'a' }]);
    expect(planPlacement(vms, 1, 2)).toEqual([{ index: 0, offset: 0, size: 1, vm: 'a' }]);
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
        (vms, size, split) => {
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

describe('effectiveMemory (§IV.4.b)', () => {
  test('memoryFree − penalty × reductionFactor, never below zero', () => {
    expect(effectiveMemory(300 * MiB, 0, 50 * MiB)).toBe(300 * MiB);
    expect(effectiveMemory(300 * MiB, 1, 50 * MiB)).toBe(250 * MiB);
    expect(effectiveMemory(300 * MiB, 2, 50 * MiB)).toBe(200 * MiB);
    expect(effectiveMemory(100 * MiB, 3, 50 * MiB)).toBe(0);
  });
});
