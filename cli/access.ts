/**
 * `cloudlet acl`: the Mosquitto password file and ACL that keep members in
 * their lanes. Each member's MQTT user name is its member id; the topics
 * (protocol/topics.ts) then say who may write where:
 *
 *   every member   reads  <root>/node/<self> and <root>/node/<self>/broker,
 *                         the broker's status <root>/node/<broker>/status,
 *                         and segments uploaded to it, <root>/up/+/<self>/#
 *                  writes <root>/broker/<self>, <root>/node/<self>/status,
 *                         any peer inbox <root>/node/<id>, and its own
 *                         uploads <root>/up/<self>/#
 *   the broker     reads  <root>/broker/+, every status, and the uploads'
 *                         copies for the core, <root>/up/+/+/core
 *                  writes every member's <root>/node/<id>/broker
 *
 *   the broker's admin endpoint is a member of its own, <broker>-admin, with
 *   a password derived from the broker's (protocol/admin-identity.ts)
 *
 * So a VM cannot read another's chunks (its broker channel, its uploads),
 * cannot speak as the broker (nobody else writes a broker channel), and
 * cannot speak as another member to the broker or upload as another
 * member (each writes only its own topics there).
 */
import { pbkdf2Sync, randomBytes } from 'node:crypto';
import { adminMemberId, adminPassword } from '../protocol/admin-identity.ts';
import { isMemberId } from '../protocol/topics.ts';

export interface AccessOptions {
  root: string;
  brokerUser: string;
  /** VMs and clients; each name is the member id it connects as. */
  members: string[];
  /** Passwords to use instead of random ones, by user (tests, re-runs). */
  passwords?: Record<string, string>;
}

export interface Access {
  /** Mosquitto's password file (PBKDF2-SHA512, as `mosquitto_passwd` writes it). */
  passwd: string;
  /** Mosquitto's ACL file. */
  acl: string;
  /**
   * Every user's password, to hand to its member. Keep it secret. The admin
   * endpoint's user is in `passwd` but not here: the broker derives it.
   */
  credentials: Record<string, string>;
}

/** mosquitto 2's `$7$` hash: PBKDF2-SHA512, 101 iterations, 12-byte salt. */
export function mosquittoHash(password: string, salt = randomBytes(12)): string {
  const hash = pbkdf2Sync(password, salt, 101, 64, 'sha512');
  return `$7$101$${salt.toString('base64')}$${hash.toString('base64')}`;
}

export function generateAccess(options: AccessOptions): Access {
  const admin = adminMemberId(options.brokerUser);
  const users = [options.brokerUser, ...options.members];
  for (const user of users) {
    if (!isMemberId(user))
      throw new Error(`"${user}" is not a member id: use 1-64 letters, digits, ".", "_" or "-"`);
  }
  const duplicate = users.find((user, i) => users.indexOf(user) !== i);
  if (duplicate) throw new Error(`"${duplicate}" is named twice`);
  if (users.includes(admin))
    throw new Error(`"${admin}" is the broker's admin endpoint: name the member otherwise`);
  if (!isMemberId(admin))
    throw new Error(
      `"${options.brokerUser}" is too long for a broker id: its admin endpoint's "${admin}" must be a member id too`,
    );
  const credentials = Object.fromEntries(
    users.map((user) => [user, options.passwords?.[user] ?? randomBytes(18).toString('base64url')]),
  );
  const passwords = {
    ...credentials,
    [admin]: adminPassword(credentials[options.brokerUser] as string),
  };
  const passwd = [...users, admin]
    .map((user) => `${user}:${mosquittoHash(passwords[user] as string)}`)
    .join('\n');
  const root = options.root;
  const acl = [
    '# Written by `bun run cloudlet acl`: each member may read only its own inboxes',
    '# and write only where it must; only the broker writes broker channels.',
    '',
    '# Every member (the user name is its member id).',
    `pattern read ${root}/node/%u`,
    `pattern read ${root}/node/%u/broker`,
    `pattern write ${root}/broker/%u`,
    `pattern write ${root}/node/%u/status`,
    `pattern write ${root}/node/+`,
    // Uploads: each member sends its own segments straight to the VMs holding them.
    `pattern write ${root}/up/%u/#`,
    `pattern read ${root}/up/+/%u/#`,
    // Whether the broker is online, and which process it is (a standby may take over).
    `pattern read ${root}/node/${options.brokerUser}/status`,
    '',
    '# The broker.',
    `user ${options.brokerUser}`,
    `topic read ${root}/broker/+`,
    `topic read ${root}/node/+/status`,
    `topic read ${root}/up/+/+/core`,
    `topic write ${root}/node/+/broker`,
    '',
  ].join('\n');
  return { passwd: `${passwd}\n`, acl, credentials };
}
