/**
 * The core-cloud conformance suite against the real Microsoft Graph, run only
 * when credentials are in the environment (this machine cannot reach Graph;
 * CI has no credentials). It says so when it skips.
 */
import { describe } from 'bun:test';
import { newId } from '../../actors/ids.ts';
import { createCoreCloud } from '../../plugins/core-cloud/index.ts';
import { testCoreCloud } from './core-cloud-conformance.ts';

const env = process.env;
// Device-code sign-in needs a person at a browser: not for an unattended run.
const unattended =
  env.CLOUDLET_ONEDRIVE_TOKEN ||
  env.CLOUDLET_ONEDRIVE_TOKEN_FILE ||
  (env.CLOUDLET_ONEDRIVE_CLIENT_SECRET && env.CLOUDLET_ONEDRIVE_DRIVE_ID);
const skipReason = unattended
  ? undefined
  : 'no OneDrive credentials in the environment: set CLOUDLET_ONEDRIVE_TOKEN (or _TOKEN_FILE), ' +
    'or CLOUDLET_ONEDRIVE_TENANT, _CLIENT_ID, _CLIENT_SECRET and _DRIVE_ID, to run it';
if (skipReason) console.warn(`skipping the live OneDrive test: ${skipReason}`);

describe.skipIf(skipReason !== undefined)('live OneDrive', () => {
  testCoreCloud({
    name: 'onedrive (live Microsoft Graph)',
    // A fresh folder per test, removed afterwards.
    create: async () => createCoreCloud('onedrive', { cluster: `test-${newId(8)}` }),
    cleanup: async (cloud) => {
      for (const key of await cloud.list()) await cloud.delete(key);
    },
  });
});
