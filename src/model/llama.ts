/**
 * Llama-family decoder (llama, mistral, qwen2) for LoRA training on the client.
 *
 * The model holds only what the client needs: embeddings, norms, q/k/v biases and the LM head.
 * Every projection product W·x / W^T·dy goes through a FrozenLinearProvider (in memory, or an
 * encrypted server). Explicit forward/backward per layer; only what backward needs is saved,
 * and each layer's saved buffers are dropped as soon as its backward is done.
 */

import { randomBytes } from 'node:crypto';
import { matmulBackwardInput, matmulBackwardWeight, matmulForward } from '../kernels/matmul-f32.js';
import type { LlamaConfig } from './config.js';
import type { FrozenLinearProvider, TensorMap } from './frozen.js';
import type { Parameter } from './parameter.js';
import {
  attentionBackward, attentionForward, attentionForwardCached, countTargets, crossEntropyForward,
  crossEntropyForwardBackwardInPlace, embeddingForward, rmsnormBackward, rmsnormForward, ropeBackward,
  ropeForward, ropeInvFreq, ropeTables, swigluBackward, swigluForward,
} from './layers.js';
import { dropoutMask, loraKey, loraLinearBackward, loraLinearForward, type LoraAdapter, type LoraDropout } from './lora.js';
import type { ProjectionName } from './projections.js';

/** A packed micro-batch of T tokens (one or more sequences laid end to end). */
export interface Batch {
  T: number;
  tokens: Int32Array;
  /** Next-token label of every position; -100 = ignored (prompt, padding, sequence ends). */
  targets: Int32Array;
  /** Position of each token within its own sequence (RoPE). */
  positions: Int32Array;
  /** Sequence id of each token: attention stays inside a sequence. Give padding ids of its own. */
  seqIds: Int32Array;
}

export interface ForwardBackwardOptions {
  /** Seed of the LoRA dropout masks; random (node:crypto) when absent. */
  dropoutSeed?: Uint8Array | string | number;
  /**
   * The loss whose gradient is accumulated is sum(token losses) / lossDenominator. Default:
   * this batch's count of counted tokens (the mean). For token-weighted gradient accumulation
   * over micro-batches, pass the total count of all micro-batches of the step.
   */
  lossDenominator?: number;
}

/**
 * Largest logits block (values) held at once while training: 32 Mi floats = 128 MiB. Each block is
 * one LM head product, whose GEMM packs the whole [V, C] head again: at a 128256-token vocabulary
 * this gives 261 tokens per block (65 at 8 Mi), a quarter of the packing passes.
 */
const LOGITS_CHUNK_VALUES = 1 << 25;

interface LayerParams {
  inputNorm: Float32Array;
  postNorm: Float32Array;
  qBias: Float32Array | null;
  kBias: Float32Array | null;
  vBias: Float32Array | null;
}


/** A provider whose projection weights are trained too (LocalTrainableProvider). */
interface TrainableProvider extends FrozenLinearProvider {
  parameters(): Parameter[];
  zeroGrad(): void;
}
function isTrainable(p: FrozenLinearProvider): p is TrainableProvider {
  return typeof (p as Partial<TrainableProvider>).parameters === 'function' && typeof (p as Partial<TrainableProvider>).zeroGrad === 'function';
}

/** Gradients of the client-side weights for full-parameter training (pretraining). */
interface FullGrads {
  embed: Float32Array;
  /** The same buffer as `embed` when the embeddings are tied. */
  lmHead: Float32Array;
  finalNorm: Float32Array;
  layers: LayerParams[];
  params: Parameter[];
}

export interface LlamaModelOptions {
  /**
   * Also accumulate gradients of the embeddings, LM head, RMSNorm weights and q/k/v biases
   * (full-parameter training). The projection weights get theirs from a trainable provider.
   */
  fullGrads?: boolean;
}

/** What one layer's backward needs (everything else is recomputed cheaply). */
interface LayerSaved {
  x1: Float32Array; rstd1: Float32Array;
  q: Float32Array; k: Float32Array; v: Float32Array; att: Float32Array; lse: Float32Array;
  x2: Float32Array; rstd2: Float32Array;
  gate: Float32Array; up: Float32Array;
  /** LoRA h = dropout(x)·A^T per adapted module. */
  h: Map<ProjectionName, Float32Array>;
}

/** Per-layer key/value cache for generation (keys stored after RoPE). */
export class KvCache {
  readonly k: Float32Array[];
  readonly v: Float32Array[];
  length = 0;
  constructor(config: LlamaConfig, readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`helora: KV cache capacity must be a positive integer, got ${capacity}`);
    const kvDim = config.numKvHeads * config.headDim;
    this.k = Array.from({ length: config.numLayers }, () => new Float32Array(capacity * kvDim));
    this.v = Array.from({ length: config.numLayers }, () => new Float32Array(capacity * kvDim));
  }
}

interface RunContext {
  T: number;
  cos: Float32Array;
  sin: Float32Array;
  seqIds: Int32Array | null;
  cache: KvCache | null;
  lora: LoraAdapter | null;
  /** Dropout seed when training with dropout, else null. */
  dropSeed: Uint8Array | null;
  /** Blocks l >= saveFrom keep their activations for backward (Infinity: none). */
  saveFrom: number;
}

function tensor(tensors: TensorMap, name: string, shape: number[]): Float32Array {
  const t = tensors.get(name);
  if (!t) throw new Error(`helora: checkpoint has no tensor ${name}`);
  const n = shape.reduce((a, b) => a * b, 1);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]) || t.data.length !== n) {
    throw new Error(`helora: ${name} has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
  }
  return t.data;
}

function seedBytes(seed: Uint8Array | string | number): Uint8Array {
  return typeof seed === 'string' ? Buffer.from(seed, 'utf8') : typeof seed === 'number' ? Buffer.from(`number:${seed}`, 'utf8') : seed;
}

function addBias(y: Float32Array, b: Float32Array | null, T: number): void {
  if (!b) return;
  const n = b.length;
  for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) y[t * n + i]! += b[i]!;
}

/** db[n] += sum over tokens of dy[t, n] (no-op without a bias). */
function biasGrad(db: Float32Array | null, dy: Float32Array, T: number): void {
  if (!db) return;
  const n = db.length;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let t = 0; t < T; t++) s += dy[t * n + i]!;
    db[i]! += s;
  }
}

function addInto(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i]! += b[i]!;
}

export class LlamaModel {
  readonly invFreq: Float32Array;
  private readonly grads: FullGrads | null;

  private constructor(
    readonly config: LlamaConfig,
    readonly provider: FrozenLinearProvider,
    readonly embed: Float32Array,
    readonly lmHead: Float32Array,
    readonly finalNorm: Float32Array,
    private readonly layers: LayerParams[],
    fullGrads: boolean,
  ) {
    this.invFreq = ropeInvFreq(config.headDim, config.ropeTheta, config.ropeScaling);
    this.grads = fullGrads ? this.makeGrads() : null;
  }

  private makeGrads(): FullGrads {
    const z = (a: Float32Array): Float32Array => new Float32Array(a.length);
    const zn = (a: Float32Array | null): Float32Array | null => (a ? z(a) : null);
    const embed = z(this.embed);
    const lmHead = this.config.tieWordEmbeddings ? embed : z(this.lmHead);
    const finalNorm = z(this.finalNorm);
    const layers = this.layers.map((p) => ({ inputNorm: z(p.inputNorm), postNorm: z(p.postNorm), qBias: zn(p.qBias), kBias: zn(p.kBias), vBias: zn(p.vBias) }));
    const params: Parameter[] = [{ name: 'model.embed_tokens.weight', value: this.embed, grad: embed }];
    this.layers.forEach((p, l) => {
      const g = layers[l]!;
      const pre = `model.layers.${l}.`;
      params.push({ name: `${pre}input_layernorm.weight`, value: p.inputNorm, grad: g.inputNorm });
      params.push({ name: `${pre}post_attention_layernorm.weight`, value: p.postNorm, grad: g.postNorm });
      for (const [m, v, gv] of [['q_proj', p.qBias, g.qBias], ['k_proj', p.kBias, g.kBias], ['v_proj', p.vBias, g.vBias]] as const) {
        if (v && gv) params.push({ name: `${pre}self_attn.${m}.bias`, value: v, grad: gv });
      }
    });
    params.push({ name: 'model.norm.weight', value: this.finalNorm, grad: finalNorm });
    if (!this.config.tieWordEmbeddings) params.push({ name: 'lm_head.weight', value: this.lmHead, grad: lmHead });
    return { embed, lmHead, finalNorm, layers, params };
  }

  /** True when built with fullGrads (forwardBackward then trains every weight it holds). */
  get fullGrads(): boolean {
    return this.grads !== null;
  }

  /**
   * Every trainable tensor with its gradient buffer (HF names): the client-side weights
   * (fullGrads) followed by the provider's projection weights when the provider is trainable.
   * Values are the live weights: an optimizer step updates the model (and its tensor map).
   */
  parameters(): Parameter[] {
    if (!this.grads) throw new Error('helora: parameters() needs a model built with { fullGrads: true }');
    return [...this.grads.params, ...(isTrainable(this.provider) ? this.provider.parameters() : [])];
  }

  /** Zeroes every gradient of parameters(). */
  zeroGrad(): void {
    if (!this.grads) throw new Error('helora: zeroGrad() needs a model built with { fullGrads: true }');
    for (const p of this.grads.params) p.grad.fill(0);
    if (isTrainable(this.provider)) this.provider.zeroGrad();
  }

  /**
   * Keeps references to the embeddings, norms, q/k/v biases and LM head (tied: the embedding
   * matrix) of an HF-named tensor map; the projection weights are the provider's business.
   */
  static fromTensors(config: LlamaConfig, tensors: TensorMap, provider: FrozenLinearProvider, opts: LlamaModelOptions = {}): LlamaModel {
    const C = config.hiddenSize, V = config.vocabSize;
    const embed = tensor(tensors, 'model.embed_tokens.weight', [V, C]);
    const lmHead = config.tieWordEmbeddings ? embed : tensor(tensors, 'lm_head.weight', [V, C]);
    const finalNorm = tensor(tensors, 'model.norm.weight', [C]);
    const qDim = config.numHeads * config.headDim, kvDim = config.numKvHeads * config.headDim;
    const layers: LayerParams[] = [];
    for (let l = 0; l < config.numLayers; l++) {
      const p = `model.layers.${l}.`;
      const bias = (m: string, n: number): Float32Array | null => (config.attentionBias ? tensor(tensors, `${p}self_attn.${m}.bias`, [n]) : null);
      layers.push({
        inputNorm: tensor(tensors, `${p}input_layernorm.weight`, [C]),
        postNorm: tensor(tensors, `${p}post_attention_layernorm.weight`, [C]),
        qBias: bias('q_proj', qDim), kBias: bias('k_proj', kvDim), vBias: bias('v_proj', kvDim),
      });
    }
    return new LlamaModel(config, provider, embed, lmHead, finalNorm, layers, opts.fullGrads ?? false);
  }

  private checkBatch(b: Batch): void {
    const { T } = b;
    if (!Number.isInteger(T) || T < 1) throw new Error(`helora: batch T must be a positive integer, got ${T}`);
    for (const [n, a] of [['tokens', b.tokens], ['targets', b.targets], ['positions', b.positions], ['seqIds', b.seqIds]] as const) {
      if (a.length !== T) throw new Error(`helora: batch ${n} has ${a.length} entries, expected T = ${T}`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // One decoder block. x [T, C] is updated in place to the block output.

  private drop(ctx: RunContext, layer: number, m: ProjectionName, n: number): LoraDropout | null {
    if (!ctx.dropSeed || !ctx.lora) return null;
    const p = ctx.lora.config.dropout;
    return { p, mask: dropoutMask(ctx.dropSeed, `lora-dropout ${loraKey(layer, m)}`, n, p) };
  }

  private loraFwd(ctx: RunContext, layer: number, m: ProjectionName, y: Float32Array, x: Float32Array, saved: LayerSaved | null): void {
    const lora = ctx.lora;
    const pair = lora?.get(layer, m);
    if (!lora || !pair) return;
    const h = loraLinearForward(y, x, ctx.T, pair, lora.config.rank, lora.scale, this.drop(ctx, layer, m, x.length));
    if (saved) saved.h.set(m, h);
  }

  private async blockForward(l: number, x: Float32Array, ctx: RunContext): Promise<LayerSaved | null> {
    const cfg = this.config;
    const { T } = ctx;
    const C = cfg.hiddenSize, I = cfg.intermediateSize;
    const nH = cfg.numHeads, nKv = cfg.numKvHeads, hd = cfg.headDim;
    const P = this.layers[l]!;

    const rstd1 = new Float32Array(T);
    const xn1 = new Float32Array(T * C);
    rmsnormForward(xn1, rstd1, x, P.inputNorm, T, C, cfg.rmsNormEps);
    const saved: LayerSaved | null = l >= ctx.saveFrom
      ? { x1: x.slice(), rstd1, q: null!, k: null!, v: null!, att: null!, lse: null!, x2: null!, rstd2: null!, gate: null!, up: null!, h: new Map() }
      : null;

    const [q, k, v] = (await this.provider.forward(l, 'qkv', xn1, T)) as [Float32Array, Float32Array, Float32Array];
    addBias(q, P.qBias, T); addBias(k, P.kBias, T); addBias(v, P.vBias, T);
    this.loraFwd(ctx, l, 'q_proj', q, xn1, saved);
    this.loraFwd(ctx, l, 'k_proj', k, xn1, saved);
    this.loraFwd(ctx, l, 'v_proj', v, xn1, saved);
    ropeForward(q, ctx.cos, ctx.sin, T, nH, hd);
    ropeForward(k, ctx.cos, ctx.sin, T, nKv, hd);

    const att = new Float32Array(T * nH * hd);
    if (ctx.cache) {
      const cache = ctx.cache;
      const past = cache.length;
      cache.k[l]!.set(k, past * nKv * hd);
      cache.v[l]!.set(v, past * nKv * hd);
      attentionForwardCached(att, q, cache.k[l]!, cache.v[l]!, T, past, nH, nKv, hd);
    } else {
      const lse = saved ? new Float32Array(nH * T) : null;
      attentionForward(att, lse, q, k, v, ctx.seqIds!, { T, nHeads: nH, nKvHeads: nKv, headDim: hd });
      if (saved) { saved.q = q; saved.k = k; saved.v = v; saved.lse = lse!; saved.att = att; }
    }

    const [o] = (await this.provider.forward(l, 'o', att, T)) as [Float32Array];
    this.loraFwd(ctx, l, 'o_proj', o, att, saved);
    addInto(x, o);
    if (saved) saved.x2 = x.slice();

    const rstd2 = new Float32Array(T);
    const xn2 = new Float32Array(T * C);
    rmsnormForward(xn2, rstd2, x, P.postNorm, T, C, cfg.rmsNormEps);
    const [gate, up] = (await this.provider.forward(l, 'gate_up', xn2, T)) as [Float32Array, Float32Array];
    this.loraFwd(ctx, l, 'gate_proj', gate, xn2, saved);
    this.loraFwd(ctx, l, 'up_proj', up, xn2, saved);
    const m = new Float32Array(T * I);
    swigluForward(m, gate, up, T * I);
    const [down] = (await this.provider.forward(l, 'down', m, T)) as [Float32Array];
    this.loraFwd(ctx, l, 'down_proj', down, m, saved);
    addInto(x, down);
    if (saved) { saved.rstd2 = rstd2; saved.gate = gate; saved.up = up; }
    return saved;
  }

  private loraBwd(ctx: RunContext, l: number, m: ProjectionName, dx: Float32Array | null, dy: Float32Array, x: () => Float32Array, s: LayerSaved): void {
    const lora = ctx.lora;
    const pair = lora?.get(l, m);
    if (!lora || !pair) return;
    const xin = x();
    loraLinearBackward(dx, dy, xin, s.h.get(m)!, ctx.T, pair, lora.config.rank, lora.scale, this.drop(ctx, l, m, xin.length));
  }

  /** dres [T, C]: gradient at the block output on entry, at the block input on return (unless needInput is false). */
  private async blockBackward(l: number, dres: Float32Array, s: LayerSaved, ctx: RunContext, needInput: boolean): Promise<void> {
    const cfg = this.config;
    const { T } = ctx;
    const C = cfg.hiddenSize, I = cfg.intermediateSize;
    const nH = cfg.numHeads, nKv = cfg.numKvHeads, hd = cfg.headDim;
    const P = this.layers[l]!;
    const once = <V>(f: () => V): (() => V) => { let v: V | undefined; return () => (v ??= f()); };

    // MLP: x3 = x2 + down(swiglu(gate(xn2), up(xn2)))
    const mAct = once(() => { const m = new Float32Array(T * I); swigluForward(m, s.gate, s.up, T * I); return m; });
    const dm = await this.provider.backward(l, 'down', [dres], T);
    this.loraBwd(ctx, l, 'down_proj', dm, dres, mAct, s);
    const dgate = new Float32Array(T * I), dup = new Float32Array(T * I);
    swigluBackward(dgate, dup, dm, s.gate, s.up, T * I);
    const dxn2 = await this.provider.backward(l, 'gate_up', [dgate, dup], T);
    const xn2 = once(() => { const y = new Float32Array(T * C); rmsnormForward(y, null, s.x2, P.postNorm, T, C, cfg.rmsNormEps); return y; });
    this.loraBwd(ctx, l, 'gate_proj', dxn2, dgate, xn2, s);
    this.loraBwd(ctx, l, 'up_proj', dxn2, dup, xn2, s);
    const G = this.grads?.layers[l] ?? null;
    rmsnormBackward(dres, G ? G.postNorm : null, dxn2, s.x2, P.postNorm, s.rstd2, T, C);

    // Attention: x2 = x1 + o(attn(rope(q), rope(k), v))
    const datt = await this.provider.backward(l, 'o', [dres], T);
    this.loraBwd(ctx, l, 'o_proj', datt, dres, () => s.att, s);
    const dq = new Float32Array(T * nH * hd), dk = new Float32Array(T * nKv * hd), dv = new Float32Array(T * nKv * hd);
    attentionBackward(dq, dk, dv, datt, s.q, s.k, s.v, s.att, s.lse, ctx.seqIds!, { T, nHeads: nH, nKvHeads: nKv, headDim: hd });
    ropeBackward(dq, ctx.cos, ctx.sin, T, nH, hd);
    ropeBackward(dk, ctx.cos, ctx.sin, T, nKv, hd);
    if (G) { biasGrad(G.qBias, dq, T); biasGrad(G.kBias, dk, T); biasGrad(G.vBias, dv, T); }
    const xn1 = once(() => { const y = new Float32Array(T * C); rmsnormForward(y, null, s.x1, P.inputNorm, T, C, cfg.rmsNormEps); return y; });
    // The first block's input gradient would only reach the frozen embeddings: skip its server call.
    const dxn1 = needInput ? await this.provider.backward(l, 'qkv', [dq, dk, dv], T) : null;
    this.loraBwd(ctx, l, 'q_proj', dxn1, dq, xn1, s);
    this.loraBwd(ctx, l, 'k_proj', dxn1, dk, xn1, s);
    this.loraBwd(ctx, l, 'v_proj', dxn1, dv, xn1, s);
    if (dxn1) rmsnormBackward(dres, G ? G.inputNorm : null, dxn1, s.x1, P.inputNorm, s.rstd1, T, C);
  }

  // ---------------------------------------------------------------------------------------------

  private async trunk(batch: Batch | { T: number; tokens: Int32Array; positions: Int32Array }, ctx: RunContext, saves: (LayerSaved | null)[] | null): Promise<Float32Array> {
    const C = this.config.hiddenSize;
    const x = new Float32Array(ctx.T * C);
    embeddingForward(x, batch.tokens, this.embed, ctx.T, C, this.config.vocabSize);
    for (let l = 0; l < this.config.numLayers; l++) {
      const s = await this.blockForward(l, x, ctx);
      if (saves) saves.push(s);
    }
    return x;
  }

  private finalNormOf(x: Float32Array, T: number, rstd: Float32Array | null): Float32Array {
    const C = this.config.hiddenSize;
    const xf = new Float32Array(T * C);
    rmsnormForward(xf, rstd, x, this.finalNorm, T, C, this.config.rmsNormEps);
    return xf;
  }

  /**
   * Logits [T, V] and the mean loss over counted targets (0 when none count). No dropout unless
   * opts.dropoutSeed is given (then the same masks as forwardBackward with that seed).
   * With returnLogits: false the loss is computed in token chunks and logits is empty (an
   * evaluation pass then never holds the [T, V] matrix: 400 MB at T = 2048, V = 49152).
   */
  async forward(batch: Batch, lora: LoraAdapter | null, opts: { dropoutSeed?: Uint8Array | string | number; returnLogits?: boolean } = {}): Promise<{ logits: Float32Array; loss: number; tokens: number }> {
    this.checkBatch(batch);
    const { T } = batch;
    const { cos, sin } = ropeTables(batch.positions, this.invFreq, T);
    const dropSeed = lora && lora.config.dropout > 0 && opts.dropoutSeed !== undefined ? seedBytes(opts.dropoutSeed) : null;
    const ctx: RunContext = { T, cos, sin, seqIds: batch.seqIds, cache: null, lora, dropSeed, saveFrom: Infinity };
    const x = await this.trunk(batch, ctx, null);
    const xf = this.finalNormOf(x, T, null);
    const V = this.config.vocabSize, C = this.config.hiddenSize;
    const n = countTargets(batch.targets, T);
    if (opts.returnLogits ?? true) {
      const logits = new Float32Array(T * V);
      matmulForward(logits, xf, this.lmHead, null, T, C, V);
      const sum = crossEntropyForward(null, logits, batch.targets, T, V);
      return { logits, loss: n > 0 ? sum / n : 0, tokens: n };
    }
    const chunk = Math.max(1, Math.floor(LOGITS_CHUNK_VALUES / V));
    const buf = new Float32Array(Math.min(chunk, T) * V);
    let sum = 0;
    for (let t0 = 0; t0 < T; t0 += chunk) {
      const tn = Math.min(chunk, T - t0);
      const tg = batch.targets.subarray(t0, t0 + tn);
      if (countTargets(tg, tn) === 0) continue;
      const lg = buf.subarray(0, tn * V);
      matmulForward(lg, xf.subarray(t0 * C, (t0 + tn) * C), this.lmHead, null, tn, C, V);
      sum += crossEntropyForward(null, lg, tg, tn, V);
    }
    return { logits: new Float32Array(0), loss: n > 0 ? sum / n : 0, tokens: n };
  }

  /**
   * Forward + backward of one micro-batch: ACCUMULATES d(loss)/d(LoRA) into lora's gradients
   * (call several times before an optimizer step for gradient accumulation). Returns the mean
   * loss over this batch's counted targets and their count. With fullGrads the gradients of every
   * weight of parameters() are accumulated too (lora may then be null: pretraining).
   */
  forwardBackward(batch: Batch, lora: null, opts?: ForwardBackwardOptions): Promise<{ loss: number; tokens: number }>;
  // The LoRA overload comes last: TypeScript infers generic callers (the Trainer) from it.
  forwardBackward(batch: Batch, lora: LoraAdapter, opts?: ForwardBackwardOptions): Promise<{ loss: number; tokens: number }>;
  async forwardBackward(batch: Batch, lora: LoraAdapter | null, opts: ForwardBackwardOptions = {}): Promise<{ loss: number; tokens: number }> {
    this.checkBatch(batch);
    const { T } = batch;
    const cfg = this.config;
    const C = cfg.hiddenSize, V = cfg.vocabSize;
    const n = countTargets(batch.targets, T);
    if (n === 0) return { loss: 0, tokens: 0 };
    const denom = opts.lossDenominator ?? n;
    if (!(denom > 0)) throw new Error(`helora: lossDenominator must be positive, got ${denom}`);
    if (!lora && !this.grads) throw new Error('helora: forwardBackward needs a LoRA adapter or a model built with { fullGrads: true }');
    const dropSeed = lora && lora.config.dropout > 0 ? (opts.dropoutSeed === undefined ? randomBytes(32) : seedBytes(opts.dropoutSeed)) : null;
    const { cos, sin } = ropeTables(batch.positions, this.invFreq, T);
    const G = this.grads;
    // LoRA on a subset of layers (PEFT layers_to_transform): nothing below the lowest adapted
    // block needs a gradient, so backward (and its server products) stops there.
    const trainsAll = G !== null || isTrainable(this.provider);
    const lowest = trainsAll ? 0 : lora!.adaptedLayers()[0]!;
    const ctx: RunContext = { T, cos, sin, seqIds: batch.seqIds, cache: null, lora, dropSeed, saveFrom: lowest };
    const saves: (LayerSaved | null)[] = [];
    const x = await this.trunk(batch, ctx, saves);

    // Final norm + LM head + loss in token chunks so the [T, V] logits never exist at once.
    const rstdF = new Float32Array(T);
    const xf = this.finalNormOf(x, T, rstdF);
    const dxf = new Float32Array(T * C);
    const chunk = Math.max(1, Math.floor(LOGITS_CHUNK_VALUES / V));
    let sum = 0;
    const buf = new Float32Array(Math.min(chunk, T) * V);
    for (let t0 = 0; t0 < T; t0 += chunk) {
      const tn = Math.min(chunk, T - t0);
      const tg = batch.targets.subarray(t0, t0 + tn);
      if (countTargets(tg, tn) === 0) continue;
      const lg = buf.subarray(0, tn * V);
      matmulForward(lg, xf.subarray(t0 * C, (t0 + tn) * C), this.lmHead, null, tn, C, V);
      sum += crossEntropyForwardBackwardInPlace(lg, tg, tn, V, denom);
      matmulBackwardInput(dxf.subarray(t0 * C, (t0 + tn) * C), lg, this.lmHead, tn, C, V);
      if (G) matmulBackwardWeight(G.lmHead, lg, xf.subarray(t0 * C, (t0 + tn) * C), tn, C, V);
    }
    const dres = new Float32Array(T * C);
    rmsnormBackward(dres, G ? G.finalNorm : null, dxf, x, this.finalNorm, rstdF, T, C);

    for (let l = cfg.numLayers - 1; l >= lowest; l--) {
      // Full training needs the first block's input gradient too (it reaches the embeddings),
      // and a trainable provider gets its first-layer q/k/v weight gradients from that call.
      await this.blockBackward(l, dres, saves[l]!, ctx, l > lowest || trainsAll);
      saves[l] = null; // free this layer's activations
    }
    if (G) {
      // Scatter-add into the embedding rows of the batch's tokens.
      for (let t = 0; t < T; t++) {
        const row = batch.tokens[t]! * C;
        for (let c = 0; c < C; c++) G.embed[row + c]! += dres[t * C + c]!;
      }
    }
    return { loss: sum / n, tokens: n };
  }

  /**
   * Runs new tokens of ONE sequence through the model with a KV cache (positions continue from
   * cache.length) and returns their logits [n, V] (or only the last token's [V] with lastOnly).
   * Forward only, no dropout.
   */
  async forwardCached(tokens: Int32Array, cache: KvCache, lora: LoraAdapter | null, opts: { lastOnly?: boolean } = {}): Promise<Float32Array> {
    const T = tokens.length;
    if (T < 1) throw new Error('helora: forwardCached needs at least one token');
    if (cache.length + T > cache.capacity) throw new Error(`helora: KV cache holds ${cache.capacity} positions, ${cache.length + T} needed`);
    const positions = new Int32Array(T);
    for (let i = 0; i < T; i++) positions[i] = cache.length + i;
    const { cos, sin } = ropeTables(positions, this.invFreq, T);
    const ctx: RunContext = { T, cos, sin, seqIds: null, cache, lora, dropSeed: null, saveFrom: Infinity };
    const x = await this.trunk({ T, tokens, positions }, ctx, null);
    cache.length += T;
    const C = this.config.hiddenSize, V = this.config.vocabSize;
    const rows = opts.lastOnly ? 1 : T;
    const xf = this.finalNormOf(x.subarray((T - rows) * C), rows, null);
    const logits = new Float32Array(rows * V);
    matmulForward(logits, xf, this.lmHead, null, rows, C, V);
    return logits;
  }
}
