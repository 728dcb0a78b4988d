import { describe, expect, test } from 'bun:test';
import { pbkdf2Sync } from 'node:crypto';
import { generateAccess, mosquittoHash } from '../../cli/access.ts';
import { adminPassword } from '../../protocol/admin-identity.ts';

describe('cloudlet acl', () => {
  test("the password hash is mosquitto 2's $7$ PBKDF2-SHA512 form", () => {
    const salt = Buffer.alloc(12, 7);
    const hash = mosquittoHash('secret', salt);
    const [, kind, iterations, saltText, digest] = hash.split('$');
    expect([kind, iterations, saltText]).toEqual(['7', '101', salt.toString('base64')]);
    expect(digest).toBe(pbkdf2Sync('secret', salt, 101, 64, 'sha512').toString('base64'));
  });

  test("one passwd line per user and the broker's admin endpoint, and the ACL names the root and the broker", () => {
    const access = generateAccess({
      root: 'lab/one',
      brokerUser: 'hub',
      members: ['vm-1', 'alice'],
    });
    expect(
      access.passwd
        .trim()
        .split('\n')
        .map((line) => line.split(':')[0]),
    ).toEqual(['hub', 'vm-1', 'alice', 'hub-admin']);
    const [, adminHash] = access.passwd.trim().split('\n')[3]?.split(':') ?? [];
    const [, , , salt] = adminHash?.split('$') ?? [];
    expect(adminHash).toBe(
      mosquittoHash(
        adminPassword(access.credentials.hub as string),
        Buffer.from(salt ?? '', 'base64'),
      ),
    );
    expect(Object.keys(access.credentials)).not.toContain('hub-admin');
    expect(access.acl).toContain('pattern read lab/one/node/%u\n');
    expect(access.acl).toContain('user hub\ntopic read lab/one/broker/+\n');
    expect(access.acl).not.toMatch(/^topic (read|readwrite) lab\/one\/node\/\+\/broker/m);
  });

  test('given passwords are kept; missing ones are random and distinct', () => {
    const access = generateAccess({
      root: 'c',
      brokerUser: 'broker',
      members: ['a', 'b'],
      passwords: { a: 'pw-a' },
    });
    expect(access.credentials.a).toBe('pw-a');
    expect(access.credentials.b).not.toBe(access.credentials.broker);
    expect(access.credentials.b?.length).toBeGreaterThanOrEqual(20);
  });

  test('a bad or repeated member id is refused with the reason', () => {
    expect(() => generateAccess({ root: 'c', brokerUser: 'broker', members: ['a b'] })).toThrow(
      /"a b" is not a member id/,
    );
    expect(() => generateAccess({ root: 'c', brokerUser: 'broker', members: ['broker'] })).toThrow(
      /broker/,
    );
    expect(() => generateAccess({ root: 'c', brokerUser: 'broker', members: ['+'] })).toThrow(
      /not a member id/,
    );
    expect(() =>
      generateAccess({ root: 'c', brokerUser: 'broker', members: ['broker-admin'] }),
    ).toThrow(/"broker-admin" is the broker's admin endpoint/);
  });
});
