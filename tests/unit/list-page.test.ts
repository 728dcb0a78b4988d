import { describe, expect, test } from 'bun:test';
import { decodeFrame, encodeFrame, encodeListPage, joinListRecords } from '../../protocol/frame.ts';
import type { FileInfo } from '../../protocol/messages.ts';

const file: FileInfo = {
  name: 'é "quoted" file 中.bin',
  fileId: 'f1',
  size: 3,
  sha256: 'a'.repeat(64),
  createdAt: '2026-01-02T03:04:05.678Z',
  chunks: [{ index: 0, offset: 0, size: 3, vm: null, replicas: [], sha256: 'b'.repeat(64) }],
};

function messageOf(frame: Buffer) {
  const decoded = decodeFrame(frame);
  if (!decoded.ok) throw new Error(decoded.error.message);
  return decoded.frame.message;
}

describe('encodeListPage', () => {
  test('is the frame encodeFrame makes of the same page', () => {
    for (const nextCursor of [undefined, 'YWJj']) {
      const header = {
        type: 'list.response' as const,
        id: 'r1',
        from: 'broker',
        ...(nextCursor ? { nextCursor } : {}),
      };
      const spliced = encodeListPage(header, [
        JSON.stringify(file),
        JSON.stringify({ ...file, name: 'b' }),
      ]);
      const whole = encodeFrame({ ...header, files: [file, { ...file, name: 'b' }] });
      expect(messageOf(spliced)).toEqual(messageOf(whole));
    }
    const empty = decodeFrame(
      encodeListPage({ type: 'list.response', id: 'r1', from: 'broker' }, []),
    );
    expect(empty.ok && empty.frame.message).toEqual({
      type: 'list.response',
      id: 'r1',
      from: 'broker',
      files: [],
    });
  });

  test('takes the records joined already, as text or UTF-8 bytes alike', () => {
    const texts = [JSON.stringify(file), JSON.stringify({ ...file, name: 'b' })];
    const header = { type: 'list.response' as const, id: 'r1', from: 'broker' };
    const fromTexts = encodeListPage(header, texts);
    const bytes = texts.map((text) => Buffer.from(text, 'utf8'));
    expect(joinListRecords(bytes)).toEqual(joinListRecords(texts));
    expect(joinListRecords([texts[0] as string, bytes[1] as Buffer])).toEqual(
      joinListRecords(texts),
    );
    expect(encodeListPage(header, joinListRecords(bytes))).toEqual(fromTexts);
    expect(joinListRecords([])).toEqual(Buffer.alloc(0));
  });

  test('refuses a bad header', () => {
    expect(() =>
      encodeListPage({ type: 'list.response', id: 'no spaces', from: 'broker' }, []),
    ).toThrow(/cannot encode list.response: id/);
  });
});
