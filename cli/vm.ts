#!/usr/bin/env bun
import { hostname } from 'node:os';
import { InvalidArgumentError } from 'commander';
/**
 * `bun run vm`: a storage VM of the cloudlet (§IV, §V.A–§V.C). It lends
 * `--memory` bytes of its chunk store to the cloudlet.
 */
import { createLogger } from '../actors/log.ts';
import { createVm, joined } from '../actors/vm.ts';
import { createChunkStore } from '../plugins/chunk-store/index.ts';
import { isMemberId } from '../protocol/topics.ts';
import {
  Command,
  type ConnectionFlags,
  mqttAuthOf,
  Option,
  parseSize,
  runProgram,
  withConnectionOptions,
} from './common.ts';

interface VmFlags extends ConnectionFlags {
  id: string;
  address?: string;
  store: string;
  memory: number;
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
    new Option('--memory <size>', 'memory lent to the cloudlet, e.g. 512MiB')
      .env('CLOUDLET_MEMORY')
      .default(256 * 1024 * 1024, '256MiB')
      .argParser(parseSize),
  )
  .action(async () => {
    const flags = program.opts<VmFlags>();
    const log = createLogger(`vm ${flags.id}`);
    const store = createChunkStore(flags.store, {
      namespace: flags.id,
      onError: (error) => log.warn({ err: error.message }, 'chunk store connection problem'),
    });
    // Fail fast, with the store's own words, when it cannot be reached.
    await store.usedBytes();
    const vm = await createVm({
      mqttUrl: flags.mqtt,
      mqtt: mqttAuthOf(flags),
      topicRoot: flags.topicRoot,
      brokerId: flags.brokerId,
      id: flags.id,
      ...(flags.address !== undefined ? { address: flags.address } : {}),
      store,
      memory: flags.memory,
      log,
    });
    joined(vm, 60_000).then(
      () => log.info({ id: flags.id }, 'joined the cloudlet'),
      () => log.warn({ id: flags.id }, 'no answer from the broker yet; still trying'),
    );
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    log.info('leaving the cloudlet');
    await vm.close();
  });

await runProgram(program);
