// `helora sweep`: the command around train/sweep.ts. It runs the short fine-tunes with a progress
// bar each, prints the table of held-out loss and bytes per token per activation width, writes
// sweep.json and the held-out curves (sweep.png) into --out, and says which width to train with.

import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { MASK_MODES, type MaskMode } from '../train/estimate.js';
import { TRAIN_DEFAULTS } from '../train/fine-tune.js';
import { writeFileAtomic } from '../train/run-files.js';
import { runSweep, SWEEP_DEFAULTS, type SweepOptions, type SweepResult, type SweepRun } from '../train/sweep.js';
import type { ProjectionName } from '../model/projections.js';
import { DEFAULT_MAX_TOKENS } from '../transport/model-server.js';
import { actBitsArg, addTrainingHyperparameters, fraction, layerList, nonNegativeInt, positiveInt, positiveNumber } from './args.js';
import { writeLossPlot, type Series } from './plot.js';
import { fineTuneWithProgress } from './train.js';

/** Activation widths: a comma-separated list of integers. */
export function widthList(v: string): number[] {
  return v.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(actBitsArg);
}

export interface SweepCliOptions {
  model: string; data: string; out: string; widths: number[]; steps?: number; epochs?: number; batchTokens: number; gradAccum: number; lr: number;
  warmup: number; schedule: 'cosine' | 'linear' | 'constant'; rank: number; alpha: number; dropout: number; targets: ProjectionName[]; layers?: number[];
  seed: number; evalData?: string; evalSplit?: number; evalEvery?: number; maskMode: MaskMode; maxTokensPerRequest: number; resume: boolean;
  checkpointEvery: number; progress: boolean; json: boolean;
}

const pct = (x: number): string => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(2)}%`;

/** The recommendation in words. */
export function recommendation(r: SweepResult): string {
  const tol = `${(100 * r.tolerance).toFixed(2).replace(/\.?0+$/, '')}%`;
  if (r.recommended !== null) return `recommended: --act-bits ${r.recommended} (the smallest width whose final held-out loss is within ${tol} of fp32)`;
  return `no width is within ${tol} of fp32's final held-out loss: none of ${r.widths.map((w) => w.actBits).join(', ')} bits is recommended `
    + '(train longer, try wider activations, or accept the gap in the table)';
}

/** The table of the sweep (fp32 first, then the widths ascending). */
export function formatSweep(r: SweepResult): string {
  const row = (w: SweepRun): string[] => [
    w.actBits === null ? 'fp32' : `${w.actBits} bits`, w.finalEvalLoss.toFixed(4), Math.exp(w.finalEvalLoss).toFixed(3),
    w.actBits === null ? '-' : pct(w.relGap),
    w.bytesPerToken ? String(Math.round(w.bytesPerToken.up)) : '- (local)', w.bytesPerToken ? String(Math.round(w.bytesPerToken.down)) : '-',
  ];
  const rows = [['width', 'held-out loss', 'perplexity', 'vs fp32', 'B/token up', 'B/token down'], row(r.fp32), ...r.widths.map(row)];
  const cols = rows[0]!.map((_, c) => Math.max(...rows.map((x) => x[c]!.length)));
  const lines = rows.map((x) => x.map((cell, c) => (c === 0 ? cell.padEnd(cols[c]!) : cell.padStart(cols[c]!))).join('  '));
  lines.splice(1, 0, cols.map((n) => '-'.repeat(n)).join('  '));
  lines.push('', 'bytes per token: one training micro-batch (forward and backward) with a server quantizing at that width');
  lines.push('(a client --act-bits under the server\'s width keeps the server\'s layout and bytes)');
  lines.push(recommendation(r));
  return lines.join('\n');
}

/** sweep.json: the settings' outcome per run, curves included. */
export function sweepJson(r: SweepResult): Record<string, unknown> {
  const run = (w: SweepRun): Record<string, unknown> => ({
    label: w.label, act_bits: w.actBits, out: w.out, final_eval_loss: w.finalEvalLoss, final_eval_ppl: Math.exp(w.finalEvalLoss), rel_gap_vs_fp32: w.relGap,
    bytes_per_token_up: w.bytesPerToken?.up ?? null, bytes_per_token_down: w.bytesPerToken?.down ?? null,
    eval_curve: w.evals.map((e) => ({ step: e.step, loss: e.loss })),
  });
  return { tolerance: r.tolerance, recommended_act_bits: r.recommended, fp32: run(r.fp32), widths: r.widths.map(run) };
}

/** The held-out curves of every run in one plot. */
export function sweepSeries(r: SweepResult): Series[] {
  return [r.fp32, ...r.widths].map((w) => ({ name: w.actBits === null ? 'fp32' : `${w.actBits} bits`, points: w.evals.map((e) => [e.step, e.loss] as [number, number]) }));
}

export async function runSweepCommand(o: SweepCliOptions, say: (l: string) => void): Promise<{ result: SweepResult; json: string; png: string }> {
  const out = resolve(o.out);
  // (the flags of the sweep itself stay out of the runs' options)
  const { maskMode, maxTokensPerRequest, progress, json: _json, ...runFlags } = o;
  const opts: SweepOptions = {
    ...TRAIN_DEFAULTS, ...runFlags, out, steps: o.steps ?? (o.epochs === undefined ? SWEEP_DEFAULTS.steps : undefined),
    wire: { maxTokensPerRequest, maskMode },
    say: (l) => say(l),
    onRun: (label, i, n) => say(`helora sweep: run ${i + 1}/${n}: ${label} (${join(out, label)})`),
    run: (ro) => fineTuneWithProgress(ro, progress),
  };
  const result = await runSweep(opts);
  const json = join(out, 'sweep.json');
  const png = join(out, 'sweep.png');
  writeFileAtomic(json, JSON.stringify(sweepJson(result), null, 2) + '\n');
  writeLossPlot(png, sweepSeries(result), 'held-out loss per activation width');
  return { result, json, png };
}

export function registerSweepCommand(program: Command): void {
  addTrainingHyperparameters(program
    .command('sweep')
    .description('before a private fine-tune: short fine-tunes in fp32 and at several activation widths (quantized mode) on your data; held-out loss and bytes per token per width, and the width to use')
    .requiredOption('--model <dir>', 'model folder with its projection weights (every run is local)')
    .requiredOption('--data <file>', 'training data (the formats helora train reads)')
    .requiredOption('--out <dir>', 'output folder: one run folder per width (bits-N/) and fp32/, sweep.json, sweep.png')
    .option('--widths <list>', 'activation widths to try', widthList, SWEEP_DEFAULTS.widths)
    .option('--steps <n>', `optimizer steps per run (default ${SWEEP_DEFAULTS.steps} when --epochs is not given)`, positiveInt)
    .option('--epochs <n>', 'or epochs over the data per run', positiveNumber)
    .option('--eval-data <file>', `held-out data (default: --eval-split ${SWEEP_DEFAULTS.evalSplit} of --data)`)
    .option('--eval-split <f>', 'hold out this fraction of the --data records (seeded by --seed)', fraction)
    .option('--eval-every <n>', 'steps between held-out evaluations (default: a tenth of --steps)', positiveInt))
    .option('--layers <list>', 'decoder layers that get LoRA, e.g. 8-15 (default: all)', layerList)
    .option('--seed <n>', 'seed of the LoRA init, data order, dropout and held-out split (the same in every run)', nonNegativeInt, TRAIN_DEFAULTS.seed)
    .addOption(new Option('--mask-mode <mode>', 'mask mode of the bytes per token (table: the server\'s public mask tables)').choices(MASK_MODES as string[]).default('table'))
    .option('--max-tokens-per-request <n>', "the server's max_tokens, for the bytes per token", positiveInt, DEFAULT_MAX_TOKENS)
    .option('--resume', 'continue the runs from their checkpoints in --out', false)
    .option('--checkpoint-every <n>', 'steps between checkpoints of each run', positiveInt, TRAIN_DEFAULTS.checkpointEvery)
    .option('--no-progress', 'no progress output')
    .option('--json', 'print one JSON object (the content of sweep.json) instead of the table', false)
    .action(async (o: SweepCliOptions) => {
      const say = (l: string): void => { process.stderr.write(l + '\n'); };
      const { result, json, png } = await runSweepCommand(o, say);
      if (o.json) process.stdout.write(JSON.stringify(sweepJson(result)) + '\n');
      else process.stdout.write(`${formatSweep(result)}\nwrote ${json} and ${png}\n`);
    });
}
