/**
 * Every MQTT topic the cloudlet uses is built and parsed here, under one
 * configurable root (default `cloudlet`; the paper's broker topic was
 * `rupam/cloudlet`, §V.A step 1).
 *
 *   <root>/broker/<sender>     a member to the broker (§V.A step 1): one topic
 *                              per sender, so an ACL can tie it to a user and
 *                              the broker checks it against the message
 *   <root>/node/<id>           a member's inbox for its peers (chunk data from
 *                              VMs, acknowledgements); anyone may write here
 *   <root>/node/<id>/broker    the broker to a member: instructions and
 *                              answers; only the broker may write here
 *   <root>/node/<id>/status    retained online/offline status of a VM; its
 *                              offline value is the VM's MQTT will
 *   <root>/up/<sender>/<vm>    an uploader's segments of a chunk that VM
 *                              <vm> holds (§V.D); only <sender> writes here
 *   <root>/up/<sender>/<vm>/core  the same, for the chunk's first holder:
 *                              the broker reads these too, for the core
 *                              (<vm> is the broker's id for a chunk no VM
 *                              holds), so one publish reaches both
 *
 * (§V.A step 2: the paper used the VM's IP address as its topic.)
 */

export const DEFAULT_TOPIC_ROOT = 'cloudlet';

/** Member ids become topic levels: no `/`, `+`, `#`, no spaces, bounded. */
export const MEMBER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export type ParsedTopic =
  | { kind: 'to-broker'; sender: string }
  | { kind: 'peer'; id: string }
  | { kind: 'from-broker'; id: string }
  | { kind: 'status'; id: string }
  | { kind: 'upload'; sender: string; holder: string; core: boolean };

export interface Topics {
  readonly root: string;
  /** Subscription filter matching every member's topic to the broker. */
  readonly allToBroker: string;
  /** Subscription filter matching every VM's status topic. */
  readonly allStatus: string;
  /** Where `sender` writes to the broker. */
  toBroker(sender: string): string;
  /** A member's inbox for its peers. */
  node(id: string): string;
  /** Where the broker writes to member `id`. */
  fromBroker(id: string): string;
  /** A VM's retained status topic (carries its will). */
  status(id: string): string;
  /** Where `sender` sends segments of a chunk `holder` keeps (and, with `core`, the broker). */
  upload(sender: string, holder: string, core: boolean): string;
  /** Subscription filter: every segment sent to `holder`. */
  uploadsTo(holder: string): string;
  /** Subscription filter: every segment the broker writes to the core. */
  readonly allUploadsToCore: string;
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
  const checked = (id: string) => {
    if (!isMemberId(id)) {
      throw new TypeError(
        `invalid member id ${JSON.stringify(id)}: use 1-64 letters, digits, '.', '_' or '-'`,
      );
    }
    return id;
  };
  return {
    root,
    allToBroker: `${root}/broker/+`,
    allStatus: `${root}/node/+/status`,
    toBroker: (sender) => `${root}/broker/${checked(sender)}`,
    node: (id) => `${root}/node/${checked(id)}`,
    fromBroker: (id) => `${root}/node/${checked(id)}/broker`,
    status: (id) => `${root}/node/${checked(id)}/status`,
    upload: (sender, holder, core) =>
      `${root}/up/${checked(sender)}/${checked(holder)}${core ? '/core' : ''}`,
    uploadsTo: (holder) => `${root}/up/+/${checked(holder)}/#`,
    allUploadsToCore: `${root}/up/+/+/core`,
    parse(topic) {
      if (!topic.startsWith(prefix)) return null;
      const [first, id, channel, ...rest] = topic.slice(prefix.length).split('/');
      if (first === 'up') {
        const [more, ...beyond] = rest;
        if (id === undefined || !isMemberId(id) || channel === undefined || !isMemberId(channel))
          return null;
        if (beyond.length > 0 || (more !== undefined && more !== 'core')) return null;
        return { kind: 'upload', sender: id, holder: channel, core: more === 'core' };
      }
      if (id === undefined || !isMemberId(id) || rest.length > 0) return null;
      if (first === 'broker')
        return channel === undefined ? { kind: 'to-broker', sender: id } : null;
      if (first !== 'node') return null;
      if (channel === undefined) return { kind: 'peer', id };
      if (channel === 'broker') return { kind: 'from-broker', id };
      if (channel === 'status') return { kind: 'status', id };
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
