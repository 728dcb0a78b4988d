/**
 * Who the broker's admin endpoint is on the MQTT server. It reads and writes
 * content as a member of its own, `<broker>-admin`, with its own MQTT user of
 * that name: under `use_username_as_clientid` two connections of one user
 * would knock each other off, and the ACL gives every member its own lanes.
 * Its password is derived from the broker's, so `cloudlet acl` can write it
 * into the password file and the broker can sign in as it with no flag more.
 */
import { createHmac } from 'node:crypto';

export function adminMemberId(brokerId: string): string {
  return `${brokerId}-admin`;
}

/** The admin member's MQTT password, from the broker's (HMAC-SHA256, base64url). */
export function adminPassword(brokerPassword: string): string {
  return createHmac('sha256', brokerPassword).update('cloudlet admin endpoint').digest('base64url');
}
