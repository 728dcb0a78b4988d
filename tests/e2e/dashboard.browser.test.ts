/**
 * The dashboard in a real browser (Debian's Chromium, driven by
 * playwright-core) against a live cloudlet: a broker process with its admin
 * endpoint, three VM processes. Saves a screenshot to .ci-out/.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { freePort, type ManagedProcess, startProcess } from '../../bench/harness/process.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

const ROOT = join(import.meta.dir, '../..');
const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, '.ci-out');

function browserSkipReason(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  const reason = `${CHROMIUM} not found; install it with: apt-get install chromium`;
  if (process.env.CI && process.env.CI !== 'false') {
    throw new Error(`${reason} (CI is set, so this fails instead of skipping)`);
  }
  console.warn(`skipping the browser test: ${reason}`);
  return reason;
}

const skip = serviceSkipReason('mosquitto') !== undefined || browserSkipReason() !== undefined;

/** How each runtime runs one of our scripts: Bun always; Deno where installed (CI installs it). */
const DENO = Bun.which('deno');
const RUNTIMES: Array<[string, (script: string) => { command: string; args: string[] }]> = [
  ['Bun', (script) => ({ command: process.execPath, args: [script] })],
  ...(DENO || (process.env.CI && process.env.CI !== 'false')
    ? [
        [
          'Deno',
          (script: string) => ({ command: DENO ?? 'deno', args: ['run', '-A', script] }),
        ] as [string, (script: string) => { command: string; args: string[] }],
      ]
    : []),
];

for (const [runtime, run] of RUNTIMES)
  describe.skipIf(skip)(`dashboard in Chromium, broker and VMs on ${runtime}`, () => {
    const mosquitto = useMosquitto();
    const processes: ManagedProcess[] = [];
    let browser: Browser;
    let page: Page;
    let adminUrl: string;
    const dataDir = mkdtempSync(join(tmpdir(), 'cloudlet-dashboard-'));

    beforeAll(async () => {
      const env = {
        CLOUDLET_MQTT_URL: mosquitto.url,
        CLOUDLET_TOPIC_ROOT: 'browser',
        CLOUDLET_LOG_LEVEL: 'info',
        CLOUDLET_LOG_FORMAT: 'json',
      };
      const adminPort = await freePort();
      processes.push(
        await startProcess({
          name: 'broker',
          ...run(join(ROOT, 'cli/broker.ts')),
          cwd: ROOT,
          args: [
            ...run(join(ROOT, 'cli/broker.ts')).args,
            '--admin-port',
            String(adminPort),
            '--heartbeat-ms',
            '1000',
            '--data-dir',
            dataDir,
          ],
          env,
          ready: { line: /"msg":"ready"/ },
        }),
      );
      adminUrl = `http://127.0.0.1:${adminPort}`;
      for (const [id, memory] of [
        ['vm-1', '300MiB'],
        ['vm-2', '200MiB'],
        ['vm-3', '100MiB'],
      ] as const) {
        processes.push(
          await startProcess({
            name: id,
            ...run(join(ROOT, 'cli/vm.ts')),
            cwd: ROOT,
            args: [...run(join(ROOT, 'cli/vm.ts')).args, '--id', id, '--memory', memory],
            env,
            ready: { line: /"msg":"joined the cloudlet"/ },
          }),
        );
      }
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      });
      page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    }, 60_000);

    afterAll(async () => {
      await browser?.close();
      for (const proc of processes.reverse()) await proc.stop().catch(() => {});
      rmSync(dataDir, { recursive: true, force: true });
    }, 30_000);

    test('the VM table, the broker diagram, and a killed VM turning failed', async () => {
      const pageErrors: string[] = [];
      page.on('pageerror', (error) => pageErrors.push(error.message));
      await page.goto(adminUrl);

      // Three VMs, alive.
      // Page-side code as strings: this file is type-checked without the DOM library.
      await page.waitForFunction(
        `document.querySelectorAll('[data-testid="vm-row"]').length === 3`,
      );
      const statuses = await page.$$eval('[data-testid="vm-status"]', (cells) =>
        cells.map((c) => c.textContent?.trim()),
      );
      expect(statuses).toEqual(['alive', 'alive', 'alive']);
      // No token is needed on loopback: the token form stays hidden.
      expect(await page.isVisible('[data-testid="token-form"]')).toBe(false);
      expect(await page.textContent('[data-vm-id="vm-1"]')).toContain('300 MiB');

      // The broker's statechart is drawn, online highlighted.
      await page.waitForSelector(
        'svg[data-testid="statechart"][data-machine="broker"] g[data-state-id="broker.online"].active',
      );
      for (const state of ['broker.connecting', 'broker.reconnecting']) {
        expect(
          await page.$(`svg[data-testid="statechart"] g[data-state-id="${state}"]`),
        ).not.toBeNull();
      }

      // Pick vm-2's membership, then kill vm-2.
      const option = await page.$$eval('[data-testid="actor-picker"] option', (options) =>
        options.map((o) => ({ value: o.getAttribute('value') ?? '', label: o.textContent ?? '' })),
      );
      const vm2 = option.find((o) => o.label.includes('vm-2'));
      expect(vm2).toBeDefined();
      await page.selectOption('[data-testid="actor-picker"]', vm2?.value ?? '');
      await page.waitForSelector(
        'svg[data-testid="statechart"][data-machine="membership"] g[data-state-id="membership.alive"].active',
      );

      await processes[2]?.kill();
      await page.waitForSelector(
        'svg[data-testid="statechart"] g[data-state-id="membership.failed"].active',
        {
          timeout: 15_000,
        },
      );
      expect(
        await page.$('svg[data-testid="statechart"] g[data-state-id="membership.alive"].active'),
      ).toBeNull();
      await page.waitForFunction(
        `document.querySelector('[data-vm-id="vm-2"] [data-testid="vm-status"]')?.textContent?.trim() === 'failed'`,
      );
      const log = await page.$eval(
        '[data-testid="transition-log"]',
        (list) => list.textContent ?? '',
      );
      expect(log).toContain('OFFLINE');

      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({
        path: join(
          ARTIFACTS,
          runtime === 'Bun' ? 'dashboard.png' : `dashboard-${runtime.toLowerCase()}.png`,
        ),
        fullPage: true,
      });
      expect(pageErrors).toEqual([]);
    }, 60_000);
  });
