#!/usr/bin/env bun
/**
 * `bun run cloudlet`: a member of the cloudlet on the command line — put,
 * get, ls, rm and vms (§V.D–§V.G).
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { newId } from '../actors/ids.ts';
import { connectLink } from '../actors/link/mqtt-link.ts';
import { createLogger } from '../actors/log.ts';
import { fileSink, fileSource } from '../actors/member/files.ts';
import { createMember, type Member } from '../actors/member/member.ts';
import { type FileInfo, holdersOf, residencyOf } from '../protocol/messages.ts';
import { fileNameProblem } from '../protocol/names.ts';
import { createTopics } from '../protocol/topics.ts';
import { listedFile, vmRow } from '../server/views.ts';
import { generateAccess } from './access.ts';
import {
  Command,
  type ConnectionFlags,
  formatSize,
  mqttAuthOf,
  parseCount,
  runProgram,
  withConnectionOptions,
} from './common.ts';
import { progressBar } from './progress.ts';

const program = withConnectionOptions(
  new Command('cloudlet').description('Store, list, fetch and remove files in a cloudlet.'),
).option('-q, --quiet', 'no progress bar (there is none either when stderr is not a terminal)');

/** Connects as a fresh member, runs `work`, and always disconnects. */
async function asMember<T>(work: (member: Member, signal: AbortSignal) => Promise<T>): Promise<T> {
  const flags = program.opts<ConnectionFlags>();
  const log = createLogger('cloudlet', 'warn');
  const link = await connectLink({
    url: flags.mqtt,
    // With credentials the member id is the user name (an ACL ties the
    // topics to it); without, a fresh one.
    id: flags.mqttUsername ?? `cli-${newId(6).replace(/[-_]/g, 'x')}`,
    uniqueClientId: true,
    brokerId: flags.brokerId,
    topics: createTopics(flags.topicRoot),
    log,
    ...mqttAuthOf(flags),
  });
  const member = createMember({ link, brokerId: flags.brokerId, log });
  const interrupted = new AbortController();
  const onSignal = () => interrupted.abort();
  process.once('SIGINT', onSignal);
  try {
    return await work(member, interrupted.signal);
  } finally {
    process.off('SIGINT', onSignal);
    member.close();
    await link.close();
  }
}

function checkName(name: string) {
  const problem = fileNameProblem(name);
  if (problem) throw new InvalidArgumentError(`invalid file name: ${problem}`);
  return name;
}

/** The cloudlet name `put` gives a file by default: its own, if that is one. */
function nameFromPath(path: string) {
  const name = basename(path);
  const problem = fileNameProblem(name);
  if (problem) {
    // Control characters shown escaped, the rest as the user typed it.
    const shown = name.replace(
      /\p{Cc}/gu,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
    );
    throw new InvalidArgumentError(
      `"${shown}" cannot be a cloudlet name (${problem.replace(/^the name /, 'it ')}): give one with --name`,
    );
  }
  return name;
}

program
  .command('put')
  .description(
    'upload FILE; it is split over the VMs with the most memory and kept in the core too',
  )
  .argument('<file>', 'the file to upload')
  .option('--name <name>', 'name in the cloudlet (default: the file name)', checkName)
  .option('--overwrite', 'replace a file of the same name')
  .action(async (path: string, options: { name?: string; overwrite?: boolean }) => {
    const name = options.name ?? nameFromPath(path);
    const source = await fileSource(path);
    const bar = await progressBar(`put ${name}`, program.opts<{ quiet?: boolean }>());
    try {
      const file = await asMember((member, signal) =>
        member.put(source, name, {
          overwrite: options.overwrite ?? false,
          signal,
          ...(bar ? { onProgress: bar.update } : {}),
        }),
      );
      bar?.stop();
      console.log(
        `stored ${file.name} (${formatSize(file.size)}, sha256 ${file.sha256}) as ${describeChunks(file)}`,
      );
    } finally {
      bar?.stop();
      await source.close();
    }
  });

program
  .command('get')
  .description('download NAME; the whole file is verified against its sha256 before it is kept')
  .argument('<name>', 'the file to download', checkName)
  .option(
    '-o, --output <path>',
    'where to write it (default: NAME in this directory; replaced if present)',
  )
  .action(async (name: string, options: { output?: string }) => {
    const path = options.output ?? name;
    const sink = await fileSink(path);
    const bar = await progressBar(`get ${name}`, program.opts<{ quiet?: boolean }>());
    try {
      const result = await asMember((member, signal) =>
        member.get(name, sink, { signal, ...(bar ? { onProgress: bar.update } : {}) }),
      );
      bar?.stop();
      await sink.commit();
      const sources = result.chunks
        .map(
          (chunk) =>
            `#${chunk.index} from ${chunk.source === 'edge' ? (result.file?.chunks[chunk.index]?.vm ?? 'the edge') : 'the core'}`,
        )
        .join(', ');
      console.log(
        `wrote ${path} (${formatSize(result.file?.size ?? 0)}, sha256 verified; ${sources})`,
      );
    } catch (error) {
      bar?.stop();
      await sink.discard();
      throw error;
    }
  });

program
  .command('ls')
  .description('list the files: names, sizes, sha256 and where each chunk lives')
  .option(
    '--json',
    'print a JSON array: { name, size, sha256, residency, chunks: [{ index, offset, size, vm, replicas, sha256 }] }',
  )
  .option('--limit <n>', 'at most this many files (one page)', parseCount(1, 10_000))
  .option('--cursor <cursor>', 'continue after the page that printed this cursor')
  .action(async (options: { json?: boolean; limit?: number; cursor?: string }) => {
    const paged = options.limit !== undefined || options.cursor !== undefined;
    const { files, nextCursor } = await asMember(async (member) =>
      paged
        ? member.list({
            ...(options.limit !== undefined ? { limit: options.limit } : {}),
            ...(options.cursor !== undefined ? { cursor: options.cursor } : {}),
          })
        : { files: await member.listAll(), nextCursor: undefined },
    );
    if (options.json) {
      console.log(JSON.stringify(files.map(listedFile), null, 2));
      if (nextCursor) process.stderr.write(`next page: --cursor ${nextCursor}\n`);
      return;
    }
    if (files.length === 0) console.log('no files');
    else {
      printTable(
        ['NAME', 'SIZE', 'SHA256', 'RESIDENCY', 'CHUNKS'],
        files.map((file) => [
          file.name,
          formatSize(file.size),
          file.sha256.slice(0, 12),
          residencyOf(file),
          describeChunks(file),
        ]),
      );
    }
    if (nextCursor) console.log(`next page: --cursor ${nextCursor}`);
  });

program
  .command('rm')
  .description('remove NAME from the VMs, the core and the list')
  .argument('<name>', 'the file to remove', checkName)
  .action(async (name: string) => {
    await asMember((member) => member.remove(name));
    console.log(`removed ${name}`);
  });

program
  .command('vms')
  .description("show the broker's VM table: memory, penalty and status of each VM")
  .option(
    '--json',
    'print a JSON array: { id, address, cpu, memoryFree, memoryEffective, penalty, status, lastSeen }',
  )
  .action(async (options: { json?: boolean }) => {
    const vms = await asMember((member) => member.vms());
    if (options.json) {
      console.log(JSON.stringify(vms.map(vmRow), null, 2));
      return;
    }
    if (vms.length === 0) console.log('no VMs have joined');
    else {
      printTable(
        ['ID', 'ADDRESS', 'STATUS', 'PENALTY', 'FREE', 'EFFECTIVE', 'CPU', 'LAST SEEN'],
        vms.map((vm) => [
          vm.id,
          vm.address,
          vm.status,
          String(vm.penalty),
          formatSize(vm.memoryFree),
          formatSize(vm.memoryEffective),
          `${vm.cpu.cores} cores, load ${vm.cpu.load.toFixed(2)}`,
          vm.lastSeen,
        ]),
      );
    }
  });

program
  .command('acl')
  .description('write a Mosquitto password file and ACL for the broker, the VMs and the clients')
  .requiredOption('--member <id...>', 'VMs and clients, by member id (their MQTT user names)')
  .option('--out <dir>', 'where to write passwd, acl and credentials.json', '.')
  .action(async (options: { member: string[]; out: string }) => {
    const flags = program.opts<ConnectionFlags>();
    const access = generateAccess({
      root: flags.topicRoot,
      brokerUser: flags.brokerId,
      members: options.member,
    });
    mkdirSync(options.out, { recursive: true });
    const write = (name: string, text: string) => {
      const path = join(options.out, name);
      writeFileSync(path, text, { mode: 0o600 });
      chmodSync(path, 0o600);
      return path;
    };
    const passwd = write('passwd', access.passwd);
    const acl = write('acl', access.acl);
    const credentials = write(
      'credentials.json',
      `${JSON.stringify(access.credentials, null, 2)}\n`,
    );
    console.log(
      [
        `wrote ${passwd}, ${acl} and ${credentials} (keep the last one secret)`,
        'in mosquitto.conf:',
        '  allow_anonymous false',
        `  password_file ${resolve(passwd)}`,
        `  acl_file ${resolve(acl)}`,
        "and under each listener, so that no member can take over another's MQTT session",
        '(at the cost of one connection per user: one `cloudlet` command at a time each):',
        '  use_username_as_clientid true',
        'each member connects with --mqtt-username <its id> --mqtt-password <its password from credentials.json>',
      ].join('\n'),
    );
  });

function describeChunks(file: FileInfo) {
  return file.chunks
    .map((chunk) => {
      const holders = holdersOf(chunk);
      return `#${chunk.index} ${formatSize(chunk.size)} on ${holders.length > 0 ? holders.join('+') : 'the core only'}`;
    })
    .join(', ');
}

function printTable(header: string[], rows: string[][]) {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  for (const row of [header, ...rows]) {
    console.log(
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join('  ')
        .trimEnd(),
    );
  }
}

await runProgram(program);
