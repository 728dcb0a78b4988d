/**
 * Structured logs (pino) on stderr, so that stdout stays for what a command
 * prints. Level from `CLOUDLET_LOG_LEVEL`, else the caller's default.
 */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(name: string, defaultLevel: pino.Level = 'info'): Logger {
  const level = process.env.CLOUDLET_LOG_LEVEL ?? defaultLevel;
  return pino({ name, level, base: { name } }, pino.destination({ fd: 2, sync: true }));
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
