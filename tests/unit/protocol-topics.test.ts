import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { createTopics, DEFAULT_TOPIC_ROOT, fileNameProblem } from '../../protocol/index.ts';
import { isValidFileName } from '../../protocol/names.ts';
import { memberIdArb } from '../support/arbitraries.ts';

describe('topics', () => {
  test('the names DESIGN.md gives, under the default root', () => {
    const topics = createTopics();
    expect(topics.root).toBe(DEFAULT_TOPIC_ROOT);
    expect(topics.toBroker('vm-1')).toBe('cloudlet/broker/vm-1');
    expect(topics.allToBroker).toBe('cloudlet/broker/+');
    expect(topics.node('vm-1')).toBe('cloudlet/node/vm-1');
    expect(topics.fromBroker('vm-1')).toBe('cloudlet/node/vm-1/broker');
    expect(topics.status('vm-1')).toBe('cloudlet/node/vm-1/status');
    expect(topics.allStatus).toBe('cloudlet/node/+/status');
  });

  test('a configurable root, as deep as needed (the paper used rupam/cloudlet)', () => {
    const topics = createTopics('rupam/lab-3');
    expect(topics.toBroker('10.0.0.7')).toBe('rupam/lab-3/broker/10.0.0.7');
    expect(topics.parse('rupam/lab-3/node/10.0.0.7')).toEqual({ kind: 'peer', id: '10.0.0.7' });
  });

  test('build and parse are inverse for every member id', () => {
    const topics = createTopics('site/a');
    fc.assert(
      fc.property(memberIdArb, (id) => {
        expect(topics.parse(topics.node(id))).toEqual({ kind: 'peer', id });
        expect(topics.parse(topics.fromBroker(id))).toEqual({ kind: 'from-broker', id });
        expect(topics.parse(topics.status(id))).toEqual({ kind: 'status', id });
        expect(topics.parse(topics.toBroker(id))).toEqual({ kind: 'to-broker', sender: id });
      }),
    );
  });

  test('foreign topics parse to null', () => {
    const topics = createTopics();
    for (const topic of [
      'other/broker/x',
      'cloudlet',
      'cloudlet/',
      'cloudlet/broker',
      'cloudlet/broker/x/y',
      'cloudlet/broker/+',
      'cloudlet/node',
      'cloudlet/node/',
      'cloudlet/node/a/b',
      'cloudlet/node/a/status/x',
      'cloudlet/node/+/status',
      'cloudletx/broker/a',
      'cloudlet/node/a/other',
    ]) {
      expect(topics.parse(topic)).toBeNull();
    }
  });

  test('member ids that would break a topic are refused', () => {
    const topics = createTopics();
    for (const id of ['', 'a/b', '+', '#', 'a b', '-x', 'x'.repeat(65)]) {
      expect(() => topics.node(id)).toThrow(/invalid member id/);
    }
  });

  test('invalid roots are refused with the reason', () => {
    expect(() => createTopics('')).toThrow(/empty/);
    expect(() => createTopics('/a')).toThrow(/starts or ends/);
    expect(() => createTopics('a//b')).toThrow(/empty level/);
    expect(() => createTopics('a/+')).toThrow(/wildcard/);
    expect(() => createTopics('$SYS')).toThrow(/reserved/);
  });
});

describe('file names', () => {
  test('valid: any UTF-8 up to 255 bytes without separators or controls', () => {
    for (const name of [
      'a',
      'report.pdf',
      'naïve café.txt',
      '日本語',
      '🚀'.repeat(63),
      'x'.repeat(255),
    ]) {
      expect(fileNameProblem(name)).toBeUndefined();
    }
  });

  test('invalid, each with its reason', () => {
    expect(fileNameProblem('')).toMatch(/empty/);
    expect(fileNameProblem('x'.repeat(256))).toMatch(/256 bytes/);
    expect(fileNameProblem('é'.repeat(128))).toMatch(/256 bytes/);
    expect(fileNameProblem('a\u0000b')).toMatch(/control/);
    expect(fileNameProblem('a\nb')).toMatch(/control/);
    expect(fileNameProblem('a\u0085b')).toMatch(/control/);
    expect(fileNameProblem('a/b')).toMatch(/separator/);
    expect(fileNameProblem('a\\b')).toMatch(/separator/);
    expect(fileNameProblem('..')).toMatch(/not a file name/);
    expect(fileNameProblem('\ud800')).toMatch(/surrogate/);
  });

  test('fileNameProblem, which skips counting the bytes of short names, says what the plain rules say', () => {
    // The rules as written, every check in turn (the check before it was made quick).
    const plain = (name: string): string | undefined => {
      if (name.length === 0) return 'the name is empty';
      const bytes = Buffer.byteLength(name, 'utf8');
      if (bytes > 255) return `the name is ${bytes} bytes of UTF-8; the limit is 255`;
      if (!name.isWellFormed()) return 'the name is not valid Unicode (a lone surrogate)';
      // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
      if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'the name contains a control character';
      if (/[/\\]/.test(name)) return 'the name contains a path separator (/ or \\)';
      if (name === '.' || name === '..') return `"${name}" is not a file name`;
      return undefined;
    };
    const unit = fc.oneof(
      fc.constantFrom(
        'a',
        '.',
        '/',
        '\\',
        '\u0000',
        '\u001f',
        '\u007f',
        '\u0085',
        '\u009f',
        '\u00a0',
      ),
      fc.constantFrom('é', '中', '🚀', '\ud800', '\udfff'),
      fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
    );
    const name = fc.oneof(
      fc.array(unit, { maxLength: 100 }).map((units) => units.join('')),
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.constantFrom(
        '.',
        '..',
        '...',
        'x'.repeat(85),
        'x'.repeat(86),
        'é'.repeat(127),
        '中'.repeat(86),
      ),
    );
    fc.assert(
      fc.property(name, (value) => {
        expect(fileNameProblem(value)).toBe(plain(value));
        expect(isValidFileName(value)).toBe(plain(value) === undefined);
      }),
      { numRuns: 5000 },
    );
  });
});
