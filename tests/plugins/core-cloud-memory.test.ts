import { createMemoryCoreCloud } from '../../plugins/core-cloud/memory.ts';
import { testCoreCloud } from './core-cloud-conformance.ts';

testCoreCloud({
  name: 'memory',
  create: async () => createMemoryCoreCloud(),
});
