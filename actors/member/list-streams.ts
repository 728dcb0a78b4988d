/**
 * A listing in flight: a member that lists everything asks for several
 * pages at once, as parts 0, 1, 2, … of one stream, and asks for the next
 * part each time one arrives. Part n begins where part n − 1 ended, so the
 * broker reads the parts one after another, each as soon as the one before
 * is read: its reading and the transfers overlap the member's checking of
 * what it received, instead of taking turns with it (100,000 files: ~50
 * pages of 1 MB; each page's broker work, transfer and check ~6, ~5 and
 * ~10 ms).
 *
 * A part is read when its turn comes, possibly before the member asks for
 * it; it is as current as cursor paging promises (every file committed
 * before the listing began and not removed by the time its page is read is
 * in it; one committed or removed while it runs may or may not be).
 */
import { CloudletError } from '../../machines/shared.ts';

/** One page of a listing, its records joined for the frame (protocol/frame `joinListRecords`). */
export interface ListPage {
  records: Buffer;
  count: number;
  /** The name after which the next page begins; none on the last page. */
  next?: string;
}

/** Reads the page of `limit` after `after`; `previous`, the page before it, tells how big records run. */
export type ReadPage = (
  after: string | undefined,
  limit: number,
  previous?: ListPage,
) => Promise<ListPage>;

/**
 * Parts a member may ask for beyond the last one read. With pages of up to
 * 1 MiB, what a stream can hold is bounded: a member that stops asking
 * leaves at most this many pages read, for STREAM_IDLE_MS.
 */
export const MAX_LIST_AHEAD = 4;
/** A stream no part was asked of for this long is forgotten. */
export const STREAM_IDLE_MS = 30_000;
/** Streams kept at once, and for one member; past either the oldest goes. */
const MAX_STREAMS = 16;
const MAX_STREAMS_PER_MEMBER = 2;

interface Stream {
  member: string;
  after: string | undefined;
  limit: number;
  /** Parts read or being read, not yet asked for, by number. */
  parts: Map<number, Promise<ListPage>>;
  /** The last part begun, and its page. */
  last: number;
  tail: Promise<ListPage>;
  touched: number;
}

export interface ListStreams {
  /**
   * Part `part` of stream `id` of `member`, a listing of `limit` per page
   * after `after`: read now or already. Every part of a stream gives the
   * same `after` and `limit`.
   */
  part(
    request: { member: string; id: string; part: number; after: string | undefined; limit: number },
    read: ReadPage,
  ): Promise<ListPage>;
  readonly size: number;
}

const END: ListPage = { records: Buffer.alloc(0), count: 0 };

export function createListStreams(options: { now?: () => number } = {}): ListStreams {
  const now = options.now ?? Date.now;
  const streams = new Map<string, Stream>();

  const prune = (at: number) => {
    for (const [key, stream] of streams) {
      if (at - stream.touched > STREAM_IDLE_MS || streams.size > MAX_STREAMS) streams.delete(key);
    }
  };

  // The part after `page`, once the page before it has gone out: a store
  // that reads synchronously (SQLite) would otherwise hold that answer back.
  const after = (stream: Stream, page: Promise<ListPage>, read: ReadPage) =>
    page.then(async (previous) => {
      if (previous.next === undefined) return END;
      await new Promise((resolve) => setImmediate(resolve));
      return read(previous.next, stream.limit, previous);
    });

  return {
    get size() {
      return streams.size;
    },
    async part({ member, id, part, after: start, limit }, read) {
      const at = now();
      prune(at);
      const key = `${member}\u0000${id}`;
      let stream = streams.get(key);
      if (!stream) {
        if (part > MAX_LIST_AHEAD) {
          throw new CloudletError(
            'bad-request',
            `listing ${id} is not one this broker knows (part ${part} asked first); list again from the last cursor`,
            true,
          );
        }
        const mine = [...streams].filter(([, kept]) => kept.member === member);
        for (const [old] of mine.slice(0, mine.length - MAX_STREAMS_PER_MEMBER + 1)) {
          streams.delete(old);
        }
        const first = read(start, limit);
        stream = {
          member,
          after: start,
          limit,
          parts: new Map([[0, first]]),
          last: 0,
          tail: first,
          touched: at,
        };
        streams.set(key, stream);
        prune(at);
      } else if (stream.after !== start || stream.limit !== limit) {
        throw new CloudletError(
          'bad-request',
          `part ${part} of listing ${id} gives another cursor or limit than its first part`,
        );
      }
      stream.touched = at;
      if (part > stream.last + MAX_LIST_AHEAD) {
        throw new CloudletError(
          'bad-request',
          `part ${part} of listing ${id} is more than ${MAX_LIST_AHEAD} ahead of the last one read (${stream.last})`,
        );
      }
      while (stream.last < part) {
        stream.tail = after(stream, stream.tail, read);
        stream.last++;
        stream.parts.set(stream.last, stream.tail);
      }
      const page = stream.parts.get(part);
      if (!page) {
        throw new CloudletError(
          'bad-request',
          `part ${part} of listing ${id} was asked for already`,
        );
      }
      stream.parts.delete(part);
      // A part read for nobody (its request lost) fails quietly.
      for (const other of stream.parts.values()) other.catch(() => {});
      return page;
    },
  };
}
