import { describe, expect, test } from 'bun:test';
import { sendThrough } from '../../actors/link/bridge.ts';
import type { Link } from '../../actors/link/mqtt-link.ts';
import { silentLogger } from '../../actors/log.ts';
import type { Message } from '../../protocol/messages.ts';

/** A link whose sends of `refuse` types fail as the frame encoder does. */
function fakeLink(refuse: string) {
  const sent: { to: string; message: Message }[] = [];
  const link = {
    id: 'broker',
    send: async (to: string, message: Message) => {
      if (message.type === refuse) throw new TypeError(`cannot encode ${message.type}: bad field`);
      sent.push({ to, message });
    },
    sendToBroker: async () => {},
  } as unknown as Link;
  return { link, sent };
}

describe('the send action', () => {
  test('an answer that cannot be encoded becomes an error reply to its requester', async () => {
    const { link, sent } = fakeLink('list.response');
    const send = sendThrough(link, silentLogger());
    send(null, {
      type: 'SEND',
      to: 'cli-1',
      message: { type: 'list.response', id: 'r1', from: 'broker', files: [] },
    });
    await Bun.sleep(0);
    expect(sent).toEqual([
      {
        to: 'cli-1',
        message: {
          type: 'error',
          id: 'r1',
          from: 'broker',
          code: 'internal',
          message: 'the answer could not be sent: cannot encode list.response: bad field',
          retryable: false,
        },
      },
    ]);
  });

  test('a failed error reply is not answered again', async () => {
    const { link, sent } = fakeLink('error');
    const send = sendThrough(link, silentLogger());
    send(null, {
      type: 'SEND',
      to: 'cli-1',
      message: {
        type: 'error',
        id: 'r1',
        from: 'broker',
        code: 'busy',
        message: 'x',
        retryable: true,
      },
    });
    await Bun.sleep(0);
    expect(sent).toEqual([]);
  });
});
