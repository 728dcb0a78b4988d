#!/usr/bin/env bun
import { hostname } from 'node:os';
import { InvalidArgumentError } from 'commander';
/**
 * `bun run vm`: a storage VM of the cloudlet (§IV, §V.A–§V.C). It lends
 * `--memory` bytes of its chunk store to the cloudlet.
 */
import type { InspectionEvent } from 'xstate';
import { createLogger } from '../actors/log.ts';
import { createVm, joined } from '../actors/vm/vm.ts';
import { createChunkStore } from '../plugins/chunk-store/index.ts';
import { isMemberId } from '../protocol/topics.ts';
import {
  Command,
  type ConnectionFlags,
  mqttAuthOf,
  Option,
  parseCount,
  parseSize,
  runProgram,
  withConnectionOptions,
} from './common.ts';

interface VmFlags extends ConnectionFlags {
  id: string;
  address?: string;
  store: string;
  memory: number;
  count: number;
  idPrefix?: string;
  inspect?: string | true;
}

const defaultId =
  hostname()
    .replace(/[^A-Za-z0-9_.-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '') || 'vm';

const program = withConnectionOptions(
  new Command('vm').description(
    'Run a cloudlet VM: it joins the broker and keeps chunks in its store, in RAM.',
  ),
)
  .addOption(
    new Option('--id <id>', 'member id of this VM (1-64 letters, digits, . _ -)')
      .env('CLOUDLET_VM_ID')
      .default(defaultId)
      .argParser((value) => {
        if (!isMemberId(value))
          throw new InvalidArgumentError(
            `"${value}" is not a valid id: use 1-64 letters, digits, ".", "_" or "-"`,
          );
        return value;
      }),
  )
  .addOption(
    new Option(
      '--address <ip>',
      "address reported to the broker (default: this host's LAN IPv4)",
    ).env('CLOUDLET_VM_ADDRESS'),
  )
  .addOption(
    new Option('--store <spec>', 'chunk store: memory or redis://host:port[/db]')
      .env('CLOUDLET_STORE')
      .default('memory'),
  )
  .addOption(
    new Option('--memory <size>', 'memory lent to the cloudlet by each VM, e.g. 512MiB')
      .env('CLOUDLET_MEMORY')
      .default(256 * 1024 * 1024, '256MiB')
      .argParser(parseSize),
  )
  .addOption(
    new Option('--count <n>', 'run N VMs in this process, each with its own connection and store')
      .env('CLOUDLET_VM_COUNT')
      .default(1)
      .argParser(parseCount(1, 10_000)),
  )
  .addOption(
    new Option('--id-prefix <prefix>', 'with --count: the ids are PREFIX1 … PREFIXN')
      .env('CLOUDLET_VM_ID_PREFIX')
      .argParser((value) => {
        if (!isMemberId(`${value}1`))
          throw new InvalidArgumentError(`"${value}" cannot start a valid id`);
        return value;
      }),
  )
  .option(
    '--inspect [url]',
    'send statechart inspection events to the Stately inspector (a ws:// URL, or a local inspector server)',
  )
  .action(async () => {
    const flags = program.opts<VmFlags>();
    const stately = flags.inspect
      ? // Loaded only when asked for: the inspector's packages cost every node memory.
        (await import('../server/stately.ts')).startStatelyInspection(
          flags.inspect === true ? undefined : flags.inspect,
        )
      : null;
    if (stately) createLogger('vm').info({ url: stately.url }, 'statechart inspection on');
    const ids =
      flags.count === 1 && flags.idPrefix === undefined
        ? [flags.id]
        : Array.from(
            { length: flags.count },
            (_, i) => `${flags.idPrefix ?? `${flags.id}-`}${i + 1}`,
          );
    let conflict: (problem: string) => void = () => {};
    const conflicted = new Promise<string>((resolve) => {
      conflict = resolve;
    });
    const vms = await Promise.all(
      ids.map((id) => startOne(flags, id, (problem) => conflict(problem), stately?.inspect)),
    );
    const problem = await Promise.race([
      conflicted,
      new Promise<null>((resolve) => {
        const stop = () => resolve(null);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      }),
    ]);
    await Promise.all(vms.map((vm) => vm.leave()));
    stately?.stop();
    // Exit 1 with the reason rather than fight over the id for ever.
    if (problem) throw new Error(problem);
  });

async function startOne(
  flags: VmFlags,
  id: string,
  onIdConflict: (problem: string) => void,
  inspect?: (event: InspectionEvent) => void,
) {
  const log = createLogger(`vm ${id}`);
  const store = createChunkStore(flags.store, {
    namespace: id,
    onError: (error) => log.warn({ err: error.message }, 'chunk store connection problem'),
  });
  // Fail fast, with the store's own words, when it cannot be reached.
  await store.usedBytes();
  const vm = await createVm({
    mqttUrl: flags.mqtt,
    mqtt: mqttAuthOf(flags),
    topicRoot: flags.topicRoot,
    brokerId: flags.brokerId,
    id,
    ...(flags.address !== undefined ? { address: flags.address } : {}),
    store,
    memory: flags.memory,
    log,
    onIdConflict,
    ...(inspect ? { inspect } : {}),
  });
  joined(vm, 60_000).then(
    () => log.info({ id }, 'joined the cloudlet'),
    () => log.warn({ id }, 'no answer from the broker yet; still trying'),
  );
  return {
    async leave() {
      log.info('leaving the cloudlet');
      await vm.close();
    },
  };
}

await runProgram(program);
