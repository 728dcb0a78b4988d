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
import { type Broker, createBroker } from '../../actors/broker/broker.ts';
import { connectLink, type Link, LinkError } from '../../actors/link/mqtt-link.ts';
import { silentLogger } from '../../actors/log.ts';
import { bufferSource, memorySink } from '../../actors/member/files.ts';
import { createMember, type Member } from '../../actors/member/member.ts';
import { createVm, joined, type Vm } from '../../actors/vm/vm.ts';
import { freePort, type ManagedProcess, startProcess } from '../../bench/harness/process.ts';
import { runCommand } from '../../bench/harness/run.ts';
import { generateAccess } from '../../cli/access.ts';
import { createMemoryChunkStore } from '../../plugins/chunk-store/memory.ts';
import type { ChunkStore } from '../../plugins/chunk-store/types.ts';
import { createMemoryCoreCloud } from '../../plugins/core-cloud/memory.ts';
import { decodeFrame, encodeFrame } from '../../protocol/frame.ts';
import type { Message, MessageOf } from '../../protocol/messages.ts';
import { createTopics } from '../../protocol/topics.ts';
import { type ServiceHandle, serviceSkipReason, startMosquitto } from '../support/services.ts';
import { type Certificate, localCertificate } from '../support/tls.ts';
import { until } from '../support/until.ts';

const MiB = 1024 * 1024;
const log = silentLogger();
const topics = createTopics('secure');

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)('MQTT security', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cloudlet-security-'));
  const access = generateAccess({
    root: 'secure',
    brokerUser: 'broker',
    members: ['vm-a', 'vm-b', 'alice', 'eve', 'auditor'],
  });
  // An operator's monitor, added by hand for this test: the generated ACL
  // lets only the broker read VMs' statuses, and a second connection as the
  // broker would take over the broker's own session.
  const acl = `${access.acl}\nuser auditor\ntopic read ${topics.root}/node/+/status\n`;
  let mosquitto: ServiceHandle;
  let tlsUrl: string;
  let certificate: Certificate;
  let broker: Broker;
  let vms: Vm[] = [];
  const stores = new Map<string, ChunkStore>();
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
      acl,
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
      ['vm-a', 'vm-b'].map((id, i) => {
        const store = createMemoryChunkStore();
        stores.set(id, store);
        return createVm({
          mqttUrl: tlsUrl,
          mqtt: as(id),
          topicRoot: 'secure',
          id,
          store,
          memory: (2 - i) * 64 * MiB,
          log,
        });
      }),
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
    // Eve is a member like any VM or user, with VM A's rights exactly (the ACL
    // gives every member the same patterns). She stands in for VM A here
    // because a second connection with VM A's own credentials would take over
    // VM A's session (use_username_as_clientid).
    const spy = await mqtt.connectAsync(tlsUrl, { ...as('eve'), clientId: 'secure_vm-b' });
    // Mosquitto grants the subscriptions (its ACL works at delivery)…
    await spy.subscribeAsync([topics.fromBroker('vm-b'), topics.node('vm-b'), `${topics.root}/#`], {
      qos: 1,
    });
    let overheard = 0;
    let ownInbox = 0;
    spy.on('message', (topic) => {
      if (topic === topics.node('eve')) ownInbox++;
      // Only the broker's own status is every member's to read.
      else if (topic !== topics.status('broker')) overheard++;
    });
    await alice.put(bufferSource(randomBytes(200_000)), 'for-b.bin');
    const sink = memorySink();
    await alice.get('for-b.bin', sink);
    // The control: what is hers to read reaches her. Sent after VM B's
    // traffic had passed the server, it reaches her after anything of it would.
    await link.publishRaw(topics.node('eve'), Buffer.from('for eve'));
    await until(() => ownInbox === 1, "eve's own inbox hears the control", 5000);
    // …and delivers nothing of the traffic to and from VM B.
    expect(overheard).toBe(0);
    await spy.endAsync();
    // VM B's client id was hers to ask for, not to get.
    expect(broker.vms().find((vm) => vm.id === 'vm-b')).toMatchObject({
      status: 'alive',
      penalty: 0,
    });
  });

  test("VM A's credentials, or any member's, cannot speak as the broker, nor as VM B", async () => {
    const [vmA, vmB] = vms as [Vm, Vm];
    const storeB = stores.get('vm-b') as ChunkStore;
    const file = await alice.stat('secret.bin');
    const heldByB = async () =>
      (await storeB.list()).filter((key) => key.includes(file.fileId)).sort();
    const chunkOnB = await heldByB();
    expect(chunkOnB.length).toBeGreaterThan(0);
    const vmBBefore = broker.vms().find((vm) => vm.id === 'vm-b');
    const rejectedBefore = broker.stats().rejected;
    const cpu = { cores: 1, load: 0 };
    // Each would do harm if the server passed it on: the wills carry VM B's
    // and the broker's real incarnations (a will of any other is ignored).
    // Let through (an ACL that allows them), in this order they leave VM B's
    // row with no room, not alive, at 6.6.6.6, and both wills retained.
    const forgeries: Array<{ topic: string; message: Message; retain?: boolean }> = [
      // A heartbeat of VM B's saying it has no room left.
      {
        topic: topics.toBroker('vm-b'),
        message: {
          type: 'heartbeat',
          from: 'vm-b',
          incarnation: vmB.incarnation,
          cpu,
          memoryFree: 1,
        },
      },
      // VM B's will: the broker would mark it failed.
      {
        topic: topics.status('vm-b'),
        message: { type: 'status', from: 'vm-b', incarnation: vmB.incarnation, online: false },
        retain: true,
      },
      // VM B restarted at another address: the broker would take the address.
      {
        topic: topics.toBroker('vm-b'),
        message: {
          type: 'join',
          id: 'steal',
          from: 'vm-b',
          incarnation: 'forged-restart',
          address: '6.6.6.6',
          cpu,
          memoryFree: 1,
        },
      },
      // The broker's will: members would hold their requests for a broker that is gone.
      {
        topic: topics.status('broker'),
        message: { type: 'status', from: 'broker', incarnation: broker.incarnation, online: false },
        retain: true,
      },
      // The broker telling VM B to delete its chunk.
      {
        topic: topics.fromBroker('vm-b'),
        message: { type: 'chunk.delete', id: 'forged', from: 'broker', fileId: file.fileId },
      },
    ];
    const rogue = await mqtt.connectAsync(tlsUrl, { ...as('eve'), clientId: 'rogue' });
    const publishers = [
      // VM A's own connection, so its session is not taken over.
      {
        user: 'vm-a',
        publish: (topic: string, payload: Buffer, retain = false) =>
          vmA.link.publishRaw(topic, payload, { retain }),
      },
      {
        user: 'eve',
        publish: async (topic: string, payload: Buffer, retain = false) => {
          await rogue.publishAsync(topic, payload, { qos: 1, retain });
        },
      },
    ];
    for (const { user, publish } of publishers) {
      for (const { topic, message, retain } of forgeries)
        await publish(topic, encodeFrame(message), retain);
      // Last, on its own topic, claiming to be VM B: this one reaches the
      // broker, which refuses it. The server passes one client's messages on
      // in order, so once it is counted, the forgeries before it would have
      // been heard.
      const refused = broker.stats().rejected['wrong-sender'] ?? 0;
      await publish(
        topics.toBroker(user),
        encodeFrame({
          type: 'heartbeat',
          from: 'vm-b',
          incarnation: vmB.incarnation,
          cpu,
          memoryFree: 1,
        }),
      );
      await until(
        () => (broker.stats().rejected['wrong-sender'] ?? 0) > refused,
        `the broker refuses ${user} speaking as VM B on its own topic`,
        5000,
      );
    }
    await rogue.endAsync();

    // The server dropped every forgery before the broker saw it: no rejection
    // counted but the two claims on the publishers' own topics.
    expect(broker.stats().rejected).toEqual({
      ...rejectedBefore,
      'wrong-sender': (rejectedBefore['wrong-sender'] ?? 0) + 2,
    });
    const vmBNow = broker.vms().find((vm) => vm.id === 'vm-b');
    expect(vmBNow).toMatchObject({ status: 'alive', penalty: 0, address: vmBBefore?.address });
    expect(vmBNow?.memoryFree).not.toBe(1);
    expect(broker.link.lastStatus('vm-b')).toMatchObject({
      incarnation: vmB.incarnation,
      online: true,
    });
    // Nothing forged was kept for later subscribers either.
    expect(await retainedStatus('vm-b')).toEqual({
      type: 'status',
      from: 'vm-b',
      incarnation: vmB.incarnation,
      online: true,
    });
    expect(await retainedStatus('broker')).toEqual({
      type: 'status',
      from: 'broker',
      incarnation: broker.incarnation,
      online: true,
    });
    // Members still take the broker for online, and a request goes through.
    for (const member of [link, vmA.link]) {
      expect(member.lastStatus('broker')).toMatchObject({
        incarnation: broker.incarnation,
        online: true,
      });
    }
    expect((await alice.vms()).map((vm) => vm.id).sort()).toEqual(['vm-a', 'vm-b']);
    // VM B still serves its chunk from the edge, and still holds it.
    const sink = memorySink();
    const result = await alice.get('secret.bin', sink);
    expect(result.chunks.map((chunk) => chunk.source)).toEqual(['edge', 'edge']);
    expect(await heldByB()).toEqual(chunkOnB);
  });

  /** The status the server keeps for `id`, as a new subscriber (the auditor) gets it. */
  async function retainedStatus(id: string): Promise<MessageOf<'status'> | null> {
    const auditor = await mqtt.connectAsync(tlsUrl, { ...as('auditor'), clientId: 'auditor' });
    try {
      const retained = new Promise<Buffer>((resolve) =>
        auditor.on('message', (_topic, payload, packet) => {
          if (packet.retain) resolve(payload);
        }),
      );
      await auditor.subscribeAsync(topics.status(id), { qos: 1 });
      const payload = await Promise.race([retained, Bun.sleep(2000).then(() => null)]);
      if (!payload) return null;
      const decoded = decodeFrame(payload);
      return decoded.ok && decoded.frame.message.type === 'status' ? decoded.frame.message : null;
    } finally {
      await auditor.endAsync();
    }
  }
});

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)(
  'the secure setup, as docs/operations.md runs it',
  () => {
    const ROOT = join(import.meta.dir, '..', '..');
    const dir = mkdtempSync(join(tmpdir(), 'cloudlet-secure-cli-'));
    const processes: ManagedProcess[] = [];
    let mosquitto: ServiceHandle;
    let credentials: Record<string, string>;
    let env: Record<string, string>;
    let adminUrl: string;
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
      // The admin endpoint stays on, as a user gets it.
      const adminPort = await freePort();
      adminUrl = `http://127.0.0.1:${adminPort}`;
      processes.push(
        await startProcess({
          name: 'broker',
          command: process.execPath,
          args: [
            join(ROOT, 'cli/broker.ts'),
            '--admin-port',
            String(adminPort),
            '--split',
            '1',
            '--data-dir',
            join(dir, 'data'),
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
      const passwd = readFileSync(join(dir, 'passwd'), 'utf8');
      expect(passwd).not.toContain(credentials.alice as string);
      // The admin endpoint's own user, whose password the broker derives.
      expect(passwd.split('\n').map((line) => line.split(':')[0])).toContain('broker-admin');
    });

    test('the admin endpoint on, as a user gets it: ready, and a file deleted through it', async () => {
      const ready = await fetch(`${adminUrl}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ mqtt: true });
      writeFileSync(join(dir, 'doomed.bin'), randomBytes(10_000));
      expect(await cli(['-q', 'put', join(dir, 'doomed.bin')])).toMatchObject({ code: 0 });
      const removed = await fetch(`${adminUrl}/api/files/doomed.bin`, {
        method: 'DELETE',
        signal: AbortSignal.timeout(5_000),
      });
      expect(removed.status).toBe(204);
      const ls = await cli(['ls']);
      expect(ls.stdout).not.toContain('doomed.bin');
      // Neither the broker nor its admin member was knocked off the MQTT server.
      const broker = processes.find((child) => child.name === 'broker') as ManagedProcess;
      expect(broker.output()).not.toContain('MQTT connection lost');
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
 * listener presenting `dir`'s server.pem and server.key, as docs/operations.md says.
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
