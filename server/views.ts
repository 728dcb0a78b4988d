/**
 * Files and VMs as users see them: `ls --json`, `vms --json` and the admin
 * endpoint's `/api/files` and `/api/vms` share these shapes.
 */
import { holdersOf, residencyOf, type VmInfo } from '../protocol/messages.ts';

/**
 * A file as `ls --json` and `GET /api/files` show it: the contract's
 * `{ name, size, sha256, chunks: [{ index, offset, size, vm, sha256 }] }`,
 * with what replicas added: each chunk's `replicas` (every VM holding it,
 * `vm` first) and the file's `residency`.
 */
export function listedFile(file: {
  name: string;
  size: number;
  sha256: string;
  chunks: {
    index: number;
    offset: number;
    size: number;
    vm: string | null;
    replicas?: string[] | undefined;
    sha256: string;
  }[];
}) {
  return {
    name: file.name,
    size: file.size,
    sha256: file.sha256,
    residency: residencyOf(file),
    chunks: file.chunks.map((chunk) => ({
      index: chunk.index,
      offset: chunk.offset,
      size: chunk.size,
      vm: chunk.vm,
      replicas: holdersOf(chunk),
      sha256: chunk.sha256,
    })),
  };
}

/** Exactly the `vms --json` (and `GET /api/vms`) shape of the contract. */
export function vmRow(vm: VmInfo) {
  const { id, address, cpu, memoryFree, memoryEffective, penalty, status, lastSeen } = vm;
  return { id, address, cpu, memoryFree, memoryEffective, penalty, status, lastSeen };
}
