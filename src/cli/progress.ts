// Training progress on stderr: a cli-progress bar on a terminal, one plain line per step otherwise
// (logs, CI, pipes).

import cliProgress from 'cli-progress';

export interface ProgressInfo {
  step: number;
  loss: number;
  tokensPerSec: number;
  bytesUp: number;
  bytesDown: number;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(0)}s`;
}

/** Progress of one run: the bar appears once the run knows its steps (start). */
export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private t0 = 0;
  private total = 0;
  private startStep = 0;

  constructor(private readonly opts: { label: string; traffic: boolean; stream?: NodeJS.WriteStream; enabled?: boolean }) {}

  start(total: number, startStep: number): void {
    this.total = total;
    this.startStep = startStep;
    this.t0 = performance.now();
    const stream = this.opts.stream ?? process.stderr;
    if (this.opts.enabled !== false && stream.isTTY) {
      const traffic = this.opts.traffic ? ' | up {up} down {down}' : '';
      this.bar = new cliProgress.SingleBar({
        stream,
        format: `${this.opts.label} |{bar}| step {value}/{total} | loss {loss} | {tps} tok/s${traffic} | ETA {eta_formatted}`,
        hideCursor: true,
        etaBuffer: 20,
      }, cliProgress.Presets.shades_classic);
      this.bar.start(total, startStep, { loss: '-', tps: '-', up: '-', down: '-' });
    }
  }

  update(p: ProgressInfo): void {
    if (this.opts.enabled === false) return;
    const payload = { loss: p.loss.toFixed(4), tps: p.tokensPerSec.toFixed(0), up: formatBytes(p.bytesUp), down: formatBytes(p.bytesDown) };
    if (this.bar) {
      this.bar.update(p.step, payload);
      return;
    }
    const elapsed = (performance.now() - this.t0) / 1000;
    const done = p.step - this.startStep;
    const eta = done > 0 ? (elapsed / done) * (this.total - p.step) : NaN;
    const traffic = this.opts.traffic ? ` up ${payload.up} down ${payload.down}` : '';
    (this.opts.stream ?? process.stderr).write(`${this.opts.label} step ${p.step}/${this.total} loss ${payload.loss} ${payload.tps} tok/s${traffic} ETA ${formatSeconds(eta)}\n`);
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
