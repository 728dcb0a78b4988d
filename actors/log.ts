/**
 * Structured logs (pino) on stderr, so that stdout stays for what a command
 * prints: one line a person reads on a terminal (pino-pretty), JSON lines
 * when stderr is a pipe or a file (`CLOUDLET_LOG_FORMAT=json|pretty` says
 * which either way). Level from `CLOUDLET_LOG_LEVEL`, else the caller's
 * default.
 */
import { createRequire } from 'node:module';
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(name: string, defaultLevel: pino.Level = 'info'): Logger {
  const level = process.env.CLOUDLET_LOG_LEVEL ?? defaultLevel;
  const format = process.env.CLOUDLET_LOG_FORMAT ?? (process.stderr.isTTY ? 'pretty' : 'json');
  const destination =
    format === 'pretty' ? prettyStream() : pino.destination({ fd: 2, sync: true });
  return pino({ name, level, base: { name } }, destination);
}

/** pino-pretty, loaded only for a terminal: piped processes never pay for it. */
function prettyStream(): pino.DestinationStream {
  const pretty = createRequire(import.meta.url)('pino-pretty') as (
    options: object,
  ) => pino.DestinationStream;
  return pretty({
    destination: 2,
    sync: true,
    colorize: Boolean(process.stderr.isTTY),
    translateTime: 'HH:MM:ss.l',
    ignore: 'pid,hostname',
    singleLine: true,
  });
}

/** A logger that drops everything, for tests and embedded use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** The `reportChildError` action machines name: an actor failed, the node goes on. */
export function logActorFailure(log: Logger) {
  return (_: unknown, { actorId, error }: { actorId: string; error: unknown }) =>
    log.error(
      { actor: actorId, err: error instanceof Error ? error.message : String(error) },
      'an actor failed',
    );
}
