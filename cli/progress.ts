/**
 * A progress bar for put and get — bytes, rate, ETA — on stderr when it is a
 * terminal, through cli-progress; nothing at all otherwise, or with --quiet.
 */
import { formatSize } from './common.ts';

export type Progress = (done: number, total: number) => void;

export interface ProgressBar {
  update: Progress;
  stop(): void;
}

export async function progressBar(
  label: string,
  options: { quiet?: boolean } = {},
): Promise<ProgressBar | null> {
  if (options.quiet || !process.stderr.isTTY) return null;
  // Loaded only for a terminal: it is ~10 ms of every command's start.
  const { default: cliProgress } = await import('cli-progress');
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} {bar} {percentage}% | {value}/{total} | {rate} | ETA {eta_formatted}`,
      formatValue: (value, _options, type) =>
        type === 'value' || type === 'total' ? formatSize(value) : String(value),
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = performance.now();
  let begun = false;
  return {
    update(done, total) {
      if (!begun) {
        bar.start(total, 0, { rate: '…' });
        begun = true;
      }
      const seconds = (performance.now() - started) / 1000;
      bar.update(done, { rate: seconds > 0 ? `${formatSize(done / seconds)}/s` : '…' });
    },
    stop: () => {
      if (begun) bar.stop();
    },
  };
}
