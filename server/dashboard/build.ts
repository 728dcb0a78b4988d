/**
 * Builds the dashboard once per process: the page as it is, its script
 * bundled for the browser (dagre included, nothing fetched at run time), and
 * its stylesheet. The page loads them from `assets/dashboard.js` and
 * `assets/dashboard.css`, relative to itself.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bundleForBrowser } from '../../runtime/index.ts';

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
  const dir = import.meta.dirname;
  const [script, html, css] = await Promise.all([
    bundleForBrowser(join(dir, 'app.ts')),
    readFile(join(dir, 'index.html'), 'utf8'),
    readFile(join(dir, 'style.css'), 'utf8'),
  ]);
  return { html, script, css };
}
