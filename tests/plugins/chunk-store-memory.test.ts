import { createMemoryChunkStore } from '../../plugins/chunk-store/memory.ts';
import { testChunkStore } from './chunk-store-conformance.ts';

testChunkStore({
  name: 'memory',
  create: async () => createMemoryChunkStore(),
});
