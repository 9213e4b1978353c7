// `helora sweep`: the proof of concept to run before a private fine-tune. A short fine-tune on the
// user's data in fp32 and in the quantized mode (the integers the encrypted mode computes) at
// several activation widths, with the same seed, data order and held-out set; the final held-out
// loss of each width against fp32, the bytes per token each width would cost on the wire, and the
// smallest width whose held-out loss stays within 1% of fp32.
//
// Every run is an ordinary fineTune run folder under `out` (fp32/, bits-4/, ...), so a sweep can be
// resumed run by run and every curve is in its loss.csv.

import { join } from 'node:path';
import { DEFAULT_PARAMS } from '../crypto/params.js';
import type { LlamaConfig } from '../model/config.js';
import { MAX_BITS, MIN_BITS } from '../quant/quantize.js';
import { microBatchRequests, type MaskMode, type ModelDims } from './estimate.js';
import { fineTune, type FineTuneOptions, type FineTuneResult } from './fine-tune.js';
import type { EvalRow } from './run-files.js';

export const SWEEP_DEFAULTS = {
  widths: [4, 5, 6, 8],
  steps: 50,
  evalSplit: 0.1,
  /** Largest relative excess of a width's final held-out loss over fp32's for it to be recommended. */
  tolerance: 0.01,
};

/** The per-run options a sweep shares (the mode, width, folder and held-out cadence are its own). */
export type SweepRunOptions = Omit<FineTuneOptions, 'mode' | 'out' | 'actBits' | 'connectEncrypted' | 'stopAfter' | 'label'>;

export interface SweepOptions extends SweepRunOptions {
  /** Folder of the sweep: one run folder per width and one for fp32. */
  out: string;
  /** Activation widths to try (quantized mode). */
  widths: number[];
  tolerance?: number;
  /** The server's max_tokens and mask mode, for the bytes per token of each width. */
  wire: { maxTokensPerRequest: number; maskMode: MaskMode };
  /** Called before each run (fp32 first, then the widths in ascending order). */
  onRun?: (label: string, index: number, runs: number) => void;
  /** Runs a fine-tune (default: fineTune; the CLI passes one with a progress bar). */
  run?: (o: FineTuneOptions) => Promise<FineTuneResult>;
}

export interface SweepRun {
  /** 'fp32' or 'bits-N'. */
  label: string;
  /** null for fp32. */
  actBits: number | null;
  out: string;
  evals: EvalRow[];
  finalEvalLoss: number;
  /** (loss - fp32 loss) / fp32 loss; 0 for fp32 itself. */
  relGap: number;
  /** Upload + download bytes per micro-batch token with a server at this width (null for fp32: nothing is sent). */
  bytesPerToken: { up: number; down: number } | null;
}

export interface SweepResult {
  fp32: SweepRun;
  widths: SweepRun[];
  tolerance: number;
  /** The smallest width within tolerance of fp32, or null when none is. */
  recommended: number | null;
}

/** Checks the widths: integers in [MIN_BITS, MAX_BITS], no repeats; returned ascending. */
export function checkWidths(widths: readonly number[]): number[] {
  if (widths.length === 0) throw new Error('helora: --widths needs at least one activation width');
  for (const w of widths) {
    if (!Number.isInteger(w) || w < MIN_BITS || w > MAX_BITS) throw new Error(`helora: --widths: ${w} is not an activation width in ${MIN_BITS}..${MAX_BITS}`);
  }
  if (new Set(widths).size !== widths.length) throw new Error(`helora: --widths lists a width twice (${widths.join(',')})`);
  return [...widths].sort((a, b) => a - b);
}

/** Relative excess of a loss over the fp32 reference. */
export function relativeGap(loss: number, fp32Loss: number): number {
  return (loss - fp32Loss) / fp32Loss;
}

/**
 * The smallest width whose final held-out loss is at most (1 + tolerance) times fp32's (a lower
 * loss counts as within); null when none is (or a loss is not a number).
 */
export function pickWidth(runs: readonly { actBits: number; finalEvalLoss: number }[], fp32Loss: number, tolerance: number): number | null {
  if (!Number.isFinite(fp32Loss) || fp32Loss <= 0) return null;
  const ok = runs.filter((r) => Number.isFinite(r.finalEvalLoss) && relativeGap(r.finalEvalLoss, fp32Loss) <= tolerance).map((r) => r.actBits);
  return ok.length > 0 ? Math.min(...ok) : null;
}

/** Wire bytes per token of one training micro-batch of T tokens, with a server at this activation width (estimate.ts counts). */
export function bytesPerTokenAt(dims: ModelDims, actBits: number, T: number, wire: SweepOptions['wire']): { up: number; down: number } {
  const requests = microBatchRequests(dims, T, { params: DEFAULT_PARAMS, actBits, maxTokensPerRequest: wire.maxTokensPerRequest, maskMode: wire.maskMode });
  let up = 0, down = 0;
  for (const r of requests) {
    up += r.uploadBytes;
    down += r.downloadBytes;
  }
  return { up: up / T, down: down / T };
}

function sweepRun(label: string, actBits: number | null, r: FineTuneResult, fp32Loss: number, bytes: SweepRun['bytesPerToken']): SweepRun {
  if (!r.finalEval) throw new Error(`helora: the ${label} run of the sweep ended without its final held-out evaluation`);
  return { label, actBits, out: r.out, evals: r.evals, finalEvalLoss: r.finalEval.loss, relGap: relativeGap(r.finalEval.loss, fp32Loss), bytesPerToken: bytes };
}

/** Runs fp32, then every width in quantized mode, and picks the width (see the top of this file). */
export async function runSweep(o: SweepOptions): Promise<SweepResult> {
  const widths = checkWidths(o.widths);
  const tolerance = o.tolerance ?? SWEEP_DEFAULTS.tolerance;
  if (!(tolerance >= 0 && Number.isFinite(tolerance))) throw new Error(`helora: the tolerance must be a non-negative number, got ${tolerance}`);
  const run = o.run ?? fineTune;
  // What every run shares: the user's options less the sweep's own, and the held-out set (a split by default).
  const { widths: _widths, tolerance: _tolerance, wire: _wire, onRun: _onRun, run: _run, out: _out, ...given } = o;
  const common: SweepRunOptions = {
    ...given,
    ...(o.evalData === undefined ? { evalSplit: o.evalSplit ?? SWEEP_DEFAULTS.evalSplit } : {}),
    // About ten points per held-out curve unless asked otherwise.
    evalEvery: o.evalEvery ?? (o.steps !== undefined ? Math.max(1, Math.ceil(o.steps / 10)) : undefined),
  };
  const total = widths.length + 1;
  o.onRun?.('fp32', 0, total);
  const fp32Result = await run({ ...common, mode: 'fp32', out: join(o.out, 'fp32'), label: 'fp32' });
  const fp32Loss = fp32Result.finalEval?.loss ?? NaN;
  const fp32 = sweepRun('fp32', null, fp32Result, fp32Loss, null);
  const dims: LlamaConfig = fp32Result.config;
  const runs: SweepRun[] = [];
  for (const [i, bits] of widths.entries()) {
    const label = `bits-${bits}`;
    o.onRun?.(label, i + 1, total);
    const r = await run({ ...common, mode: 'quantized', actBits: bits, out: join(o.out, label), label });
    runs.push(sweepRun(label, bits, r, fp32Loss, bytesPerTokenAt(dims, bits, o.batchTokens, o.wire)));
  }
  return { fp32, widths: runs, tolerance, recommended: pickWidth(runs.map((r) => ({ actBits: r.actBits!, finalEvalLoss: r.finalEvalLoss })), fp32Loss, tolerance) };
}
