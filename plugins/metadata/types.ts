/**
 * The broker's "Meta data of files" table (§IV.2.e): which chunk of which
 * file lives on which VM. Names are unique; listing is ordered by name.
 */
import type { FileInfo } from '../../protocol/messages.ts';

export interface FilePage {
  files: FileInfo[];
  /** Pass back as `after` for the next page; absent on the last page. */
  next?: string;
}

export interface MetadataStore {
  /** Backend name, used in errors and logs: `memory`, `redis`, `sqlite`. */
  readonly name: string;
  getFile(name: string): Promise<FileInfo | null>;
  /** Inserts or replaces the record for `file.name`. */
  putFile(file: FileInfo): Promise<void>;
  /** Removes a record; removing a missing one is not an error. */
  deleteFile(name: string): Promise<void>;
  /** Files in name order (UTF-16 code unit order), after the name `after`. */
  listFiles(options: { limit: number; after?: string }): Promise<FilePage>;
  close(): Promise<void>;
}
