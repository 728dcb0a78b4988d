import { readFileSync } from 'node:fs';
import { createFsCoreCloud } from './fs.ts';
import { createMemoryCoreCloud } from './memory.ts';
import { createOneDriveCoreCloud } from './onedrive.ts';
import { type TokenSource, tokenSourceFromEnv } from './onedrive-auth.ts';
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

const SPEC_HELP = 'use memory, fs:DIR or onedrive';

export interface CoreCloudSpecOptions {
  /** Where `onedrive` reads its CLOUDLET_ONEDRIVE_* settings; default `process.env`. */
  env?: Record<string, string | undefined>;
  /** Shows a device-code sign-in prompt (default: on stderr). */
  onDeviceCode?: (message: string) => void;
  /** Names this cloudlet's folder on OneDrive when CLOUDLET_ONEDRIVE_FOLDER does not. */
  cluster?: string;
}

/** The core cloud a `--core` flag names: `memory`, `fs:DIR` or `onedrive`. */
export function createCoreCloud(spec: string, options: CoreCloudSpecOptions = {}): CoreCloud {
  if (spec === 'memory') return createMemoryCoreCloud();
  if (spec === 'onedrive') return oneDriveFromEnv(options);
  if (spec.startsWith('fs:')) {
    const dir = spec.slice('fs:'.length);
    if (!dir) throw new CoreCloudError('fs', `no directory in ${JSON.stringify(spec)}; use fs:DIR`);
    return createFsCoreCloud({ dir });
  }
  const backend = /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1] ?? spec;
  throw new CoreCloudError(backend, `no such backend (${JSON.stringify(spec)}); ${SPEC_HELP}`);
}

/**
 * OneDrive as the CLOUDLET_ONEDRIVE_* variables describe it (docs/onedrive.md
 * lists them): sign-in, Graph URL, drive, folder, and a CA to trust.
 */
function oneDriveFromEnv(options: CoreCloudSpecOptions): CoreCloud {
  const env = options.env ?? process.env;
  const caFile = env.CLOUDLET_ONEDRIVE_CA_FILE;
  let ca: string | undefined;
  if (caFile) {
    try {
      ca = readFileSync(caFile, 'utf8');
    } catch (error) {
      throw new CoreCloudError(
        'onedrive',
        `cannot read CLOUDLET_ONEDRIVE_CA_FILE ${caFile}: ${(error as Error).message}`,
      );
    }
  }
  let tokens: TokenSource;
  try {
    tokens = tokenSourceFromEnv({
      env,
      ...(ca ? { ca } : {}),
      ...(options.onDeviceCode ? { onDeviceCode: options.onDeviceCode } : {}),
    });
  } catch (error) {
    // Its message names what to set; it never holds a secret.
    throw new CoreCloudError('onedrive', (error as Error).message);
  }
  const value = (name: string) => (env[name] ? env[name] : undefined);
  const graphUrl = value('CLOUDLET_ONEDRIVE_GRAPH_URL');
  const driveId = value('CLOUDLET_ONEDRIVE_DRIVE_ID');
  const folder = value('CLOUDLET_ONEDRIVE_FOLDER');
  const cluster = value('CLOUDLET_ONEDRIVE_CLUSTER') ?? options.cluster;
  return createOneDriveCoreCloud({
    tokens,
    ...(graphUrl ? { graphUrl } : {}),
    ...(driveId ? { driveId } : {}),
    ...(folder ? { folder } : {}),
    ...(cluster ? { cluster } : {}),
    ...(ca ? { ca } : {}),
  });
}
