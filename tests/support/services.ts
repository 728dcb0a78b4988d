/**
 * The service harness (bench/harness/services.ts) for tests, with hooks that
 * start a service for a file or describe block and stop it after.
 */
import { afterAll, beforeAll } from 'bun:test';
import {
  type MosquittoOptions,
  type RedisOptions,
  type ServiceHandle,
  type ServiceName,
  startMosquitto,
  startRedis,
} from '../../bench/harness/services.ts';

export * from '../../bench/harness/services.ts';

/**
 * Starts mosquitto in this file's (or describe block's) beforeAll and disposes
 * of it in afterAll, even when tests fail. The handle is usable from beforeAll on.
 */
export function useMosquitto(options?: MosquittoOptions): ServiceHandle {
  return useService('mosquitto', 'useMosquitto', () => startMosquitto(options));
}

/** useMosquitto() for redis-server. */
export function useRedis(options?: RedisOptions): ServiceHandle {
  return useService('redis-server', 'useRedis', () => startRedis(options));
}

function useService(
  name: ServiceName,
  helper: string,
  start: () => Promise<ServiceHandle>,
): ServiceHandle {
  let service: ServiceHandle | undefined;
  const current = () => {
    if (service) return service;
    throw new Error(
      `${helper}() handle used before its beforeAll ran: read it inside tests or hooks, not while the file loads`,
    );
  };
  beforeAll(async () => {
    service = await start();
  });
  afterAll(async () => {
    await service?.[Symbol.asyncDispose]();
  });
  return {
    name,
    get port() {
      return current().port;
    },
    get url() {
      return current().url;
    },
    get pid() {
      return current().pid;
    },
    get running() {
      return current().running;
    },
    stop: () => current().stop(),
    kill: () => current().kill(),
    pause: () => current().pause(),
    resume: () => current().resume(),
    restart: () => current().restart(),
    output: () => current().output(),
    [Symbol.asyncDispose]: () => current()[Symbol.asyncDispose](),
  };
}
