import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import { testMetadataStore } from './metadata-conformance.ts';

testMetadataStore({
  name: 'memory',
  create: async () => createMemoryMetadata(),
});
