/**
 * A OneDrive core on a Graph double, in a fresh folder, with small upload
 * fragments (a few MiB make a session of several) and retries that do not
 * really wait (each wait is handed to `sleep`).
 */
import { newId } from '../../actors/ids.ts';
import {
  createOneDriveCoreCloud,
  type OneDriveOptions,
} from '../../plugins/core-cloud/onedrive.ts';
import type { GraphServer } from './graph-server.ts';

export function onedriveOn(
  server: GraphServer,
  overrides: Partial<OneDriveOptions> = {},
  sleep: (ms: number) => Promise<void> = async () => {},
) {
  return createOneDriveCoreCloud({
    tokens: { kind: 'token', getToken: async () => server.token },
    graphUrl: server.baseUrl,
    ca: server.ca,
    cluster: `c${newId(6).replace(/[-_]/g, 'x')}`,
    fragmentSize: 320 * 1024,
    retry: { maxRetries: 3, sleep },
    ...overrides,
  });
}
