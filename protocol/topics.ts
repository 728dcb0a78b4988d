/**
 * Every MQTT topic the cloudlet uses is built and parsed here, under one
 * configurable root (default `cloudlet`; the paper's broker topic was
 * `rupam/cloudlet`, §V.A step 1).
 *
 *   <root>/broker             the broker's inbox (§V.A step 1)
 *   <root>/node/<id>          one inbox per member, VM or client (§V.A step 2;
 *                             the paper used the VM's IP address as topic)
 *   <root>/node/<id>/status   retained online/offline status of a VM; its
 *                             offline value is the VM's MQTT will
 */

export const DEFAULT_TOPIC_ROOT = 'cloudlet';

/** Member ids become topic levels: no `/`, `+`, `#`, no spaces, bounded. */
export const MEMBER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export type ParsedTopic =
  | { kind: 'broker' }
  | { kind: 'node'; id: string }
  | { kind: 'status'; id: string };

export interface Topics {
  readonly root: string;
  /** The broker's inbox. */
  readonly broker: string;
  /** Subscription filter matching every VM's status topic. */
  readonly allStatus: string;
  /** A member's inbox. */
  node(id: string): string;
  /** A VM's retained status topic (carries its will). */
  status(id: string): string;
  /** What a topic is, or `null` when it is not one of ours. */
  parse(topic: string): ParsedTopic | null;
}

export function isMemberId(id: string): boolean {
  return MEMBER_ID_PATTERN.test(id);
}

export function createTopics(root: string = DEFAULT_TOPIC_ROOT): Topics {
  const problem = topicRootProblem(root);
  if (problem) throw new TypeError(`invalid topic root ${JSON.stringify(root)}: ${problem}`);
  const prefix = `${root}/`;
  const memberTopic = (id: string, suffix: string) => {
    if (!isMemberId(id)) {
      throw new TypeError(
        `invalid member id ${JSON.stringify(id)}: use 1-64 letters, digits, '.', '_' or '-'`,
      );
    }
    return `${root}/node/${id}${suffix}`;
  };
  return {
    root,
    broker: `${root}/broker`,
    allStatus: `${root}/node/+/status`,
    node: (id) => memberTopic(id, ''),
    status: (id) => memberTopic(id, '/status'),
    parse(topic) {
      if (!topic.startsWith(prefix)) return null;
      const levels = topic.slice(prefix.length).split('/');
      if (levels.length === 1 && levels[0] === 'broker') return { kind: 'broker' };
      if (levels[0] !== 'node' || levels[1] === undefined || !isMemberId(levels[1])) return null;
      if (levels.length === 2) return { kind: 'node', id: levels[1] };
      if (levels.length === 3 && levels[2] === 'status') return { kind: 'status', id: levels[1] };
      return null;
    },
  };
}

function topicRootProblem(root: string): string | undefined {
  if (root.length === 0) return 'it is empty';
  if (root.startsWith('/') || root.endsWith('/')) return 'it starts or ends with /';
  if (root.split('/').some((level) => level.length === 0)) return 'it has an empty level';
  if (/[+#]/.test(root)) return 'it contains an MQTT wildcard (+ or #)';
  if (root.startsWith('$')) return 'topics starting with $ are reserved by MQTT servers';
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
  if (/[\u0000-\u001f\u007f]/.test(root)) return 'it contains a control character';
  return undefined;
}
