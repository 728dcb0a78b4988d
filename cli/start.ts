#!/usr/bin/env bun
/**
 * `bun run start`: a whole cloudlet on this machine, with nothing but Bun —
 * the broker serving its own MQTT (aedes) and keeping its files in the data
 * directory, and N VMs lending memory in one process beside it. Ctrl-C stops
 * both; started again, every file is back (from the core until re-read).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { freemem } from 'node:os';
import { join } from 'node:path';
import { runtimeName, scriptCommand } from '../runtime/index.ts';
import { Command, formatSize, Option, parseCount, parseSize, runProgram } from './common.ts';
import { defaultDataDir } from './data-dir.ts';

const MiB = 1024 * 1024;

interface StartFlags {
  vms: number;
  memory?: number;
  dataDir: string;
  mqttPort: number;
  adminPort: number;
}

/** What each VM lends when --memory is not given: a quarter of what is free, shared, 32 MiB–1 GiB each. */
export function defaultVmMemory(count: number, free = freemem()): number {
  const share = Math.floor(free / 4 / count / MiB) * MiB;
  return Math.min(1024 * MiB, Math.max(32 * MiB, share));
}

const program = new Command('start')
  .description(
    'Run a whole cloudlet on this machine: an MQTT server, the broker (files kept in the data directory)\n' +
      'and local VMs. Ctrl-C stops it; started again, every file is back.',
  )
  .addOption(
    new Option('--vms <n>', 'VMs to run')
      .env('CLOUDLET_VMS')
      .default(3)
      .argParser(parseCount(1, 64)),
  )
  .addOption(
    new Option('--memory <size>', 'memory each VM lends')
      .env('CLOUDLET_MEMORY')
      .default(undefined, 'a quarter of the free memory, shared; 32MiB to 1GiB each')
      .argParser(parseSize),
  )
  .addOption(
    new Option('--data-dir <dir>', "where the broker keeps the cloudlet's files")
      .env('CLOUDLET_DATA_DIR')
      .default(defaultDataDir()),
  )
  .addOption(
    new Option('--mqtt-port <port>', 'port of the MQTT server (on 127.0.0.1)')
      .env('CLOUDLET_MQTT_PORT')
      .default(1883)
      .argParser(parseCount(0, 65535)),
  )
  .addOption(
    new Option('--admin-port <port>', 'port of the dashboard and admin endpoint (on 127.0.0.1)')
      .env('CLOUDLET_ADMIN_PORT')
      .default(8080)
      .argParser(parseCount(0, 65535)),
  )
  .action(async () => {
    const flags = program.opts<StartFlags>();
    const memory = flags.memory ?? defaultVmMemory(flags.vms);
    const children: Child[] = [];
    // The VMs first, then the broker and its MQTT server: none of them is
    // left writing to a server that is gone.
    const stopAll = async () => {
      for (const child of [...children].reverse()) {
        child.process.kill('SIGTERM');
        await child.exited;
      }
    };
    let stopping = false;
    const onSignal = () => {
      if (stopping) return;
      stopping = true;
      process.stderr.write('stopping the cloudlet…\n');
      void stopAll().then(() => process.exit(0));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      const broker = await spawnUntil(
        'the broker',
        [
          join(import.meta.dirname, 'broker.ts'),
          '--serve-mqtt',
          `127.0.0.1:${flags.mqttPort}`,
          '--data-dir',
          flags.dataDir,
          '--admin-port',
          String(flags.adminPort),
        ],
        (line) => line.includes('"msg":"ready"'),
        children,
      );
      const ready = JSON.parse(broker.readyLine) as { mqtt: string; admin: string };
      let joined = 0;
      await spawnUntil(
        'the VMs',
        [
          join(import.meta.dirname, 'vm.ts'),
          '--mqtt',
          ready.mqtt,
          '--count',
          String(flags.vms),
          '--id-prefix',
          'vm-',
          '--store',
          'memory',
          '--memory',
          String(memory),
          '--address',
          '127.0.0.1',
        ],
        (line) => line.includes('"msg":"joined the cloudlet"') && ++joined === flags.vms,
        children,
      );
      // The CLI's default server is this one on the default port.
      const run = runtimeName === 'deno' ? 'deno task cloudlet' : 'bun run cloudlet';
      const cloudlet = `${run}${ready.mqtt === 'mqtt://127.0.0.1:1883' ? '' : ` --mqtt ${ready.mqtt}`}`;
      console.log(
        [
          `cloudlet running: ${flags.vms} VMs × ${formatSize(memory)}, MQTT at ${ready.mqtt}`,
          `  files kept in  ${flags.dataDir}`,
          `  dashboard      ${ready.admin}`,
          `  try            ${cloudlet} put FILE`,
          `                 ${cloudlet} ls`,
          'Ctrl-C stops it; started again, every file is back.',
        ].join('\n'),
      );
      // Runs until a signal; a child that stops on its own stops it all.
      const first = await Promise.race(
        children.map((child, i) => child.exited.then((code) => ({ i, code }))),
      );
      if (stopping) return new Promise<never>(() => {});
      await stopAll();
      throw new Error(
        `${first.i === 0 ? 'the broker' : 'the VMs'} stopped (exit ${first.code}); see the lines above`,
      );
    } catch (error) {
      if (!stopping) await stopAll();
      throw error;
    }
  });

/**
 * Starts script ARGS[0] (on this runtime) with its logs on this stderr, until
 * a line satisfies `ready`; an exit before that fails with its last line.
 */
async function spawnUntil(
  what: string,
  args: string[],
  ready: (line: string) => boolean,
  children: Child[],
): Promise<{ readyLine: string }> {
  const [command, ...rest] = scriptCommand(args[0] as string);
  const started = spawn(command as string, [...rest, ...args.slice(1)], {
    stdio: ['ignore', 'inherit', 'pipe'],
    // Info to see `ready` (as JSON); only warnings and errors reach the terminal.
    env: { ...process.env, CLOUDLET_LOG_LEVEL: 'info', CLOUDLET_LOG_FORMAT: 'json' },
  });
  const child: Child = {
    process: started,
    exited: new Promise((resolve) => started.once('exit', (code) => resolve(code ?? 1))),
  };
  children.push(child);
  const lines = readLines(started.stderr as NodeJS.ReadableStream as AsyncIterable<Uint8Array>);
  const show = (line: string) => {
    if (!/^\{"level":[123]\d,/.test(line)) process.stderr.write(`${readable(line)}\n`);
  };
  let last = '';
  for (let next = await lines.next(); !next.done; next = await lines.next()) {
    const line = next.value;
    if (ready(line)) {
      void (async () => {
        for await (const more of lines) show(more);
      })();
      return { readyLine: line };
    }
    show(line);
    last = line;
  }
  const code = await child.exited;
  throw new Error(`${what} did not start (exit ${code})${last ? `: ${lastMessage(last)}` : ''}`);
}

interface Child {
  process: ChildProcess;
  exited: Promise<number>;
}

async function* readLines(stream: AsyncIterable<Uint8Array>) {
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true });
    let newline = buffered.indexOf('\n');
    while (newline >= 0) {
      yield buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      newline = buffered.indexOf('\n');
    }
  }
  if (buffered) yield buffered;
}

/** A child's warning or error as a line to read: `name: message {fields}`. */
function readable(line: string): string {
  try {
    const { level, time, pid, hostname, name, msg, ...fields } = JSON.parse(line) as Record<
      string,
      unknown
    >;
    const rest = Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : '';
    return `${name}: ${msg}${rest}`;
  } catch {
    return line;
  }
}

/** A child's last line: its own one-line error, or a log record's message. */
function lastMessage(line: string): string {
  try {
    const record = JSON.parse(line) as { msg?: string; err?: string };
    return [record.msg, record.err].filter(Boolean).join(': ');
  } catch {
    return line;
  }
}

await runProgram(program);
