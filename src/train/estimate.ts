/**
 * What a private fine-tune will cost before it starts (`helora estimate`): tokens, optimizer steps,
 * requests, upload and download bytes, multiply-accumulates on each side, and from them time and
 * money, next to the same fine-tune in fp32 on the data owner's own machine.
 *
 * Counts are exact, derived from the shapes the way the training loop and the transport produce
 * them: per micro-batch of T tokens and per layer, one forward request per projection group and one
 * backward request per group (none for the first layer's q/k/v, whose input gradient would only
 * reach the frozen embeddings, model/llama.ts); a request of more than the server's max_tokens is
 * split into token chunks of max_tokens rounded down to a multiple of N (transport/client.ts
 * tokenChunks); each request's bytes are protocol/wire.ts encryptedInputBytes /
 * encryptedOutputBytes with the K-chunk terms of linear/layout.ts featureChunks and
 * crypto/params.ts maxInnerDim. Times are these counts divided by the rates of a calibration
 * (train/calibration.ts).
 *
 * Mask modes: 'fresh' is today's protocol (both result parts downloaded, 8 B per output value, the
 * server computes W a and W b). 'table' is the public-mask-table mode (design notes section
 * 6, issue 10): the same 5 B per uploaded value, only b downloaded (4 B per output value), the
 * server computes only W b; the client downloads the public table W A once.
 */

import { maxInnerDim, type RlweParams } from '../crypto/params.js';
import { blockCount, featureChunks } from '../linear/layout.js';
import type { LlamaConfig } from '../model/config.js';
import { groupShapes, PROJECTION_GROUPS, projectionShape, type ProjectionGroup, type ProjectionName } from '../model/projections.js';
import { encryptedInputBytes, encryptedOutputBytes } from '../protocol/wire.js';
import { WEIGHT_BITS } from '../quant/quantize.js';
import { IGNORE_INDEX } from '../model/layers.js';
import { epochBatchSource, epochSeed, packExamples, type Example, type PackedBatch, type PackOptions } from './packing.js';
import type { Calibration, CalibrationRates } from './calibration.js';

/** The config fields every count depends on. */
export type ModelDims = Pick<LlamaConfig, 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'vocabSize'>;

/** Published configs (Hugging Face config.json of each model) of the models users ask about by name. */
export const NAMED_SHAPES: Readonly<Record<string, ModelDims>> = Object.freeze({
  'smollm2-135m': { hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9, numKvHeads: 3, headDim: 64, vocabSize: 49152 },
  'qwen2.5-0.5b': { hiddenSize: 896, intermediateSize: 4864, numLayers: 24, numHeads: 14, numKvHeads: 2, headDim: 64, vocabSize: 151936 },
  'llama-3.2-1b': { hiddenSize: 2048, intermediateSize: 8192, numLayers: 16, numHeads: 32, numKvHeads: 8, headDim: 64, vocabSize: 128256 },
  'llama-3.2-3b': { hiddenSize: 3072, intermediateSize: 8192, numLayers: 28, numHeads: 24, numKvHeads: 8, headDim: 128, vocabSize: 128256 },
  'llama-3.1-8b': { hiddenSize: 4096, intermediateSize: 14336, numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128, vocabSize: 128256 },
});

export type MaskMode = 'fresh' | 'table';
export const MASK_MODES: readonly MaskMode[] = ['fresh', 'table'];

/** One micro-batch as the training loop sees it: T token slots, the lengths of the runs attention works on, the real (non-padding) tokens. */
export interface MicroBatchPlan {
  T: number;
  seqLens: number[];
  realTokens: number;
}

/** The micro-batches of a run, each with the epoch it comes from, and the optimizer steps. */
export interface RunPlan {
  microBatches: (MicroBatchPlan & { epoch: number })[];
  gradAccum: number;
  optimizerSteps: number;
  /** How the plan was made: packed from the data, or assumed from a token count. */
  source: 'data' | 'token-count';
}

/** Steps for `epochs` passes over `perEpoch` micro-batches (as helora train computes them). */
export function stepsForEpochs(epochs: number, perEpoch: number, gradAccum: number): number {
  return Math.max(1, Math.ceil((epochs * perEpoch) / gradAccum));
}

/**
 * The micro-batches a run draws from tokenized examples: exactly the training loop's data source
 * (epochBatchSource: a fresh seeded packing per epoch), steps x gradAccum micro-batches.
 */
export function planFromExamples(examples: readonly Example[], pack: PackOptions & { seed: number }, opts: { epochs?: number; steps?: number; gradAccum: number }): RunPlan {
  const perEpoch = packExamples(examples, { ...pack, seed: epochSeed(pack.seed, 0) }).batches.length;
  if (perEpoch === 0) throw new Error('helora: no training examples with a loss target left after packing');
  const steps = opts.steps ?? stepsForEpochs(opts.epochs ?? 1, perEpoch, opts.gradAccum);
  const source = epochBatchSource(examples, pack);
  const microBatches: RunPlan['microBatches'] = [];
  for (let i = 0; i < steps * opts.gradAccum; i++) {
    const b = source.next();
    microBatches.push({ ...batchPlan(b), epoch: source.position().epoch });
  }
  return { microBatches, gradAccum: opts.gradAccum, optimizerSteps: steps, source: 'data' };
}

/** The attention runs (sequences, and the padding run, which is attended too) and real tokens of a packed batch. */
export function batchPlan(b: PackedBatch): MicroBatchPlan {
  const runs: number[] = [];
  let t = 0;
  while (t < b.T) {
    let e = t + 1;
    while (e < b.T && b.seqIds[e] === b.seqIds[t]) e++;
    runs.push(e - t);
    t = e;
  }
  // Packing drops sequences without a target, so a last run without any target is the padding.
  const lastStart = b.T - runs[runs.length - 1]!;
  let padding = true;
  for (let i = lastStart; i < b.T; i++) if (b.targets[i] !== IGNORE_INDEX) padding = false;
  return { T: b.T, seqLens: runs, realTokens: padding ? lastStart : b.T };
}

/**
 * A plan from a token count alone: every micro-batch one sequence filling all T slots (the most
 * attention work a micro-batch can hold), the last one padded.
 */
export function planFromTokenCount(tokens: number, batchTokens: number, opts: { epochs?: number; steps?: number; gradAccum: number }): RunPlan {
  if (!Number.isSafeInteger(tokens) || tokens < 1) throw new Error(`helora: the token count must be a positive integer, got ${tokens}`);
  if (!Number.isSafeInteger(batchTokens) || batchTokens < 2) throw new Error(`helora: tokens per micro-batch must be an integer >= 2, got ${batchTokens}`);
  const perEpoch = Math.ceil(tokens / batchTokens);
  const steps = opts.steps ?? stepsForEpochs(opts.epochs ?? 1, perEpoch, opts.gradAccum);
  const microBatches: RunPlan['microBatches'] = [];
  for (let i = 0; i < steps * opts.gradAccum; i++) {
    const last = i % perEpoch === perEpoch - 1;
    const real = last ? tokens - (perEpoch - 1) * batchTokens : batchTokens;
    microBatches.push({ T: batchTokens, seqLens: real < batchTokens ? [real, batchTokens - real] : [batchTokens], realTokens: real, epoch: Math.floor(i / perEpoch) });
  }
  return { microBatches, gradAccum: opts.gradAccum, optimizerSteps: steps, source: 'token-count' };
}

// ---------------------------------------------------------------------------------------------
// Counts of one micro-batch

export interface ProductRequest {
  op: 'forward' | 'backward';
  group: ProjectionGroup;
  layer: number;
  /** Tokens in this request (a chunk of the micro-batch). */
  tokens: number;
  uploadBytes: number;
  downloadBytes: number;
  /** Values encrypted (blocks x N slots x input features). */
  encryptedValues: number;
  /** Values decrypted (blocks x N slots x output features x terms). */
  decryptedValues: number;
  /** Server multiply-accumulates per ciphertext part (blocks x N x K x output rows). */
  serverMacs: number;
}

export interface WireSettings {
  params: RlweParams;
  /** The server's act_bits (fixes the K-chunk terms). */
  actBits: number;
  /** The server's max_tokens per request. */
  maxTokensPerRequest: number;
  maskMode: MaskMode;
}

/** Token chunks of one provider call (transport/client.ts tokenChunks). */
export function requestTokenChunks(T: number, maxTokens: number, N: number): number[] {
  let step = maxTokens;
  if (step >= N) step -= step % N;
  const out: number[] = [];
  for (let t0 = 0; t0 < T; t0 += step) out.push(Math.min(T, t0 + step) - t0);
  return out;
}

/** Input features per part and output rows per part of a product. */
function productDims(dims: ModelDims, op: 'forward' | 'backward', group: ProjectionGroup): { cols: number[]; rows: number[] } {
  const shapes = groupShapes(dims, group);
  return op === 'forward' ? { cols: [shapes[0]![1]], rows: shapes.map(([o]) => o) } : { cols: shapes.map(([o]) => o), rows: [shapes[0]![1]] };
}

/** Every request one training micro-batch of T tokens sends, in order. */
export function microBatchRequests(dims: ModelDims, T: number, w: WireSettings): ProductRequest[] {
  const N = w.params.ringDegree;
  const maxK = maxInnerDim(w.params, w.actBits, WEIGHT_BITS);
  const out: ProductRequest[] = [];
  const add = (op: 'forward' | 'backward', group: ProjectionGroup, layer: number): void => {
    const { cols, rows } = productDims(dims, op, group);
    const K = cols.reduce((s, c) => s + c, 0);
    const R = rows.reduce((s, r) => s + r, 0);
    const terms = featureChunks(K, maxK).length;
    for (const tokens of requestTokenChunks(T, w.maxTokensPerRequest, N)) {
      const slots = blockCount(tokens, N) * N;
      const fresh = encryptedOutputBytes(w.params.id, rows, tokens, terms);
      // Table mode: the same message without the a halves (b only).
      const aHalves = slots * terms * R * (w.params.downloadBits / 8);
      out.push({
        op, group, layer, tokens,
        uploadBytes: encryptedInputBytes(w.params.id, cols, tokens),
        downloadBytes: w.maskMode === 'fresh' ? fresh : fresh - aHalves,
        encryptedValues: slots * K,
        decryptedValues: slots * R * terms,
        serverMacs: slots * K * R,
      });
    }
  };
  for (let l = 0; l < dims.numLayers; l++) for (const g of PROJECTION_GROUPS) add('forward', g, l);
  for (let l = dims.numLayers - 1; l >= 0; l--) {
    for (const g of ['down', 'gate_up', 'o', 'qkv'] as const) if (!(l === 0 && g === 'qkv')) add('backward', g, l);
  }
  return out;
}

/** Bytes of the public mask table (W A for every product, per K-chunk term) the client downloads once in table mode. */
export function maskTableBytes(dims: ModelDims, w: WireSettings): number {
  const maxK = maxInnerDim(w.params, w.actBits, WEIGHT_BITS);
  let values = 0;
  for (const op of ['forward', 'backward'] as const) {
    for (const g of PROJECTION_GROUPS) {
      const { cols, rows } = productDims(dims, op, g);
      const terms = featureChunks(cols.reduce((s, c) => s + c, 0), maxK).length;
      values += terms * rows.reduce((s, r) => s + r, 0);
    }
  }
  return dims.numLayers * values * w.params.ringDegree * (w.params.downloadBits / 8);
}

/** Multiply-accumulates of the frozen products of a training micro-batch in the clear (T tokens, no padding to N). */
export function frozenProductMacs(dims: ModelDims, T: number): number {
  let perToken = 0;
  for (const g of PROJECTION_GROUPS) {
    const groupMacs = groupShapes(dims, g).reduce((s, [o, i]) => s + o * i, 0);
    perToken += dims.numLayers * groupMacs; // forward
    perToken += (g === 'qkv' ? dims.numLayers - 1 : dims.numLayers) * groupMacs; // backward (dx)
  }
  return T * perToken;
}

export interface LoraSettings {
  targets: readonly ProjectionName[];
  rank: number;
}

/**
 * Multiply-accumulates the client does in the clear for one training micro-batch, besides the
 * frozen products: the LM head (forward and input gradient; its weights are frozen), causal
 * attention inside each sequence (forward: scores and values; backward: recomputed scores, dP, dV,
 * dQ, dK) and LoRA (forward r (in + out); backward dB, dh, dA, dx: 2 r (in + out)).
 * Elementwise work (norms, RoPE, SwiGLU, softmax) is not counted: the calibrated rate absorbs it.
 */
export function clientMacs(dims: ModelDims, batch: MicroBatchPlan, lora: LoraSettings): number {
  const T = batch.T;
  const lmHead = 2 * T * dims.vocabSize * dims.hiddenSize;
  let pairs = 0;
  for (const L of batch.seqLens) pairs += (L * (L + 1)) / 2;
  const attention = dims.numLayers * 7 * pairs * dims.numHeads * dims.headDim;
  let loraPerToken = 0;
  for (const m of lora.targets) {
    const [o, i] = projectionShape(dims, m);
    loraPerToken += 3 * lora.rank * (i + o);
  }
  return lmHead + attention + T * dims.numLayers * loraPerToken;
}

// ---------------------------------------------------------------------------------------------
// Estimate

export interface CostSettings {
  /** Bytes per second each way. */
  bandwidthBytesPerS: number;
  /** Network round trip per request, seconds. */
  rttS: number;
  serverPricePerHour: number;
  egressPricePerGB: number;
}

export interface EstimateInput {
  dims: ModelDims;
  plan: RunPlan;
  wire: WireSettings;
  lora: LoraSettings;
  cost: CostSettings;
  /** The compute provider's machine (server rates) and the data owner's (client rates). */
  serverCalibration: Calibration;
  clientCalibration: Calibration;
  /** Bytes of the session's setup, once per run (the client's GET /v1/model-info and the document). */
  sessionSetup?: { uploadBytes: number; downloadBytes: number };
}

/** Totals of part of a run (one epoch, or all). */
export interface EstimateTotals {
  /** Real tokens (padding excluded) and token slots (micro-batches x T). */
  tokens: number;
  tokenSlots: number;
  microBatches: number;
  optimizerSteps: number;
  requests: number;
  uploadBytes: number;
  downloadBytes: number;
  serverMacs: number;
  clientMacs: number;
  encryptedValues: number;
  decryptedValues: number;
  serverS: number;
  clientComputeS: number;
  cryptoS: number;
  transferS: number;
  /** Round trips and per-request overhead. */
  requestOverheadS: number;
  wallS: number;
  serverCost: number;
  egressCost: number;
  cost: number;
  /** The same fine-tune in fp32 on the data owner's machine: its own work (clientMacs) plus the frozen products in fp32. */
  localFp32: { frozenMacs: number; wallS: number };
}

export interface Estimate {
  model: ModelDims;
  maskMode: MaskMode;
  planSource: RunPlan['source'];
  epochs: (EstimateTotals & { epoch: number })[];
  total: EstimateTotals;
  /** Bytes of the session setup (model info), counted in the total's upload and download. */
  sessionSetup: { uploadBytes: number; downloadBytes: number };
  /** Table mode: the public mask table downloaded once (bytes, seconds at the bandwidth); null in fresh mode. */
  maskTable: { bytes: number; transferS: number; egressCost: number } | null;
  rates: { server: CalibrationRates & { source: string }; client: CalibrationRates & { source: string } };
}

function emptyTotals(): EstimateTotals {
  return {
    tokens: 0, tokenSlots: 0, microBatches: 0, optimizerSteps: 0, requests: 0, uploadBytes: 0, downloadBytes: 0, serverMacs: 0, clientMacs: 0,
    encryptedValues: 0, decryptedValues: 0, serverS: 0, clientComputeS: 0, cryptoS: 0, transferS: 0, requestOverheadS: 0, wallS: 0,
    serverCost: 0, egressCost: 0, cost: 0, localFp32: { frozenMacs: 0, wallS: 0 },
  };
}

const GB = 1e9;

export function estimateRun(input: EstimateInput): Estimate {
  const { dims, plan, wire, lora, cost } = input;
  const sr = input.serverCalibration.rates;
  const cr = input.clientCalibration.rates;
  if (!(cost.bandwidthBytesPerS > 0)) throw new Error(`helora: bandwidth must be positive, got ${cost.bandwidthBytesPerS}`);
  const serverRate = wire.maskMode === 'fresh' ? sr.serverMacsPerS : sr.serverBOnlyMacsPerS;
  // Every micro-batch of the same T sends the same requests: count them once per T.
  const perT = new Map<number, ProductRequest[]>();
  const requestsOf = (T: number): ProductRequest[] => {
    let r = perT.get(T);
    if (!r) perT.set(T, (r = microBatchRequests(dims, T, wire)));
    return r;
  };
  const byEpoch = new Map<number, EstimateTotals>();
  plan.microBatches.forEach((mb, i) => {
    let e = byEpoch.get(mb.epoch);
    if (!e) byEpoch.set(mb.epoch, (e = emptyTotals()));
    e.microBatches++;
    e.tokens += mb.realTokens;
    e.tokenSlots += mb.T;
    if ((i + 1) % plan.gradAccum === 0) e.optimizerSteps++;
    for (const r of requestsOf(mb.T)) {
      e.requests++;
      e.uploadBytes += r.uploadBytes;
      e.downloadBytes += r.downloadBytes;
      e.serverMacs += r.serverMacs;
      e.encryptedValues += r.encryptedValues;
      e.decryptedValues += r.decryptedValues;
    }
    e.clientMacs += clientMacs(dims, mb, lora);
    e.localFp32.frozenMacs += frozenProductMacs(dims, mb.T);
  });
  const finish = (e: EstimateTotals): EstimateTotals => {
    e.serverS = e.serverMacs / serverRate;
    e.clientComputeS = e.clientMacs / cr.clientMacsPerS;
    e.cryptoS = (e.encryptedValues + e.decryptedValues) / cr.cryptoValuesPerS;
    e.transferS = (e.uploadBytes + e.downloadBytes) / cost.bandwidthBytesPerS;
    e.requestOverheadS = e.requests * (cost.rttS + cr.requestOverheadS);
    // The client waits for every product before it goes on: the parts add up.
    e.wallS = e.serverS + e.clientComputeS + e.cryptoS + e.transferS + e.requestOverheadS;
    // The server is held for the whole run; the egress is the download.
    e.serverCost = (e.wallS / 3600) * cost.serverPricePerHour;
    e.egressCost = (e.downloadBytes / GB) * cost.egressPricePerGB;
    e.cost = e.serverCost + e.egressCost;
    e.localFp32.wallS = e.clientComputeS + e.localFp32.frozenMacs / cr.localFrozenMacsPerS;
    return e;
  };
  const epochs = [...byEpoch.entries()].sort((a, b) => a[0] - b[0]).map(([epoch, e]) => ({ epoch: epoch + 1, ...finish(e) }));
  const total = emptyTotals();
  for (const e of epochs) {
    for (const k of Object.keys(total) as (keyof EstimateTotals)[]) {
      if (k === 'localFp32') total.localFp32.frozenMacs += e.localFp32.frozenMacs;
      else (total[k] as number) += e[k] as number;
    }
  }
  const sessionSetup = input.sessionSetup ?? { uploadBytes: 0, downloadBytes: 0 };
  total.uploadBytes += sessionSetup.uploadBytes;
  total.downloadBytes += sessionSetup.downloadBytes;
  finish(total);
  let maskTable: Estimate['maskTable'] = null;
  if (wire.maskMode === 'table') {
    const bytes = maskTableBytes(dims, wire);
    maskTable = { bytes, transferS: bytes / cost.bandwidthBytesPerS, egressCost: (bytes / GB) * cost.egressPricePerGB };
  }
  return {
    model: dims, maskMode: wire.maskMode, planSource: plan.source, epochs, total, sessionSetup, maskTable,
    rates: { server: { ...sr, source: input.serverCalibration.source }, client: { ...cr, source: input.clientCalibration.source } },
  };
}
