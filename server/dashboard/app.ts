/**
 * The dashboard page: the VM table, transfers and files, and the live
 * statechart visualizer, fed by `/api/*` and the `/api/events` stream. The
 * admin token, when the endpoint needs one, comes from the URL fragment
 * (`#token=…`) or the form shown on a 401, and goes with every request.
 */
import type { AdminEvent, LiveActor, MachineGraph, TransferView, VmInfo } from '../contract.ts';
import { eventName } from './event-names.ts';
import { layoutToFit } from './layout.ts';
import { adminEvent, applyActorEvent, edgesTaken, pickerOrder, sseParser } from './live.ts';
import { statechartSvg } from './render.ts';
import {
  fileRows,
  type ListedFile,
  type LogEntry,
  leafStates,
  logItems,
  pickerOptions,
  placementLegend,
  transferRows,
  vmRows,
} from './views.ts';

const REFRESH_MS = 5000;
const LOG_LENGTH = 20;
const FLASH_MS = 2500;
/** The chart panel's height in CSS pixels (`.chart { max-height }`). */
const CHART_HEIGHT = 544;

const page = {
  token: tokenFromFragment() ?? sessionStorage.getItem('cloudlet-token'),
  vms: [] as VmInfo[],
  transfers: [] as TransferView[],
  files: [] as ListedFile[],
  actors: new Map<string, LiveActor>(),
  machines: new Map<string, MachineGraph>(),
  /** The chosen actor, kept (marked stopped) after it stops until another is chosen. */
  selected: null as LiveActor | null,
  logs: new Map<string, LogEntry[]>(),
};

const $ = <T extends Element = HTMLElement>(selector: string) => {
  const element = document.querySelector<T>(selector);
  if (!element) throw new Error(`the page has no ${selector}`);
  return element;
};

function tokenFromFragment(): string | null {
  const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  return match?.[1] ? decodeURIComponent(match[1]) : null;
}

function authHeaders(): Record<string, string> {
  return page.token ? { Authorization: `Bearer ${page.token}` } : {};
}

class Unauthorized extends Error {}

async function api<T>(path: string): Promise<T> {
  const response = await fetch(path, { headers: authHeaders() });
  if (response.status === 401) {
    askForToken();
    throw new Unauthorized(`${path} needs the admin token`);
  }
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return (await response.json()) as T;
}

/** Shows the token form; settles when a token is given (one wait for every asker). */
let tokenWait: { promise: Promise<void>; given: () => void } | null = null;

function askForToken(): Promise<void> {
  $('#token-form').hidden = false;
  if (!tokenWait) {
    let given = () => {};
    const promise = new Promise<void>((resolve) => {
      given = resolve;
    });
    tokenWait = { promise, given };
  }
  return tokenWait.promise;
}

function notice(text: string) {
  $('#notice').textContent = text;
}

// ------------------------------------------------------------------ tables

function showVms() {
  $('#vm-rows').innerHTML = vmRows(page.vms);
  $('#vm-empty').hidden = page.vms.length > 0;
}

function showTransfers() {
  $('#transfer-rows').innerHTML = transferRows(page.transfers);
  $('#transfer-empty').hidden = page.transfers.length > 0;
}

function showFiles() {
  $('#file-rows').innerHTML = fileRows(page.files);
  $('#legend').innerHTML = placementLegend(page.files);
  $('#file-empty').hidden = page.files.length > 0;
}

async function refresh(what: 'vms' | 'files' | 'transfers') {
  try {
    if (what === 'vms') page.vms = await api<VmInfo[]>('api/vms');
    if (what === 'files') page.files = await api<ListedFile[]>('api/files');
    if (what === 'transfers') page.transfers = await api<TransferView[]>('api/transfers');
    ({ vms: showVms, files: showFiles, transfers: showTransfers })[what]();
  } catch (error) {
    if (!(error instanceof Unauthorized)) notice(`could not load ${what}: ${String(error)}`);
  }
}

// -------------------------------------------------------------- visualizer

let shownOptions = '';

function showPicker() {
  const actors = pickerOrder(page.actors.values());
  const selected = page.selected;
  if (selected && !page.actors.has(selected.id)) actors.unshift(selected);
  const options = pickerOptions(actors, selected?.id ?? null);
  // Rewritten only when the list changes, so an open picker is left alone.
  if (options !== shownOptions) $('#actor-picker').innerHTML = options;
  shownOptions = options;
  $('#actor-status').textContent = selected && selected.status !== 'active' ? selected.status : '';
}

function select(actor: LiveActor | null) {
  page.selected = actor;
  showPicker();
  const graph = actor ? page.machines.get(actor.machine) : undefined;
  const chart = $('#chart');
  // Laid out to be read at the panel's size: across, or down when that is larger.
  chart.innerHTML = graph
    ? statechartSvg(graph, layoutToFit(graph, chart.clientWidth || 900, CHART_HEIGHT))
    : '';
  $('#machine-description').textContent = graph?.description ?? '';
  showActive();
  showLog();
}

function showActive() {
  const active = new Set(page.selected?.state ?? []);
  for (const g of document.querySelectorAll('#chart [data-state-id]')) {
    g.classList.toggle('active', active.has(g.getAttribute('data-state-id') ?? ''));
  }
}

function showLog() {
  $('#transition-log').innerHTML = logItems(page.logs.get(page.selected?.id ?? '') ?? []);
}

const flashing = new WeakMap<Element, ReturnType<typeof setTimeout>>();

function flash(edgeIds: string[]) {
  for (const id of edgeIds) {
    const edge = document.querySelector(`#chart [data-edge-id="${CSS.escape(id)}"]`);
    if (!edge) continue;
    clearTimeout(flashing.get(edge));
    edge.classList.remove('flash');
    // Read layout so that the animation starts again when the class returns.
    void edge.getBoundingClientRect();
    edge.classList.add('flash');
    flashing.set(
      edge,
      setTimeout(() => edge.classList.remove('flash'), FLASH_MS),
    );
  }
}

function onTransition({ actor, event, at }: { actor: LiveActor; event: string; at: string }) {
  const before = page.actors.get(actor.id)?.state ?? [];
  const graph = page.machines.get(actor.machine);
  const invokes = new Map(
    graph?.nodes.flatMap((n) => n.invoke.map((i) => [i.id, i.src] as const)) ?? [],
  );
  const log = page.logs.get(actor.id) ?? [];
  log.push({ at, event: eventName(event, invokes), state: leafStates(actor.machine, actor.state) });
  page.logs.set(actor.id, log.slice(-LOG_LENGTH));
  if (page.selected?.id !== actor.id) return;
  page.selected = actor;
  showActive();
  showLog();
  if (graph) flash(edgesTaken(graph, before, actor.state, event));
}

function onEvent(event: AdminEvent) {
  switch (event.type) {
    case 'vms':
      page.vms = event.data;
      showVms();
      return;
    case 'transfers':
      page.transfers = event.data;
      showTransfers();
      return;
    case 'transition':
      onTransition(event.data);
      break;
    case 'stopped':
      page.logs.delete(event.data.id);
      if (page.selected?.id === event.data.id) {
        page.selected = { ...page.selected, status: 'stopped' };
      }
      break;
    case 'actor':
      break;
  }
  page.actors = applyActorEvent(page.actors, event);
  showPicker();
}

async function loadActors() {
  page.actors = new Map((await api<LiveActor[]>('api/actors')).map((a) => [a.id, a]));
  const current = page.selected && page.actors.get(page.selected.id);
  const broker = [...page.actors.values()].find((a) => a.machine === 'broker');
  select(current ?? page.selected ?? broker ?? pickerOrder(page.actors.values())[0] ?? null);
}

// ------------------------------------------------------------------ stream

async function followEvents() {
  let backoff = 1000;
  for (;;) {
    try {
      const response = await fetch('api/events', {
        headers: { ...authHeaders(), Accept: 'text/event-stream' },
      });
      if (response.status === 401) {
        $('#connection').textContent = 'needs the admin token';
        await askForToken();
        continue;
      }
      if (!response.ok || !response.body) throw new Error(`answered ${response.status}`);
      const connection = $('#connection');
      connection.textContent = 'live';
      connection.classList.add('live');
      backoff = 1000;
      // Whatever happened while the stream was down.
      await Promise.all([loadActors(), refresh('vms'), refresh('transfers')]);
      const parser = sseParser((message) => {
        const event = adminEvent(message);
        if (event) onEvent(event);
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
      throw new Error('the stream ended');
    } catch (error) {
      const connection = $('#connection');
      connection.classList.remove('live');
      connection.textContent = `reconnecting in ${backoff / 1000} s (${(error as Error).message})`;
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, 30_000);
    }
  }
}

async function start() {
  $('#token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const token = String(new FormData(form).get('token') ?? '').trim();
    if (!token) return;
    page.token = token;
    sessionStorage.setItem('cloudlet-token', token);
    form.hidden = true;
    notice('');
    tokenWait?.given();
    tokenWait = null;
    void Promise.all([loadMachines(), refresh('files')]);
  });
  $('#actor-picker').addEventListener('change', (event) => {
    const id = (event.currentTarget as HTMLSelectElement).value;
    select(page.actors.get(id) ?? (page.selected?.id === id ? page.selected : null));
  });
  $<HTMLInputElement>('#fit').addEventListener('change', (event) => {
    $('#chart').classList.toggle('fitted', (event.currentTarget as HTMLInputElement).checked);
  });
  setInterval(() => {
    void refresh('files');
    void refresh('vms');
  }, REFRESH_MS);
  await Promise.all([loadMachines(), refresh('files')]);
  await followEvents();
}

async function loadMachines() {
  try {
    const { machines } = await api<{ machines: MachineGraph[] }>('api/machines');
    page.machines = new Map(machines.map((m) => [m.id, m]));
    if (page.selected) select(page.selected);
  } catch (error) {
    if (!(error instanceof Unauthorized))
      notice(`could not load the statecharts: ${String(error)}`);
  }
}

if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', () => void start());
} else {
  void start();
}
