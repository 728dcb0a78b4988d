/**
 * Where the statecharts meet the MQTT link: the bridge actor turns inbound
 * frames and connection changes into events, and the `send` action
 * publishes what a machine names.
 */
import { type EventObject, fromCallback } from 'xstate';
import type { SendCommand } from '../../machines/shared.ts';
import type { Frame } from '../../protocol/frame.ts';
import type { ParsedTopic } from '../../protocol/topics.ts';
import type { Logger } from '../log.ts';
import type { Link } from './mqtt-link.ts';

export interface BridgeOptions {
  /** Frames for which this returns true are handled elsewhere (replies, segments). */
  intercept?: (frame: Frame, topic: ParsedTopic) => boolean;
}

export function linkBridge(link: Link, options: BridgeOptions = {}) {
  return fromCallback<EventObject, void>(({ sendBack }) => {
    const offFrame = link.onFrame((frame, topic) => {
      if (options.intercept?.(frame, topic)) return;
      sendBack({ type: 'FRAME', frame, topic, at: Date.now() });
    });
    const offConnection = link.onConnection((connected) =>
      sendBack({ type: connected ? 'CONNECTED' : 'DISCONNECTED' }),
    );
    // The link connected before the machine started.
    queueMicrotask(() => {
      if (link.connected) sendBack({ type: 'CONNECTED' });
    });
    return () => {
      offFrame();
      offConnection();
    };
  });
}

/** The `send` action every machine names, publishing through `link`. */
export function sendThrough(link: Link, log: Logger) {
  return (_: unknown, command: SendCommand) => {
    const sent =
      command.to === null
        ? link.sendToBroker(command.message, command.body)
        : command.encoded
          ? link.sendEncoded(command.to, command.encoded)
          : link.send(command.to, command.message, command.body);
    sent.catch((error: Error) => {
      log.warn({ err: error.message, type: command.message.type }, 'could not send');
      // An answer that cannot be encoded (a record the protocol refuses) must
      // not leave its requester waiting for a timeout: it gets an error.
      const { message } = command;
      const id = 'id' in message ? message.id : undefined;
      if (error instanceof TypeError && command.to !== null && id && message.type !== 'error') {
        link
          .send(command.to, {
            type: 'error',
            id,
            from: link.id,
            code: 'internal',
            message: `the answer could not be sent: ${error.message}`.slice(0, 200),
            retryable: false,
          })
          .catch(() => {});
      }
    });
  };
}
