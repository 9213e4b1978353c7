/**
 * LoRA adapters on the frozen projections: y = W x + (alpha/r) · B · A · dropout(x).
 * A [r, in] starts kaiming-uniform like PEFT (bound 1/sqrt(in)), B [out, r] starts at 0.
 * The LoRA products run on the client in the clear: one fused native kernel per direction over
 * every core (model-ops.c), else the matmul-f32 bodies below (their reference).
 */

import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { matmulBackwardInput, matmulBackwardWeight, matmulForward } from '../kernels/matmul-f32.js';
import { nativeKernels } from '../kernels/native.js';
import type { LlamaConfig } from './config.js';
import type { TensorMap } from './frozen.js';
import type { LoraTensors } from './peft.js';
import type { Parameter } from './parameter.js';
import { isProjectionName, PROJECTION_NAMES, projectionPath, projectionShape, projectionWeightName, type ProjectionName } from './projections.js';

export interface LoraConfig {
  rank: number;
  alpha: number;
  /** Probability of zeroing an input feature of the LoRA branch during training (PEFT lora_dropout). */
  dropout: number;
  targetModules: ProjectionName[];
  /** Decoder layers that get adapters, ascending (PEFT layers_to_transform); null: every layer. */
  layers: number[] | null;
}

export const DEFAULT_LORA_CONFIG: LoraConfig = { rank: 8, alpha: 16, dropout: 0.05, targetModules: [...PROJECTION_NAMES], layers: null };

/** One adapted projection: A [rank, inDim], B [outDim, rank], with gradients of the same shapes. */
export interface LoraPair {
  A: Float32Array;
  B: Float32Array;
  gradA: Float32Array;
  gradB: Float32Array;
  inDim: number;
  outDim: number;
}


/** Key of a projection in LoraTensors.layers: 'layers.{i}.self_attn.q_proj'. */
export function loraKey(layer: number, m: ProjectionName): string {
  return `layers.${layer}.${projectionPath(m)}`;
}

// ---------------------------------------------------------------------------------------------
// Deterministic random streams (AES-256-CTR keyed by SHA-256 of a seed and a label): the same
// (seed, label) gives the same numbers, so dropout masks can be regenerated in backward
// instead of stored.

/** Zeros to encrypt (CTR mode: the ciphertext of zeros is the keystream); grown on demand, never written. */
let zeros = new Uint8Array(0);

function keystream(seed: Uint8Array, label: string, nBytes: number): Buffer {
  const key = createHash('sha256').update(seed).update('\0helora-stream\0').update(label).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  if (zeros.length < nBytes) zeros = new Uint8Array(nBytes);
  return cipher.update(zeros.subarray(0, nBytes)); // CTR has no final block
}

/** n uniform uint32 values from the keystream of (seed, label). */
export function seededUint32(seed: Uint8Array, label: string, n: number): Uint32Array {
  const bytes = keystream(seed, label, n * 4);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = bytes.readUInt32LE(i * 4);
  return out;
}

/**
 * Keep-mask (1 = keep) for dropout probability p over n values: keep where a 16-bit uniform is
 * >= p * 2^16 (p is thereby rounded to a multiple of 2^-16, far below any use of dropout).
 */
export function dropoutMask(seed: Uint8Array, label: string, n: number, p: number): Uint8Array {
  const bytes = keystream(seed, label, n * 2);
  const threshold = Math.round(p * 65536);
  const mask = new Uint8Array(n);
  const nk = nativeKernels();
  if (nk) nk.dropoutMask(bytes, threshold, mask);
  else dropoutMaskReference(bytes, threshold, mask);
  return mask;
}

/** mask[i] = 1 where the i-th little-endian 16-bit word of stream is >= threshold (the native kernel's reference). */
export function dropoutMaskReference(stream: Uint8Array, threshold: number, mask: Uint8Array): void {
  for (let i = 0; i < mask.length; i++) mask[i] = (stream[2 * i]! | (stream[2 * i + 1]! << 8)) >= threshold ? 1 : 0;
}

function checkLoraConfig(c: LoraConfig, numLayers: number): void {
  if (!Number.isInteger(c.rank) || c.rank < 1) throw new Error(`helora: LoRA rank must be a positive integer, got ${c.rank}`);
  if (!Number.isFinite(c.alpha) || c.alpha <= 0) throw new Error(`helora: LoRA alpha must be positive, got ${c.alpha}`);
  if (!(c.dropout >= 0 && c.dropout < 1)) throw new Error(`helora: LoRA dropout must be in [0, 1), got ${c.dropout}`);
  if (c.targetModules.length === 0) throw new Error('helora: LoRA needs at least one target module');
  for (const m of c.targetModules) {
    if (!isProjectionName(m)) throw new Error(`helora: unknown LoRA target module '${m}' (expected one of ${PROJECTION_NAMES.join(', ')})`);
  }
  if (c.layers !== null) {
    if (c.layers.length === 0) throw new Error('helora: LoRA layers must name at least one layer (or be null for every layer)');
    c.layers.forEach((l, i) => {
      if (!Number.isInteger(l) || l < 0 || l >= numLayers) throw new Error(`helora: LoRA layer ${l} does not exist (the model has layers 0..${numLayers - 1})`);
      if (i > 0 && l <= c.layers![i - 1]!) throw new Error(`helora: LoRA layers must be ascending without repeats, got [${c.layers!.join(', ')}]`);
    });
  }
}

export class LoraAdapter {
  /** alpha / rank. */
  readonly scale: number;
  private readonly pairs = new Map<string, LoraPair>();

  private constructor(readonly modelConfig: LlamaConfig, readonly config: LoraConfig) {
    checkLoraConfig(config, modelConfig.numLayers);
    this.scale = config.alpha / config.rank;
  }

  /** The layers that hold adapters, ascending. */
  adaptedLayers(): number[] {
    return this.config.layers ? [...this.config.layers] : Array.from({ length: this.modelConfig.numLayers }, (_, l) => l);
  }

  /**
   * Fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming_uniform_(a=sqrt(5))), B = 0.
   * With a seed the initialization is reproducible; without one it comes from node:crypto.
   */
  static create(modelConfig: LlamaConfig, config: Partial<LoraConfig> = {}, opts: { seed?: Uint8Array | string } = {}): LoraAdapter {
    const full: LoraConfig = {
      ...DEFAULT_LORA_CONFIG, ...config,
      targetModules: [...(config.targetModules ?? DEFAULT_LORA_CONFIG.targetModules)],
      layers: config.layers ? [...config.layers] : null,
    };
    const ad = new LoraAdapter(modelConfig, full);
    const seed = opts.seed === undefined ? randomBytes(32) : typeof opts.seed === 'string' ? Buffer.from(opts.seed, 'utf8') : opts.seed;
    for (const l of ad.adaptedLayers()) {
      for (const m of full.targetModules) {
        const [out, inp] = projectionShape(modelConfig, m);
        const pair = ad.allocate(l, m, out, inp);
        const u = seededUint32(seed, `lora-init ${loraKey(l, m)}`, pair.A.length);
        const bound = 1 / Math.sqrt(inp);
        for (let i = 0; i < pair.A.length; i++) pair.A[i] = (u[i]! / 4294967296) * 2 * bound - bound;
      }
    }
    return ad;
  }

  /** Adapter from saved tensors (peft.ts loadAdapter), shapes validated against the model. */
  static fromTensors(modelConfig: LlamaConfig, t: LoraTensors): LoraAdapter {
    const targets = t.targetModules.map((m) => m as ProjectionName);
    const ad = new LoraAdapter(modelConfig, { rank: t.rank, alpha: t.alpha, dropout: t.dropout, targetModules: targets, layers: t.layersToTransform });
    for (const l of ad.adaptedLayers()) {
      for (const m of targets) {
        const key = loraKey(l, m);
        const src = t.layers.get(key);
        if (!src) throw new Error(`helora: adapter has no weights for ${key}`);
        const [out, inp] = projectionShape(modelConfig, m);
        if (src.inDim !== inp || src.outDim !== out || src.A.length !== t.rank * inp || src.B.length !== out * t.rank) {
          throw new Error(`helora: adapter ${key} has A ${src.A.length} / B ${src.B.length} values (in ${src.inDim}, out ${src.outDim}), expected in ${inp}, out ${out}, rank ${t.rank}`);
        }
        const pair = ad.allocate(l, m, out, inp);
        pair.A.set(src.A);
        pair.B.set(src.B);
      }
    }
    for (const key of t.layers.keys()) {
      if (!ad.pairs.has(key)) throw new Error(`helora: adapter holds ${key}, which is not a target module or an adapted layer of this model`);
    }
    return ad;
  }

  private allocate(layer: number, m: ProjectionName, out: number, inp: number): LoraPair {
    const r = this.config.rank;
    const pair: LoraPair = { A: new Float32Array(r * inp), B: new Float32Array(out * r), gradA: new Float32Array(r * inp), gradB: new Float32Array(out * r), inDim: inp, outDim: out };
    this.pairs.set(loraKey(layer, m), pair);
    return pair;
  }

  /** The adapter of one projection, or undefined if it is not a target. */
  get(layer: number, m: ProjectionName): LoraPair | undefined {
    return this.pairs.get(loraKey(layer, m));
  }

  /** Copies of the weights (not the gradients) in the peft.ts exchange form. */
  toTensors(): LoraTensors {
    const layers = new Map<string, { A: Float32Array; B: Float32Array; inDim: number; outDim: number }>();
    for (const [k, p] of this.pairs) layers.set(k, { A: p.A.slice(), B: p.B.slice(), inDim: p.inDim, outDim: p.outDim });
    return {
      rank: this.config.rank, alpha: this.config.alpha, dropout: this.config.dropout, targetModules: [...this.config.targetModules],
      layersToTransform: this.config.layers ? [...this.config.layers] : null, layers,
    };
  }

  /** Flat list for an optimizer, in a fixed order (layer, then module, A before B). */
  parameters(): Parameter[] {
    const out: Parameter[] = [];
    for (const [k, p] of this.pairs) {
      out.push({ name: `${k}.lora_A`, value: p.A, grad: p.gradA });
      out.push({ name: `${k}.lora_B`, value: p.B, grad: p.gradB });
    }
    return out;
  }

  zeroGrad(): void {
    for (const p of this.pairs.values()) { p.gradA.fill(0); p.gradB.fill(0); }
  }

  /** Number of trainable values. */
  numParameters(): number {
    let n = 0;
    for (const p of this.pairs.values()) n += p.A.length + p.B.length;
    return n;
  }
}

// ---------------------------------------------------------------------------------------------
// The LoRA branch of one projection.

function applyMask(x: Float32Array, mask: Uint8Array, keepScale: number): Float32Array {
  const xd = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) if (mask[i]) xd[i] = x[i]! * keepScale;
  return xd;
}

/** Dropout of the branch input: mask (1 = keep) and p, or null when off (eval, p = 0). */
export interface LoraDropout { mask: Uint8Array; p: number }

/**
 * y[T, out] += scale · (dropout(x) · A^T) · B^T. Returns h = dropout(x)·A^T [T, rank], which
 * the backward needs.
 */
export function loraLinearForward(y: Float32Array, x: Float32Array, T: number, pair: LoraPair, rank: number, scale: number, drop: LoraDropout | null): Float32Array {
  const nk = nativeKernels();
  if (!nk) return loraLinearForwardReference(y, x, T, pair, rank, scale, drop);
  const h = new Float32Array(T * rank);
  nk.loraForward(y, h, x, pair.A, pair.B, drop?.mask ?? null, drop ? 1 / (1 - drop.p) : 1, T, pair.inDim, pair.outDim, rank, scale);
  return h;
}

/** loraLinearForward on the matmul-f32 kernels (the reference of the fused native kernel). */
export function loraLinearForwardReference(y: Float32Array, x: Float32Array, T: number, pair: LoraPair, rank: number, scale: number, drop: LoraDropout | null): Float32Array {
  const xd = drop ? applyMask(x, drop.mask, 1 / (1 - drop.p)) : x;
  const h = new Float32Array(T * rank);
  matmulForward(h, xd, pair.A, null, T, pair.inDim, rank);
  const tmp = new Float32Array(T * pair.outDim);
  matmulForward(tmp, h, pair.B, null, T, rank, pair.outDim);
  for (let i = 0; i < tmp.length; i++) y[i]! += scale * tmp[i]!;
  return h;
}

/**
 * Accumulates gradA, gradB for dy [T, out]; if dx is given, dx[T, in] += the branch's input
 * gradient. x is the branch input (before dropout), h the value loraLinearForward returned.
 */
export function loraLinearBackward(dx: Float32Array | null, dy: Float32Array, x: Float32Array, h: Float32Array, T: number, pair: LoraPair, rank: number, scale: number, drop: LoraDropout | null): void {
  const nk = nativeKernels();
  if (!nk) return loraLinearBackwardReference(dx, dy, x, h, T, pair, rank, scale, drop);
  nk.loraBackward(dx, pair.gradA, pair.gradB, dy, x, h, pair.A, pair.B, drop?.mask ?? null, drop ? 1 / (1 - drop.p) : 1, T, pair.inDim, pair.outDim, rank, scale);
}

/** loraLinearBackward on the matmul-f32 kernels (the reference of the fused native kernel). */
export function loraLinearBackwardReference(dx: Float32Array | null, dy: Float32Array, x: Float32Array, h: Float32Array, T: number, pair: LoraPair, rank: number, scale: number, drop: LoraDropout | null): void {
  // dB += scale dy^T h
  const hs = new Float32Array(h.length);
  for (let i = 0; i < h.length; i++) hs[i] = scale * h[i]!;
  matmulBackwardWeight(pair.gradB, dy, hs, T, rank, pair.outDim);
  // dh = scale dy B
  const dh = new Float32Array(T * rank);
  matmulBackwardInput(dh, dy, pair.B, T, rank, pair.outDim);
  for (let i = 0; i < dh.length; i++) dh[i]! *= scale;
  const keep = drop ? 1 / (1 - drop.p) : 1;
  const xd = drop ? applyMask(x, drop.mask, keep) : x;
  matmulBackwardWeight(pair.gradA, dh, xd, T, pair.inDim, rank);
  if (dx) {
    if (!drop) {
      matmulBackwardInput(dx, dh, pair.A, T, pair.inDim, rank);
    } else {
      const dxd = new Float32Array(T * pair.inDim);
      matmulBackwardInput(dxd, dh, pair.A, T, pair.inDim, rank);
      const mask = drop.mask;
      for (let i = 0; i < dxd.length; i++) if (mask[i]) dx[i]! += dxd[i]! * keep;
    }
  }
}

/**
 * Merged checkpoint tensors: a new map sharing every untouched tensor, with each adapted
 * projection replaced by W + (alpha/r) B A.
 */
export function mergeLora(tensors: TensorMap, lora: LoraAdapter): TensorMap {
  const out: TensorMap = new Map(tensors);
  const r = lora.config.rank;
  for (const l of lora.adaptedLayers()) {
    for (const m of lora.config.targetModules) {
      const pair = lora.get(l, m)!;
      const name = projectionWeightName(l, m);
      const t = tensors.get(name);
      if (!t || t.data.length !== pair.outDim * pair.inDim) throw new Error(`helora: cannot merge LoRA into ${name}: missing or of the wrong size`);
      const w = new Float32Array(t.data);
      for (let o = 0; o < pair.outDim; o++) {
        for (let k = 0; k < r; k++) {
          const b = lora.scale * pair.B[o * r + k]!;
          if (b === 0) continue;
          const ao = k * pair.inDim, wo = o * pair.inDim;
          for (let i = 0; i < pair.inDim; i++) w[wo + i]! += b * pair.A[ao + i]!;
        }
      }
      out.set(name, { shape: [...t.shape], data: w });
    }
  }
  return out;
}
