/**
 * Builds the dashboard once per process: the page as it is, its script
 * bundled for the browser (dagre included, nothing fetched at run time), and
 * its stylesheet. The page loads them from `assets/dashboard.js` and
 * `assets/dashboard.css`, relative to itself.
 */
import { join } from 'node:path';

export interface Dashboard {
  html: string;
  script: string;
  css?: string;
}

let built: Promise<Dashboard> | null = null;

export function buildDashboard(): Promise<Dashboard> {
  built ??= build().catch((error: unknown) => {
    // A failed build is not cached: the next request tries again.
    built = null;
    throw error;
  });
  return built;
}

async function build(): Promise<Dashboard> {
  const dir = import.meta.dir;
  const result = await Bun.build({
    entrypoints: [join(dir, 'app.ts')],
    target: 'browser',
    minify: true,
  });
  const [script] = result.outputs;
  if (!result.success || !script) {
    const logs = result.logs.map((log) => String(log)).join('\n');
    throw new Error(`the dashboard script did not build:\n${logs}`);
  }
  const [html, css] = await Promise.all([
    Bun.file(join(dir, 'index.html')).text(),
    Bun.file(join(dir, 'style.css')).text(),
  ]);
  return { html, script: await script.text(), css };
}
