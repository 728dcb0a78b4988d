import { createFsCoreCloud } from './fs.ts';
import { createMemoryCoreCloud } from './memory.ts';
import { type CoreCloud, CoreCloudError } from './types.ts';

export { createFsCoreCloud, type FsCoreCloudOptions } from './fs.ts';
export {
  coreKeyProblem,
  corePrefixProblem,
  validateCoreKey,
  validateCorePrefix,
  validateRange,
} from './keys.ts';
export { createMemoryCoreCloud } from './memory.ts';
export { type CoreCloud, CoreCloudError, type CoreWriter } from './types.ts';

const SPEC_HELP = 'use memory or fs:DIR';

/** The core cloud a `--core` flag names: `memory` or `fs:DIR` (`onedrive` comes later). */
export function createCoreCloud(spec: string): CoreCloud {
  if (spec === 'memory') return createMemoryCoreCloud();
  if (spec.startsWith('fs:')) {
    const dir = spec.slice('fs:'.length);
    if (!dir) throw new CoreCloudError('fs', `no directory in ${JSON.stringify(spec)}; use fs:DIR`);
    return createFsCoreCloud({ dir });
  }
  if (spec === 'onedrive') {
    throw new CoreCloudError('onedrive', `not available yet; ${SPEC_HELP}`);
  }
  const backend = /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1] ?? spec;
  throw new CoreCloudError(backend, `no such backend (${JSON.stringify(spec)}); ${SPEC_HELP}`);
}
