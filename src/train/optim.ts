/**
 * Optimizer pieces for LoRA training on the client: AdamW, global-norm gradient clipping and
 * learning-rate schedules. Parameters are the `{ name, value, grad }` triples a LoRA exposes.
 */

import type { Parameter } from '../model/parameter.js';

export interface AdamWOptions {
  /** Base learning rate, used when step() is called without one. */
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay (AdamW): value *= 1 - lr * weightDecay before the Adam update. */
  weightDecay?: number;
}

/** Defaults match torch.optim.AdamW so a PyTorch recipe carries over unchanged. */
export const ADAMW_DEFAULT_BETA1 = 0.9;
export const ADAMW_DEFAULT_BETA2 = 0.999;
export const ADAMW_DEFAULT_EPS = 1e-8;
export const ADAMW_DEFAULT_WEIGHT_DECAY = 0.01;

/** Plain-object optimizer state for checkpoints (JSON-able apart from the typed arrays). */
export interface AdamWState {
  step: number;
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
}

function checkFinitePositive(name: string, v: number, allowZero = false): void {
  if (!Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
    throw new Error(`helora: AdamW ${name} must be a ${allowZero ? 'non-negative' : 'positive'} finite number, got ${v}`);
  }
}

/**
 * AdamW as in Loshchilov & Hutter (and torch.optim.AdamW):
 *   p -= lr * wd * p
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * Moments are stored in fp32; the update arithmetic runs in doubles.
 */
export class AdamW {
  readonly params: readonly Parameter[];
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Number of updates taken so far (t in the bias corrections). */
  stepCount = 0;
  private readonly m: Float32Array[];
  private readonly v: Float32Array[];

  constructor(params: readonly Parameter[], opts: AdamWOptions) {
    const names = new Set<string>();
    for (const p of params) {
      if (p.value.length !== p.grad.length) {
        throw new Error(`helora: parameter ${p.name} has ${p.value.length} values but ${p.grad.length} gradient entries`);
      }
      if (names.has(p.name)) throw new Error(`helora: duplicate parameter name ${p.name}`);
      names.add(p.name);
    }
    this.params = params;
    this.lr = opts.lr;
    this.beta1 = opts.beta1 ?? ADAMW_DEFAULT_BETA1;
    this.beta2 = opts.beta2 ?? ADAMW_DEFAULT_BETA2;
    this.eps = opts.eps ?? ADAMW_DEFAULT_EPS;
    this.weightDecay = opts.weightDecay ?? ADAMW_DEFAULT_WEIGHT_DECAY;
    checkFinitePositive('lr', this.lr, true);
    for (const [n, b] of [['beta1', this.beta1], ['beta2', this.beta2]] as const) {
      if (!(b >= 0 && b < 1)) throw new Error(`helora: AdamW ${n} must be in [0, 1), got ${b}`);
    }
    checkFinitePositive('eps', this.eps);
    checkFinitePositive('weightDecay', this.weightDecay, true);
    this.m = params.map((p) => new Float32Array(p.value.length));
    this.v = params.map((p) => new Float32Array(p.value.length));
  }

  /** One update from the gradients currently in `param.grad` (gradients are left untouched). */
  step(lr: number = this.lr): void {
    checkFinitePositive('lr', lr, true);
    this.stepCount++;
    const t = this.stepCount;
    const b1 = this.beta1;
    const b2 = this.beta2;
    const stepSize = lr / (1 - Math.pow(b1, t));
    const sqrtBc2 = Math.sqrt(1 - Math.pow(b2, t));
    const decay = 1 - lr * this.weightDecay;
    const eps = this.eps;
    for (let i = 0; i < this.params.length; i++) {
      const { value, grad } = this.params[i]!;
      const m = this.m[i]!;
      const v = this.v[i]!;
      for (let j = 0; j < value.length; j++) {
        const g = grad[j]!;
        const mj = b1 * m[j]! + (1 - b1) * g;
        const vj = b2 * v[j]! + (1 - b2) * g * g;
        m[j] = mj;
        v[j] = vj;
        value[j] = value[j]! * decay - stepSize * (mj / (Math.sqrt(vj) / sqrtBc2 + eps));
      }
    }
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad.fill(0);
  }

  /** A copy of the moments and step count, keyed by parameter name. */
  state(): AdamWState {
    const m: Record<string, Float32Array> = {};
    const v: Record<string, Float32Array> = {};
    this.params.forEach((p, i) => {
      m[p.name] = this.m[i]!.slice();
      v[p.name] = this.v[i]!.slice();
    });
    return { step: this.stepCount, m, v };
  }

  /** Restore a state() snapshot; every parameter must be present with the right length. */
  loadState(s: AdamWState): void {
    if (!Number.isInteger(s.step) || s.step < 0) throw new Error(`helora: optimizer state step must be a non-negative integer, got ${s.step}`);
    const known = new Set(this.params.map((p) => p.name));
    for (const key of [...Object.keys(s.m), ...Object.keys(s.v)]) {
      if (!known.has(key)) throw new Error(`helora: optimizer state holds unknown parameter ${key}`);
    }
    this.params.forEach((p, i) => {
      const m = s.m[p.name];
      const v = s.v[p.name];
      if (!m || !v) throw new Error(`helora: optimizer state lacks moments for parameter ${p.name}`);
      if (m.length !== p.value.length || v.length !== p.value.length) {
        throw new Error(`helora: optimizer state for ${p.name} has ${m.length}/${v.length} values, expected ${p.value.length}`);
      }
      this.m[i]!.set(m);
      this.v[i]!.set(v);
    });
    this.stepCount = s.step;
  }
}

/** L2 norm of all gradients taken together (accumulated in doubles). */
export function globalGradNorm(params: readonly Parameter[]): number {
  let ss = 0;
  for (const p of params) {
    const g = p.grad;
    for (let j = 0; j < g.length; j++) ss += g[j]! * g[j]!;
  }
  return Math.sqrt(ss);
}

/** Added to the norm before dividing, as torch.nn.utils.clip_grad_norm_ does. */
export const CLIP_NORM_EPS = 1e-6;

/**
 * Scale all gradients so their global L2 norm is at most maxNorm. Returns the norm BEFORE
 * clipping. A non-finite norm leaves the gradients untouched (the caller decides whether to
 * skip the step); maxNorm = Infinity measures without clipping.
 */
export function clipGradNorm(params: readonly Parameter[], maxNorm: number): number {
  if (!(maxNorm > 0)) throw new Error(`helora: maxGradNorm must be positive, got ${maxNorm}`);
  const norm = globalGradNorm(params);
  if (!Number.isFinite(norm)) return norm;
  const coef = maxNorm / (norm + CLIP_NORM_EPS);
  if (coef < 1) {
    for (const p of params) {
      const g = p.grad;
      for (let j = 0; j < g.length; j++) g[j] = g[j]! * coef;
    }
  }
  return norm;
}

/** Learning rate for a 0-based optimizer step. */
export type LrSchedule = (step: number) => number;

export interface ScheduleOptions {
  kind: 'constant' | 'cosine' | 'linear';
  /** Peak learning rate (reached at the end of warmup). */
  lr: number;
  /** Steps of linear warmup; step s < warmupSteps gets lr * (s + 1) / warmupSteps. */
  warmupSteps?: number;
  /** Total optimizer steps; needed by the decaying kinds. */
  totalSteps?: number;
  /** Floor the decay ends at (default 0). */
  minLr?: number;
}

/**
 * Linear warmup, then constant / cosine / linear decay from lr to minLr over the remaining
 * steps (the last step is one short of the floor, as in the Hugging Face schedules).
 * Warmup starts at lr/warmupSteps rather than 0 so the first step is not wasted.
 */
export function makeSchedule(o: ScheduleOptions): LrSchedule {
  const warmup = o.warmupSteps ?? 0;
  const minLr = o.minLr ?? 0;
  if (!(Number.isFinite(o.lr) && o.lr >= 0)) throw new Error(`helora: learning rate must be a non-negative number, got ${o.lr}`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error(`helora: warmupSteps must be a non-negative integer, got ${warmup}`);
  if (!(Number.isFinite(minLr) && minLr >= 0 && minLr <= o.lr)) throw new Error(`helora: minLr must be in [0, lr], got ${minLr}`);
  if (o.kind !== 'constant' && o.kind !== 'cosine' && o.kind !== 'linear') throw new Error(`helora: unknown schedule kind ${String(o.kind)} (constant, cosine, linear)`);
  let total = 0;
  if (o.kind !== 'constant') {
    total = o.totalSteps ?? NaN;
    if (!Number.isInteger(total) || total <= 0) throw new Error(`helora: a ${o.kind} schedule needs totalSteps (a positive integer), got ${o.totalSteps}`);
  }
  const peak = o.lr;
  return (step: number): number => {
    if (!Number.isInteger(step) || step < 0) throw new Error(`helora: schedule step must be a non-negative integer, got ${step}`);
    if (step < warmup) return (peak * (step + 1)) / warmup;
    if (o.kind === 'constant') return peak;
    const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
    const shape = o.kind === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress;
    return minLr + (peak - minLr) * shape;
  };
}
