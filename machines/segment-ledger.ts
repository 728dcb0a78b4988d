/**
 * The broker's count of an upload's segments (§V.D steps 4–6): which have
 * come, in order within each chunk, and how many are not yet stored on
 * every VM holding their chunk and in the core. Pure; the chunk writer
 * (actors/broker/upload-writer.ts) asks it about each segment, and the upload
 * statechart hears only what it changes: progress, and the end.
 */
export type SegmentVerdict = { ok: true } | { ok: false; reason: string };

export class SegmentLedger {
  /** Next offset expected within each chunk. */
  private readonly nextOffsets: number[];
  /** Segments received per chunk (an empty chunk is sent as one empty segment). */
  private readonly counts: number[];
  private unstored = 0;

  constructor(private readonly sizes: readonly number[]) {
    this.nextOffsets = sizes.map(() => 0);
    this.counts = sizes.map(() => 0);
  }

  /**
   * A segment of chunk `index` at `offset`, `length` bytes long, arrived:
   * taken if it is the next one of its chunk and stays within it; an empty
   * segment only as the one segment of an empty chunk.
   */
  receive(index: number, offset: number, length: number): SegmentVerdict {
    const size = this.sizes[index];
    const next = this.nextOffsets[index];
    if (size === undefined || next === undefined)
      return { ok: false, reason: `the upload has no chunk ${index}` };
    if (offset !== next)
      return {
        ok: false,
        reason: `unexpected segment: chunk ${index} offset ${offset} (${length} bytes); expected offset ${next}`,
      };
    const first = this.counts[index] === 0;
    const fits = size === 0 ? length === 0 && first : length > 0 && offset + length <= size;
    if (!fits)
      return {
        ok: false,
        reason: `unexpected segment: chunk ${index} offset ${offset} (${length} bytes) does not fit a chunk of ${size}`,
      };
    this.nextOffsets[index] = offset + length;
    this.counts[index] = (this.counts[index] ?? 0) + 1;
    this.unstored++;
    return { ok: true };
  }

  /** A segment taken by `receive` is stored everywhere it goes. */
  stored() {
    if (this.unstored > 0) this.unstored--;
  }

  /** Segments received and not yet stored everywhere. */
  get pending(): number {
    return this.unstored;
  }

  /** Every byte of every chunk has come (and each chunk at least one segment). */
  get complete(): boolean {
    return this.sizes.every(
      (size, index) => this.nextOffsets[index] === size && (this.counts[index] ?? 0) > 0,
    );
  }

  /** Bytes received of each chunk. */
  get next(): readonly number[] {
    return this.nextOffsets;
  }
}
