/**
 * What every command shares: the MQTT options (flags win over CLOUDLET_*
 * environment variables), size and number parsing, and one-line errors with
 * the exit codes docs/operations.md documents (1: the operation failed, 2: usage).
 */
import { readFileSync } from 'node:fs';
import bytes from 'bytes-iec';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { LinkError } from '../actors/link/mqtt-link.ts';
import type { MqttAuth } from '../actors/options.ts';
import { CloudletError } from '../machines/shared.ts';
import { ChunkStoreError } from '../plugins/chunk-store/types.ts';
import { CoreCloudError } from '../plugins/core-cloud/types.ts';

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export interface ConnectionFlags {
  mqtt: string;
  topicRoot: string;
  brokerId: string;
  mqttUsername?: string;
  mqttPassword?: string;
  mqttCa?: string;
  mqttVersion: 4 | 5;
}

/** Adds the options every member needs to reach the cloudlet. */
export function withConnectionOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--mqtt <url>', 'MQTT server URL')
        .env('CLOUDLET_MQTT_URL')
        .default('mqtt://127.0.0.1:1883'),
    )
    .addOption(
      new Option('--topic-root <root>', 'topic root shared by the cloudlet')
        .env('CLOUDLET_TOPIC_ROOT')
        .default('cloudlet'),
    )
    .addOption(
      new Option('--broker-id <id>', "the broker's member id")
        .env('CLOUDLET_BROKER_ID')
        .default('broker'),
    )
    .addOption(new Option('--mqtt-username <name>', 'MQTT user name').env('CLOUDLET_MQTT_USERNAME'))
    .addOption(
      new Option('--mqtt-password <secret>', 'MQTT password').env('CLOUDLET_MQTT_PASSWORD'),
    )
    .addOption(
      new Option(
        '--mqtt-ca <file>',
        'PEM certificate(s) to trust for an mqtts:// server (default: the system CAs)',
      ).env('CLOUDLET_MQTT_CA'),
    )
    .addOption(
      new Option('--mqtt-version <level>', 'MQTT protocol level: 4 (3.1.1) or 5')
        .env('CLOUDLET_MQTT_VERSION')
        .choices(['4', '5'])
        .default(4)
        .argParser((value) => (value === '5' ? 5 : 4)),
    );
}

export function mqttAuthOf(flags: ConnectionFlags): MqttAuth {
  let ca: Buffer | undefined;
  if (flags.mqttCa) {
    try {
      ca = readFileSync(flags.mqttCa);
    } catch (error) {
      throw new Error(
        `cannot read the MQTT CA ${flags.mqttCa}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      );
    }
  }
  return {
    protocolVersion: flags.mqttVersion,
    ...(ca ? { ca } : {}),
    ...(flags.mqttUsername !== undefined ? { username: flags.mqttUsername } : {}),
    ...(flags.mqttPassword !== undefined ? { password: flags.mqttPassword } : {}),
  };
}

/** `512MiB`, `1.5GiB`, `300MB`, `4096`: a whole, non-negative number of bytes. */
export function parseSize(text: string): number {
  const value = bytes.parse(text.trim());
  if (value === null || !Number.isFinite(value) || value < 0) {
    throw new InvalidArgumentError(`"${text}" is not a size; use e.g. 4096, 300MB, 512MiB or 1GiB`);
  }
  return Math.floor(value);
}

/** `90s`, `5m`, `1h`, `1500ms`, `1500` (ms), or `off`: milliseconds, or null for never. */
/**
 * What `off` (or `never`) parses to. Not null: commander turns an option
 * parser's null into '' (which then passed for a duration of 0, or none).
 */
export const OFF = 'off';

export function parseDuration(text: string): number | typeof OFF {
  const trimmed = text.trim().toLowerCase();
  if (trimmed === 'off' || trimmed === 'never') return OFF;
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(trimmed);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match?.[2] ?? 'ms'] ?? 1;
  const value = match ? Math.round(Number(match[1]) * unit) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(
      `"${text}" is not a duration; use e.g. 1500ms, 90s, 5m, 1h or off`,
    );
  }
  return value;
}

export function parseCount(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`"${text}" is not a whole number from ${min} to ${max}`);
    }
    return value;
  };
}

/** `3.0 MiB` */
export function formatSize(size: number): string {
  return bytes.format(size, { mode: 'binary', decimalPlaces: 1 }) ?? `${size} B`;
}

/**
 * Parses argv with one-line usage errors (exit 2) instead of commander's
 * default, and runs the command; a failure prints one line (exit 1).
 */
export async function runProgram(program: Command, argv = process.argv): Promise<void> {
  let reported = false;
  const output = {
    writeErr: (text: string) => {
      reported = true;
      // Commander's own errors arrive as "error: …"; keep them one line.
      const line = text
        .replace(/^error: /, '')
        .trim()
        .split('\n')[0];
      process.stderr.write(`${program.name()}: ${line} (see --help)\n`);
    },
  };
  for (const command of [program, ...program.commands])
    command.exitOverride().configureOutput(output);
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version exit through here with code 0; a usage error
      // raised by an action itself has not been printed yet.
      if (error.exitCode !== 0 && !reported)
        process.stderr.write(`${program.name()}: ${describeError(error)} (see --help)\n`);
      process.exit(error.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    process.stderr.write(`${program.name()}: ${describeError(error)}\n`);
    process.exit(EXIT_FAILURE);
  }
}

/** One line a user can act on; no stack traces. */
export function describeError(error: unknown): string {
  if (error instanceof CloudletError) return error.message;
  if (
    error instanceof LinkError ||
    error instanceof ChunkStoreError ||
    error instanceof CoreCloudError
  ) {
    return error.message;
  }
  if (error instanceof Error) return error.message.split('\n')[0] ?? 'failed';
  return String(error);
}

export { Command, Option };
