import { afterAll, describe, expect, test } from 'bun:test';
import { createActor, setup } from 'xstate';
import { startStatelyInspection, withoutBytes } from '../../server/stately.ts';

describe('--inspect: Stately inspection over a WebSocket', () => {
  const received: string[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: (request, srv) =>
      srv.upgrade(request) ? undefined : new Response('ws only', { status: 400 }),
    websocket: { message: (_ws, message) => void received.push(String(message)) },
  });
  afterAll(() => server.stop(true));

  test("a machine's actor and snapshots reach the inspector, with bytes left out", async () => {
    const inspection = startStatelyInspection(`ws://127.0.0.1:${server.port}`);
    const machine = setup({}).createMachine({
      id: 'probe',
      // A context factory, as the cloudlet's machines have (a static one is
      // part of the machine definition the inspector receives as a string).
      context: () => ({ payload: Buffer.alloc(1024 * 1024) }),
      initial: 'a',
      states: { a: { on: { GO: 'b' } }, b: {} },
    });
    const actor = createActor(machine, { inspect: inspection.inspect }).start();
    actor.send({ type: 'GO', bytes: Buffer.alloc(10) } as { type: 'GO' });
    const deadline = Date.now() + 5000;
    while (!received.some((m) => m.includes('"b"')) && Date.now() < deadline) await Bun.sleep(20);
    inspection.stop();
    const all = received.join('\n');
    expect(all).toContain('@xstate.actor');
    expect(all).toContain('@xstate.snapshot');
    expect(all).toContain('<1048576 bytes>');
    expect(all).not.toContain('"data":[0,0,0');
  });

  test('withoutBytes replaces byte arrays anywhere, and leaves the rest', () => {
    expect(withoutBytes({ a: 1, b: [Buffer.alloc(3), { c: new Uint8Array(2) }], d: 'x' })).toEqual({
      a: 1,
      b: ['<3 bytes>', { c: '<2 bytes>' }],
      d: 'x',
    });
  });
});
