/**
 * The README's commands, run as written: every command block a user is told
 * to run in Try it and Running a cloudlet (README.md), A standby broker and
 * Locking it down (docs/operations.md),
 * with only addresses, ports and paths substituted (in the text, or through
 * the environment variables the README documents, for a port or directory
 * it does not write out). The secure setup runs with the admin endpoint on,
 * as a user gets it.
 */
import { afterEach, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  freePort,
  type ManagedProcess,
  type Readiness,
  startProcess,
} from '../../bench/harness/process.ts';
import { runCommand } from '../../bench/harness/run.ts';
import { blocksUnder, OPERATIONS_PATH, type Step, stepsOf, substitute } from '../support/readme.ts';
import { type ServiceHandle, serviceSkipReason, startRedis } from '../support/services.ts';
import { localCertificate } from '../support/tls.ts';

const ROOT = join(import.meta.dir, '..', '..');
// Debian puts mosquitto in /usr/sbin, not on every user's PATH.
const PATH = `${process.env.PATH ?? ''}:/usr/sbin:/usr/local/sbin`;

const running: Array<ManagedProcess | ServiceHandle> = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const child of running.splice(0).reverse()) await child.stop();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}, 30_000);

function workDir() {
  const dir = mkdtempSync(join(tmpdir(), 'cloudlet-readme-'));
  dirs.push(dir);
  return dir;
}

/** A step run to its end, in the clone, as a shell runs it: exit 0 and nothing on stderr. */
async function run(step: Step, subs: Array<[string, string]>, env: Record<string, string>) {
  const command = substitute(step.command, subs);
  const result = await runCommand(['bash', '-c', command], { env: { PATH, ...env }, cwd: ROOT });
  // `bun run` first echoes the script it runs (`$ bun cli/…`) on stderr.
  const stderr = result.stderr.replace(/^\$ bun .*\n/, '');
  expect({ command, code: result.code, stderr }).toEqual({
    command,
    code: 0,
    stderr: '',
  });
  return result;
}

/** A step that keeps running (a server, the broker, a VM), until it is ready. */
async function start(
  step: Step,
  subs: Array<[string, string]>,
  env: Record<string, string>,
  ready: Readiness,
) {
  const command = substitute(step.command, subs);
  const child = await startProcess({
    name: command,
    command: 'bash',
    // `exec`: the shell becomes the command, and `bun run` passes SIGTERM on.
    args: ['-c', `exec ${command}`],
    env: { PATH, CLOUDLET_LOG_LEVEL: 'info', ...env },
    cwd: ROOT,
    ready,
    readyTimeoutMs: 30_000,
  });
  running.push(child);
  return child;
}

const line = (pattern: RegExp) => ({ line: pattern });

describe.skipIf(serviceSkipReason('mosquitto', 'redis-server') !== undefined)(
  'the README, as written',
  () => {
    test('Try it: bun run start, the cloudlet commands beside it, the demo', async () => {
      const [setup, commands, demo] = blocksUnder('## Try it');
      const dir = workDir();
      const [mqttPort, adminPort] = [await freePort(), await freePort()];
      // `bun run start` writes no port or directory: the documented variables choose them.
      const env = {
        CLOUDLET_MQTT_PORT: String(mqttPort),
        CLOUDLET_ADMIN_PORT: String(adminPort),
        CLOUDLET_DATA_DIR: join(dir, 'data'),
        CLOUDLET_MQTT_URL: `mqtt://127.0.0.1:${mqttPort}`,
      };
      const subs: Array<[string, string]> = [
        ['put report.pdf', `put ${join(dir, 'report.pdf')}`],
        ['-o copy.pdf', `-o ${join(dir, 'copy.pdf')}`],
      ];
      const steps = stepsOf(setup as { lang: string; text: string });
      expect(steps.map((step) => step.command)).toEqual(['bun install', 'bun run start']);
      await run(steps[0] as Step, subs, env);
      const cloudlet = await start(steps[1] as Step, subs, env, line(/Ctrl-C stops it/));
      expect(cloudlet.output()).toContain(`dashboard      http://127.0.0.1:${adminPort}`);

      const report = randomBytes(1_000_000);
      writeFileSync(join(dir, 'report.pdf'), report);
      for (const step of stepsOf(commands as { lang: string; text: string })) {
        await run(step, subs, env);
      }
      expect(readFileSync(join(dir, 'copy.pdf')).equals(report)).toBe(true);

      const walk = stepsOf(demo as { lang: string; text: string });
      expect(walk.map((step) => step.command)).toEqual(['bun run demo']);
      const shown = await run(walk[0] as Step, subs, env);
      expect(shown.stdout.match(/identical to what was uploaded: yes/g)).toHaveLength(2);
    }, 120_000);

    test('Running a cloudlet: Mosquitto, the broker, two VMs on Redis, every cloudlet command', async () => {
      const [nodes, client] = blocksUnder('## Running a cloudlet');
      const dir = workDir();
      const mqttPort = await freePort();
      const redis = await startRedis();
      running.push(redis);
      const subs: Array<[string, string]> = [
        ['10.0.0.1:1883', `127.0.0.1:${mqttPort}`],
        ['-p 1883', `-p ${mqttPort}`],
        ['127.0.0.1:6379', `127.0.0.1:${redis.port}`],
        ['/srv/', `${dir}/srv/`],
        ['put report.pdf', `put ${join(dir, 'report.pdf')}`],
        ['-o copy.pdf', `-o ${join(dir, 'copy.pdf')}`],
      ];
      const env = { CLOUDLET_ADMIN_PORT: String(await freePort()) };
      const [mosquitto, broker, ...vms] = stepsOf(nodes as { lang: string; text: string });
      expect(mosquitto?.background).toBe(true);
      await start(mosquitto as Step, subs, env, { port: mqttPort });
      const brokerProcess = await start(broker as Step, subs, env, line(/"msg":"ready"/));
      expect(brokerProcess.output()).toContain(`"dataDir":"${dir}/srv/cloudlet"`);
      expect(vms).toHaveLength(2);
      for (const vm of vms) await start(vm, subs, env, line(/"msg":"joined the cloudlet"/));

      // A 1 MB report: large enough to be split over both VMs, as the comment says.
      const report = randomBytes(1_000_000);
      writeFileSync(join(dir, 'report.pdf'), report);
      const clientEnv: Record<string, string> = { ...env };
      const printed: string[] = [];
      for (const step of stepsOf(client as { lang: string; text: string })) {
        if (step.export) {
          clientEnv[step.export[0]] = substitute(step.export[1], subs);
          continue;
        }
        printed.push((await run(step, subs, clientEnv)).stdout);
      }
      expect(printed[0]).toMatch(/^stored report\.pdf \(.*\) as #0 .* on vm-1, #1 .* on vm-2\n$/);
      expect(readFileSync(join(dir, 'copy.pdf')).equals(report)).toBe(true);
      expect(printed.join('')).toMatch(/vm-2 .* alive/);
    }, 120_000);

    test('A standby broker: the same command twice, one active and one standing by, which takes over', async () => {
      const [block] = blocksUnder('## A standby broker', OPERATIONS_PATH);
      const dir = workDir();
      const mqttPort = await freePort();
      const redis = await startRedis();
      running.push(redis);
      const mosquitto = await startProcess({
        name: 'mosquitto',
        command: 'mosquitto',
        args: ['-p', String(mqttPort)],
        env: { PATH },
        ready: { port: mqttPort },
      });
      running.push(mosquitto);
      const subs: Array<[string, string]> = [
        ['10.0.0.1:1883', `127.0.0.1:${mqttPort}`],
        ['10.0.0.5:6379', `127.0.0.1:${redis.port}`],
        ['/srv/', `${dir}/srv/`],
      ];
      const env = { CLOUDLET_ADMIN_PORT: String(await freePort()) };
      const steps = stepsOf(block as { lang: string; text: string });
      expect(steps).toHaveLength(1);
      const command = steps[0] as Step;
      const first = await start(command, subs, env, line(/"msg":"ready"/));
      expect(first.output()).toContain('holding the lease: this broker is the active one');
      const second = await start(
        command,
        subs,
        env,
        line(/standby: another broker holds the lease/),
      );
      await first.stop();
      const deadline = Date.now() + 25_000;
      while (!second.output().includes('"msg":"ready"') && Date.now() < deadline)
        await Bun.sleep(100);
      expect(second.output()).toContain('holding the lease: this broker is the active one');
      expect(second.output()).toContain('"msg":"ready"');
    }, 60_000);

    test('Locking it down: cloudlet acl, the mosquitto.conf, and broker (admin on), VM and client over mqtts://', async () => {
      const [acl, conf, members] = blocksUnder(
        '## Locking it down: passwords, ACL, TLS',
        OPERATIONS_PATH,
      );
      const dir = workDir();
      const tlsPort = await freePort();
      const adminPort = await freePort();
      const certificate = await localCertificate();
      mkdirSync(join(dir, 'certs'));
      writeFileSync(join(dir, 'certs', 'server.pem'), certificate.cert);
      writeFileSync(join(dir, 'certs', 'server.key'), certificate.key, { mode: 0o600 });
      const subs: Array<[string, string]> = [
        ['/etc/mosquitto/cloudlet', join(dir, 'cloudlet')],
        ['/etc/mosquitto/certs/', `${join(dir, 'certs')}/`],
        ['listener 8883', `listener ${tlsPort}`],
        ['10.0.0.1:8883', `127.0.0.1:${tlsPort}`],
        ['--mqtt-ca server.pem', `--mqtt-ca ${join(dir, 'certs', 'server.pem')}`],
        ['/srv/', `${dir}/srv/`],
      ];
      const env = {
        CLOUDLET_ADMIN_PORT: String(adminPort),
        // The broker's metadata goes to its default data directory.
        CLOUDLET_DATA_DIR: join(dir, 'data'),
      };
      const [generate] = stepsOf(acl as { lang: string; text: string });
      const written = await run(generate as Step, subs, env);
      expect(written.stdout).toMatch(
        /^wrote .*\/passwd, .*\/acl and .*\/credentials\.json \(keep the last one secret\)/,
      );
      const credentials = JSON.parse(
        readFileSync(join(dir, 'cloudlet', 'credentials.json'), 'utf8'),
      ) as Record<string, string>;

      expect(conf?.lang).toBe('');
      const config = substitute(conf?.text ?? '', subs);
      // Mosquitto started as root drops to its own user, which could not read
      // the 0600 files (the README: chown them to it); here it stays root.
      const asRoot = process.getuid?.() === 0 ? 'user root\n' : '';
      writeFileSync(join(dir, 'mosquitto.conf'), `${asRoot}${config}`);
      running.push(
        await startProcess({
          name: 'mosquitto (README config)',
          command: 'mosquitto',
          args: ['-c', join(dir, 'mosquitto.conf')],
          env: { PATH },
          ready: { port: tlsPort },
        }),
      );

      const steps = stepsOf(members as { lang: string; text: string });
      expect(steps).toHaveLength(3);
      // Each '…' is the password of the user the line names.
      const withPassword = (step: Step): Array<[string, string]> => {
        const user = /(?:--mqtt-username |CLOUDLET_MQTT_USERNAME=)(\S+)/.exec(step.command)?.[1];
        return [...subs, ["'…'", `'${credentials[user as string]}'`]];
      };
      const [broker, vm, client] = steps as [Step, Step, Step];
      const brokerProcess = await start(broker, withPassword(broker), env, line(/"msg":"ready"/));
      await start(vm, withPassword(vm), env, line(/"msg":"joined the cloudlet"/));
      await run(client, withPassword(client), env);

      // The admin endpoint, on as a user gets it, reaches MQTT as its own member.
      const ready = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
      expect(await ready.json()).toMatchObject({ ready: true, mqtt: true });
      const upload = await fetch(`http://127.0.0.1:${adminPort}/api/files/secret.bin`, {
        method: 'PUT',
        body: randomBytes(50_000),
        signal: AbortSignal.timeout(10_000),
      });
      expect(upload.status).toBeLessThan(300);
      const removed = await fetch(`http://127.0.0.1:${adminPort}/api/files/secret.bin`, {
        method: 'DELETE',
        signal: AbortSignal.timeout(10_000),
      });
      expect(removed.status).toBe(204);
      expect(brokerProcess.output()).not.toContain('MQTT connection lost');
    }, 120_000);
  },
);
