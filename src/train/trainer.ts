/**
 * The training loop: gradient accumulation over micro-batches, global-norm clipping, AdamW and a
 * learning-rate schedule. UI-free and transport-free: the model is anything with
 * forwardBackward(), the data any BatchSource, and progress goes out through onStep.
 *
 * Loss weighting. An optimizer step over k micro-batches holding n_i target tokens each
 * minimises the mean over ALL target tokens of the step, N = sum n_i:
 *     L = (sum over all target tokens of their loss) / N
 * so every token weighs the same, however the packer spread them over micro-batches (a plain
 * average of per-batch means would over-weight sparse batches). The k micro-batches are drawn
 * first, N is counted, and each forwardBackward accumulates the gradient of
 * sum(its token losses) / N (the model's lossDenominator option); the reported loss is L.
 */

import type { Parameter } from '../model/parameter.js';
import { AdamW, clipGradNorm, type AdamWOptions, type AdamWState, type LrSchedule } from './optim.js';
import { countLossTokens, type BatchSource, type PackedBatch } from './packing.js';

export interface TrainableAdapter {
  parameters(): Parameter[];
  zeroGrad(): void;
}

export interface TrainableModel<L> {
  /**
   * ACCUMULATES into lora the gradient of sum(token losses of this batch) / lossDenominator
   * (default: the batch's own target count). Returns the mean loss over the batch's targets
   * and their count.
   */
  forwardBackward(batch: PackedBatch, lora: L, opts?: { dropoutSeed?: number; lossDenominator?: number }): Promise<{ loss: number; tokens: number }>;
}

export interface StepEvent {
  /** 1-based index of the optimizer step just taken. */
  step: number;
  /** Token-weighted mean loss of the step (before the update). */
  loss: number;
  /** Tokens processed in the step (micro-batch slots, padding included). */
  tokens: number;
  /** Tokens that carried a loss target. */
  lossTokens: number;
  tokensPerSec: number;
  /** Learning rate used for this step. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** True when the update was skipped (non-finite loss or gradient, or no target tokens). */
  skipped: boolean;
  /** Wall time of the step in milliseconds. */
  ms: number;
}

export interface TrainerOptions<L extends TrainableAdapter> {
  model: TrainableModel<L>;
  lora: L;
  data: BatchSource;
  /** Micro-batches per optimizer step (gradient accumulation). */
  gradAccum?: number;
  schedule: LrSchedule;
  optimizer?: Omit<AdamWOptions, 'lr'>;
  /** Clip the global gradient norm to this (default 1.0; Infinity = measure only). */
  maxGradNorm?: number;
  /** Seeds the LoRA dropout masks of every micro-batch (with the data seed this fixes the run). */
  seed: number;
  onStep?: (e: StepEvent) => void | Promise<void>;
}

export const DEFAULT_MAX_GRAD_NORM = 1.0;

/** Checkpointable trainer state: step, optimizer moments, LoRA values and data position. */
export interface TrainerState {
  step: number;
  optimizer: AdamWState;
  params: Record<string, Float32Array>;
  data: { epoch: number; index: number };
}

/** Dropout seed of one micro-batch: a 32-bit mix of (seed, step, micro-batch). */
export function microBatchSeed(seed: number, step: number, micro: number): number {
  let h = (seed ^ 0x85ebca6b) >>> 0;
  for (const v of [step, micro]) {
    h = Math.imul(h ^ v, 0xcc9e2d51) >>> 0;
    h = ((h << 15) | (h >>> 17)) >>> 0;
    h = Math.imul(h, 0x1b873593) >>> 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  return h >>> 0;
}

export class Trainer<L extends TrainableAdapter> {
  readonly optimizer: AdamW;
  readonly gradAccum: number;
  readonly maxGradNorm: number;
  /** Optimizer steps taken so far. */
  step = 0;
  private readonly params: Parameter[];

  constructor(private readonly o: TrainerOptions<L>) {
    this.gradAccum = o.gradAccum ?? 1;
    if (!Number.isInteger(this.gradAccum) || this.gradAccum < 1) throw new Error(`helora: gradAccum must be a positive integer, got ${this.gradAccum}`);
    this.maxGradNorm = o.maxGradNorm ?? DEFAULT_MAX_GRAD_NORM;
    if (!(this.maxGradNorm > 0)) throw new Error(`helora: maxGradNorm must be positive, got ${this.maxGradNorm}`);
    if (!Number.isInteger(o.seed)) throw new Error(`helora: training seed must be an integer, got ${o.seed}`);
    this.params = o.lora.parameters();
    if (this.params.length === 0) throw new Error('helora: the adapter has no trainable parameters');
    this.optimizer = new AdamW(this.params, { lr: o.schedule(0), ...o.optimizer });
  }

  /** One optimizer step over gradAccum micro-batches. */
  async trainStep(): Promise<StepEvent> {
    const t0 = performance.now();
    const { model, lora, data } = this.o;
    const batches: PackedBatch[] = [];
    const counts: number[] = [];
    let lossTokens = 0;
    let tokens = 0;
    for (let k = 0; k < this.gradAccum; k++) {
      const b = data.next();
      batches.push(b);
      counts.push(countLossTokens(b));
      lossTokens += counts[k]!;
      tokens += b.T;
    }
    lora.zeroGrad();
    let lossSum = 0;
    let finite = true;
    if (lossTokens > 0) {
      for (let k = 0; k < batches.length; k++) {
        if (counts[k] === 0) continue;
        const r = await model.forwardBackward(batches[k]!, lora, { dropoutSeed: microBatchSeed(this.o.seed, this.step, k), lossDenominator: lossTokens });
        if (r.tokens !== counts[k]) throw new Error(`helora: model reports ${r.tokens} loss tokens for a batch holding ${counts[k]}`);
        if (!Number.isFinite(r.loss)) finite = false;
        lossSum += r.loss * r.tokens;
      }
    }
    const lr = this.o.schedule(this.step);
    let gradNorm = NaN;
    let skipped = true;
    if (lossTokens > 0) {
      gradNorm = clipGradNorm(this.params, this.maxGradNorm);
      if (finite && Number.isFinite(gradNorm)) {
        this.optimizer.step(lr);
        skipped = false;
      }
    }
    lora.zeroGrad();
    this.step++;
    const ms = performance.now() - t0;
    const ev: StepEvent = {
      step: this.step,
      loss: lossTokens > 0 ? lossSum / lossTokens : NaN,
      tokens,
      lossTokens,
      tokensPerSec: ms > 0 ? (tokens * 1000) / ms : 0,
      lr,
      gradNorm,
      skipped,
      ms,
    };
    if (this.o.onStep) await this.o.onStep(ev);
    return ev;
  }

  /** Train until `steps` optimizer steps have been taken in total; returns the events of this call. */
  async train(steps: number, signal?: AbortSignal): Promise<StepEvent[]> {
    if (!Number.isInteger(steps) || steps < 0) throw new Error(`helora: steps must be a non-negative integer, got ${steps}`);
    const out: StepEvent[] = [];
    while (this.step < steps) {
      if (signal?.aborted) break;
      out.push(await this.trainStep());
    }
    return out;
  }

  state(): TrainerState {
    const params: Record<string, Float32Array> = {};
    for (const p of this.params) params[p.name] = p.value.slice();
    return { step: this.step, optimizer: this.optimizer.state(), params, data: this.o.data.position() };
  }

  /** Resume from state(): same step, moments, LoRA values and data position. */
  loadState(s: TrainerState): void {
    for (const p of this.params) {
      const v = s.params[p.name];
      if (!v) throw new Error(`helora: trainer state lacks parameter ${p.name}`);
      if (v.length !== p.value.length) throw new Error(`helora: trainer state parameter ${p.name} has ${v.length} values, expected ${p.value.length}`);
    }
    if (Object.keys(s.params).length !== this.params.length) throw new Error('helora: trainer state holds parameters this adapter does not have');
    if (!Number.isInteger(s.step) || s.step < s.optimizer.step) throw new Error(`helora: trainer state step ${s.step} is behind its optimizer step ${s.optimizer.step}`);
    this.optimizer.loadState(s.optimizer);
    for (const p of this.params) p.value.set(s.params[p.name]!);
    this.o.data.seek(s.data);
    this.step = s.step;
  }
}

export interface EvaluableModel<L> {
  /** Mean loss over the batch's target tokens (no gradients). */
  forward(batch: PackedBatch, lora: L | null): Promise<{ loss: number }>;
}

/** Token-weighted mean loss over batches (e.g. a held-out set). */
export async function evaluateLoss<L>(model: EvaluableModel<L>, lora: L | null, batches: readonly PackedBatch[]): Promise<{ loss: number; tokens: number }> {
  let sum = 0;
  let n = 0;
  for (const b of batches) {
    const k = countLossTokens(b);
    if (k === 0) continue;
    const r = await model.forward(b, lora);
    sum += r.loss * k;
    n += k;
  }
  return { loss: n > 0 ? sum / n : NaN, tokens: n };
}
