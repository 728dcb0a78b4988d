/**
 * A cloudlet behind MQTT user names, passwords, TLS and the ACL that
 * `cloudlet acl` writes, on a real Mosquitto: it works for its members, and
 * one member's credentials cannot read a VM's chunks, speak as the broker,
 * speak as another VM, or take over another's MQTT session.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { type Broker, createBroker } from '../../actors/broker.ts';
import { bufferSource, memorySink } from '../../actors/files.ts';
import { silentLogger } from '../../actors/log.ts';
import { createMember, type Member } from '../../actors/member.ts';
import { connectLink, type Link, LinkError } from '../../actors/mqtt-link.ts';
import { createVm, joined, type Vm } from '../../actors/vm.ts';
import { generateAccess } from '../../cli/access.ts';
import { createMemoryChunkStore } from '../../plugins/chunk-store/memory.ts';
import { createMemoryCoreCloud } from '../../plugins/core-cloud/memory.ts';
import { encodeFrame } from '../../protocol/frame.ts';
import { createTopics } from '../../protocol/topics.ts';
import { freePort, type ManagedProcess, startProcess } from '../support/process.ts';
import { runCommand } from '../support/run.ts';
import { type ServiceHandle, serviceSkipReason, startMosquitto } from '../support/services.ts';
import { type Certificate, localCertificate } from '../support/tls.ts';

const MiB = 1024 * 1024;
const log = silentLogger();
const topics = createTopics('secure');

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)('MQTT security', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cloudlet-security-'));
  const access = generateAccess({
    root: 'secure',
    brokerUser: 'broker',
    members: ['vm-a', 'vm-b', 'alice', 'eve'],
  });
  let mosquitto: ServiceHandle;
  let tlsUrl: string;
  let certificate: Certificate;
  let broker: Broker;
  let vms: Vm[] = [];
  let link: Link;
  let alice: Member;
  const as = (user: string) => ({
    username: user,
    password: access.credentials[user] as string,
    ca: Buffer.from(certificate.cert),
  });

  beforeAll(async () => {
    certificate = await localCertificate();
    for (const [name, text] of Object.entries({
      passwd: access.passwd,
      acl: access.acl,
      'server.pem': certificate.cert,
      'server.key': certificate.key,
    })) {
      writeFileSync(join(dir, name), text, { mode: 0o600 });
    }
    let tlsPort: number;
    ({ mosquitto, tlsPort } = await startSecureMosquitto(dir));
    tlsUrl = `mqtts://127.0.0.1:${tlsPort}`;
    broker = await createBroker({
      mqttUrl: tlsUrl,
      mqtt: as('broker'),
      topicRoot: 'secure',
      core: createMemoryCoreCloud(),
      log,
    });
    vms = await Promise.all(
      ['vm-a', 'vm-b'].map((id, i) =>
        createVm({
          mqttUrl: tlsUrl,
          mqtt: as(id),
          topicRoot: 'secure',
          id,
          store: createMemoryChunkStore(),
          memory: (2 - i) * 64 * MiB,
          log,
        }),
      ),
    );
    await Promise.all(vms.map((vm) => joined(vm)));
    link = await connectLink({ url: tlsUrl, id: 'alice', topics, log, ...as('alice') });
    alice = createMember({ link, log });
  }, 30_000);

  afterAll(async () => {
    alice?.close();
    await link?.close();
    for (const vm of vms) await vm.close();
    await broker?.close();
    await mosquitto?.[Symbol.asyncDispose]();
    rmSync(dir, { recursive: true, force: true });
  });

  test('members with their credentials work over TLS: upload and download', async () => {
    const bytes = randomBytes(300_000);
    const stored = await alice.put(bufferSource(bytes), 'secret.bin');
    expect(stored.chunks.map((chunk) => chunk.vm)).toEqual(['vm-a', 'vm-b']);
    const sink = memorySink();
    const result = await alice.get('secret.bin', sink);
    expect(sink.bytes().equals(bytes)).toBe(true);
    expect(result.chunks.map((chunk) => chunk.source)).toEqual(['edge', 'edge']);
  });

  test('no credentials, a wrong password, or an untrusted certificate: a clear refusal', async () => {
    const attempt = (options: Partial<ReturnType<typeof as>>) =>
      connectLink({
        url: tlsUrl,
        id: 'mallory',
        topics,
        log,
        ca: Buffer.from(certificate.cert),
        ...options,
      });
    await expect(attempt({})).rejects.toThrow(/not authorized/);
    await expect(attempt({ username: 'alice', password: 'guess' })).rejects.toThrow(
      /not authorized/,
    );
    const stranger = await localCertificate();
    await expect(attempt({ ...as('alice'), ca: Buffer.from(stranger.cert) })).rejects.toThrow(
      LinkError,
    );
  });

  test("a member's credentials cannot read VM B's chunks, nor knock VM B off", async () => {
    // Eve is a member like any VM or user: same rights, her own lanes.
    const spy = await mqtt.connectAsync(tlsUrl, { ...as('eve'), clientId: 'secure_vm-b' });
    // Mosquitto grants the subscriptions (its ACL works at delivery)…
    await spy.subscribeAsync([topics.fromBroker('vm-b'), topics.node('vm-b'), `${topics.root}/#`], {
      qos: 1,
    });
    // Only the broker's own status is every member's to read.
    let overheard = 0;
    spy.on('message', (topic) => {
      if (topic !== topics.status('broker')) overheard++;
    });
    await alice.put(bufferSource(randomBytes(200_000)), 'for-b.bin');
    const sink = memorySink();
    await alice.get('for-b.bin', sink);
    await Bun.sleep(200);
    // …and delivers nothing of the traffic to and from VM B.
    expect(overheard).toBe(0);
    await spy.endAsync();
    // VM B's client id was hers to ask for, not to get.
    expect(broker.vms().find((vm) => vm.id === 'vm-b')).toMatchObject({
      status: 'alive',
      penalty: 0,
    });
  });

  test("a member's credentials cannot speak as the broker, nor as VM B", async () => {
    const rogue = await mqtt.connectAsync(tlsUrl, { ...as('eve'), clientId: 'rogue' });
    const file = await alice.stat('secret.bin');
    // A forged delete on VM B's broker channel: the server drops it.
    await rogue.publishAsync(
      topics.fromBroker('vm-b'),
      encodeFrame({ type: 'chunk.delete', id: 'forged', from: 'broker', fileId: file.fileId }),
      { qos: 1 },
    );
    // VM B's will, and a heartbeat on VM B's topic: dropped too.
    await rogue.publishAsync(
      topics.status('vm-b'),
      encodeFrame({ type: 'status', from: 'vm-b', incarnation: 'x', online: false }),
      {
        qos: 1,
        retain: true,
      },
    );
    // On its own topic, claiming to be VM B: the broker refuses it.
    const before = broker.stats().rejected['wrong-sender'] ?? 0;
    await rogue.publishAsync(
      topics.toBroker('eve'),
      encodeFrame({
        type: 'join',
        id: 'steal',
        from: 'vm-b',
        incarnation: 'y',
        address: '6.6.6.6',
        cpu: { cores: 1, load: 0 },
        memoryFree: 1,
      }),
      { qos: 1 },
    );
    const deadline = Date.now() + 5000;
    while ((broker.stats().rejected['wrong-sender'] ?? 0) === before && Date.now() < deadline)
      await Bun.sleep(10);
    expect(broker.stats().rejected['wrong-sender']).toBe(before + 1);
    await rogue.endAsync();

    const vmB = broker.vms().find((vm) => vm.id === 'vm-b');
    expect(vmB).toMatchObject({ status: 'alive', penalty: 0 });
    expect(vmB?.address).not.toBe('6.6.6.6');
    // VM B still serves its chunk from the edge.
    const sink = memorySink();
    const result = await alice.get('secret.bin', sink);
    expect(result.chunks.map((chunk) => chunk.source)).toEqual(['edge', 'edge']);
  });
});

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)(
  'the secure setup, as the README runs it',
  () => {
    const ROOT = join(import.meta.dir, '..', '..');
    const dir = mkdtempSync(join(tmpdir(), 'cloudlet-secure-cli-'));
    const processes: ManagedProcess[] = [];
    let mosquitto: ServiceHandle;
    let credentials: Record<string, string>;
    let env: Record<string, string>;
    const cli = (args: string[], extra: Record<string, string> = {}) =>
      runCommand([process.execPath, join(ROOT, 'cli/cloudlet.ts'), ...args], {
        env: { ...env, ...extra },
      });

    beforeAll(async () => {
      const acl = await runCommand([
        process.execPath,
        join(ROOT, 'cli/cloudlet.ts'),
        '--topic-root',
        'lab',
        'acl',
        '--member',
        'vm-1',
        'alice',
        '--out',
        dir,
      ]);
      expect(acl).toMatchObject({ code: 0, stderr: '' });
      expect(acl.stdout).toContain('use_username_as_clientid true');
      credentials = JSON.parse(readFileSync(join(dir, 'credentials.json'), 'utf8'));
      const certificate = await localCertificate();
      writeFileSync(join(dir, 'server.pem'), certificate.cert);
      writeFileSync(join(dir, 'server.key'), certificate.key, { mode: 0o600 });
      const { mosquitto: started, tlsPort } = await startSecureMosquitto(dir);
      mosquitto = started;
      env = {
        CLOUDLET_MQTT_URL: `mqtts://127.0.0.1:${tlsPort}`,
        CLOUDLET_MQTT_CA: join(dir, 'server.pem'),
        CLOUDLET_TOPIC_ROOT: 'lab',
        CLOUDLET_LOG_LEVEL: 'info',
      };
      const as = (user: string) => ({
        CLOUDLET_MQTT_USERNAME: user,
        CLOUDLET_MQTT_PASSWORD: credentials[user] as string,
      });
      processes.push(
        await startProcess({
          name: 'broker',
          command: process.execPath,
          args: [
            join(ROOT, 'cli/broker.ts'),
            '--no-admin',
            '--split',
            '1',
            '--core',
            `fs:${join(dir, 'core')}`,
          ],
          env: { ...env, ...as('broker') },
          ready: { line: /"msg":"ready"/ },
          readyTimeoutMs: 20_000,
        }),
      );
      processes.push(
        await startProcess({
          name: 'vm-1',
          command: process.execPath,
          args: [join(ROOT, 'cli/vm.ts'), '--id', 'vm-1', '--memory', '64MiB', '--store', 'memory'],
          env: { ...env, ...as('vm-1') },
          ready: { line: /"msg":"joined the cloudlet"/ },
          readyTimeoutMs: 20_000,
        }),
      );
      env = { ...env, ...as('alice') };
    }, 60_000);

    afterAll(async () => {
      for (const child of processes.reverse()) await child.stop();
      await mosquitto?.[Symbol.asyncDispose]();
      rmSync(dir, { recursive: true, force: true });
    }, 30_000);

    test('`cloudlet acl` writes files only their owner can read, with a password per member', () => {
      for (const name of ['passwd', 'acl', 'credentials.json']) {
        expect(statSync(join(dir, name)).mode & 0o777).toBe(0o600);
      }
      expect(Object.keys(credentials).sort()).toEqual(['alice', 'broker', 'vm-1']);
      expect(new Set(Object.values(credentials)).size).toBe(3);
      expect(readFileSync(join(dir, 'passwd'), 'utf8')).not.toContain(credentials.alice as string);
    });

    test('put and get over mqtts:// with the generated credentials', async () => {
      const bytes = randomBytes(100_000);
      writeFileSync(join(dir, 'in.bin'), bytes);
      const put = await cli(['-q', 'put', join(dir, 'in.bin')]);
      expect(put).toMatchObject({ code: 0, stderr: '' });
      expect(put.stdout).toContain('on vm-1');
      const get = await cli(['-q', 'get', 'in.bin', '-o', join(dir, 'out.bin')]);
      expect(get).toMatchObject({ code: 0, stderr: '' });
      expect(readFileSync(join(dir, 'out.bin')).equals(bytes)).toBe(true);
    });

    test('a wrong password, an untrusted CA, or a missing CA file: one line and exit 1', async () => {
      const wrong = await cli(['ls'], { CLOUDLET_MQTT_PASSWORD: 'nope' });
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toMatch(/^cloudlet: .*not authorized.*\n$/);

      const stranger = await localCertificate();
      writeFileSync(join(dir, 'other.pem'), stranger.cert);
      const untrusted = await cli(['ls'], { CLOUDLET_MQTT_CA: join(dir, 'other.pem') });
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr).toMatch(/^cloudlet: .*TLS refused.*--mqtt-ca.*\n$/);

      const missing = await cli(['ls'], { CLOUDLET_MQTT_CA: join(dir, 'nowhere.pem') });
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(
        /^cloudlet: cannot read the MQTT CA .*nowhere\.pem: ENOENT\n$/,
      );
    });
  },
);

/**
 * Mosquitto with `dir`'s passwd and acl, anonymous clients refused, and a TLS
 * listener presenting `dir`'s server.pem and server.key, as the README says.
 */
async function startSecureMosquitto(dir: string) {
  const tlsPort = await freePort();
  const mosquitto = await startMosquitto({
    extraConfig: [
      'allow_anonymous false',
      `password_file ${join(dir, 'passwd')}`,
      `acl_file ${join(dir, 'acl')}`,
      `listener ${tlsPort} 127.0.0.1`,
      `certfile ${join(dir, 'server.pem')}`,
      `keyfile ${join(dir, 'server.key')}`,
      // A member's credentials on this listener cannot take over another's session.
      'use_username_as_clientid true',
    ],
  });
  return { mosquitto, tlsPort };
}
