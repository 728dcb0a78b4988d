/**
 * The broker's retained status as members see it: a member that connects
 * while the status says the broker is offline holds its request until a
 * broker is online again, instead of failing it as lost when the status
 * arrives (tests/reliability/standby.test.ts has the requests in flight
 * when the broker goes away).
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { createBroker } from '../../actors/broker/broker.ts';
import { newId } from '../../actors/ids.ts';
import { connectLink } from '../../actors/link/mqtt-link.ts';
import { silentLogger } from '../../actors/log.ts';
import { createMember } from '../../actors/member/member.ts';
import { createMemoryCoreCloud } from '../../plugins/core-cloud/memory.ts';
import { createMemoryMetadata } from '../../plugins/metadata/memory.ts';
import { createTopics } from '../../protocol/topics.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';
import { until } from '../support/until.ts';

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)('the broker status', () => {
  const mosquitto = useMosquitto();
  const topicRoot = `b${newId(4).replace(/[-_]/g, 'x')}`;
  const log = silentLogger();
  const metadata = createMemoryMetadata();
  const closing: { close(): Promise<void> | void }[] = [];
  afterAll(async () => {
    for (const item of closing.reverse()) await item.close();
  });
  const broker = () =>
    createBroker({
      mqttUrl: mosquitto.url,
      topicRoot,
      core: createMemoryCoreCloud(),
      metadata,
      log,
    });
  const member = async (id: string) => {
    const link = await connectLink({
      url: mosquitto.url,
      id,
      topics: createTopics(topicRoot),
      log,
    });
    closing.push(link);
    const made = createMember({ link, log, requestTimeoutMs: 8000 });
    closing.push(made);
    return made;
  };

  test('a link hears the retained status that comes with its subscription', async () => {
    const current = await broker();
    const link = await connectLink({
      url: mosquitto.url,
      id: 'listener',
      topics: createTopics(topicRoot),
      log,
    });
    closing.push(link);
    // The retained status comes right after the subscription is granted
    // (at times in the same read, before any handler could be added).
    await until(() => link.lastStatus('broker') !== null, 'the retained status is heard', 2000);
    expect(link.lastStatus('broker')).toMatchObject({
      online: true,
      incarnation: current.incarnation,
    });
    await current.close();
  }, 20_000);

  test('a member that meets an offline status waits for the next broker', async () => {
    // The last broker stopped gracefully, which leaves "offline" retained
    // as a crash's will does.
    const late = await member('late');
    const listing = late.list();
    await Bun.sleep(1500);
    const second = await broker();
    closing.push(second);
    expect((await listing).files).toEqual([]);
  }, 20_000);
});
