/**
 * The MQTT link's own edges on a real Mosquitto: closing never hangs, even
 * when the server stops answering with messages still unacknowledged.
 */
import { describe, expect, test } from 'bun:test';
import { silentLogger } from '../../actors/log.ts';
import { connectLink } from '../../actors/mqtt-link.ts';
import { createTopics } from '../../protocol/topics.ts';
import { serviceSkipReason, useMosquitto } from '../support/services.ts';

describe.skipIf(serviceSkipReason('mosquitto') !== undefined)('the MQTT link', () => {
  const mosquitto = useMosquitto();

  test('close() lets go of a server that stopped answering, with QoS 1 messages unacknowledged', async () => {
    const link = await connectLink({
      url: mosquitto.url,
      id: 'closer',
      topics: createTopics('edges'),
      log: silentLogger(),
    });
    // The server keeps its socket but answers nothing (as one stuck or
    // killed a moment ago); the link still believes it is connected.
    mosquitto.pause();
    try {
      const sent = link.sendToBroker({ type: 'vms.request', id: 'never-acked', from: 'closer' });
      sent.catch(() => {});
      const closed = await Promise.race([
        link.close().then(() => 'closed'),
        Bun.sleep(15_000).then(() => 'still closing'),
      ]);
      expect(closed).toBe('closed');
    } finally {
      mosquitto.resume();
    }
  }, 30_000);
});
