// Held-out evaluation: the token-weighted mean loss (and perplexity) of a model with or without a
// LoRA adapter over a set of records the run does not train on. The set is packed like training
// data (micro-batches of batchTokens) but in its own order, without a shuffle, and the forward
// runs without dropout, so an evaluation is a pure function of the weights and the records: it
// never touches the training trajectory (data order, dropout masks, optimizer state).
//
// The same forward serves every mode: in encrypted mode it goes through the server's products
// (forward only, no backward), in quantized and fp32 mode through the local ones.

import { LocalFp32Provider, LocalQuantizedProvider } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { LoraAdapter } from '../model/lora.js';
import { loadAdapter } from '../model/peft.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { DEFAULT_ACT_BITS } from '../quant/quantize.js';
import { readTrainingFile, type DataRecord } from './data.js';
import { loadClientModel, tokenizeForTraining } from './fine-tune.js';
import { countLossTokens, packExamples, shuffleInPlace, type PackedBatch } from './packing.js';

export interface HeldOutLoss {
  /** Token-weighted mean loss over every target token of the set. */
  loss: number;
  /** exp(loss). */
  ppl: number;
  /** Target tokens of the set. */
  tokens: number;
}

/** What an evaluation needs of a model: LlamaModel.forward without logits. */
export interface EvalForward {
  forward(batch: PackedBatch, lora: LoraAdapter | null, opts: { returnLogits: false }): Promise<{ loss: number; tokens: number }>;
}

/** Salt of the held-out split's shuffle, so it is not the data order's shuffle of the same seed. */
const SPLIT_SALT = 0x6a09e667;

/**
 * A deterministic split of records into training and held-out ones: round(fraction * n) records
 * (at least 1, leaving at least 1 to train on), picked by a seeded shuffle of the indices. Both
 * parts keep the records' file order.
 */
export function splitHeldOut(records: readonly DataRecord[], fraction: number, seed: number): { train: DataRecord[]; heldOut: DataRecord[] } {
  if (!(fraction > 0 && fraction < 1)) throw new Error(`helora: --eval-split must be a fraction in (0, 1), got ${fraction}`);
  const n = records.length;
  if (n < 2) throw new Error(`helora: --eval-split needs at least 2 records to split, the data has ${n}`);
  const k = Math.min(n - 1, Math.max(1, Math.round(fraction * n)));
  const order = shuffleInPlace(Array.from({ length: n }, (_, i) => i), (seed ^ SPLIT_SALT) >>> 0);
  const held = new Set(order.slice(0, k));
  return { train: records.filter((_, i) => !held.has(i)), heldOut: records.filter((_, i) => held.has(i)) };
}

/** The held-out records packed into micro-batches of T tokens, in their own order (no shuffle). */
export function packHeldOut(examples: Parameters<typeof packExamples>[0], o: { T: number; padId: number; vocabSize: number }): PackedBatch[] {
  const { batches } = packExamples(examples, { T: o.T, padId: o.padId, vocabSize: o.vocabSize });
  if (batches.length === 0) throw new Error('helora: the held-out set has no example with a loss target');
  return batches;
}

/** Mean loss over every target token of the batches (each batch's mean weighted by its targets), no dropout. */
export async function heldOutLoss(model: EvalForward, lora: LoraAdapter | null, batches: readonly PackedBatch[]): Promise<HeldOutLoss> {
  let sum = 0;
  let tokens = 0;
  for (const b of batches) {
    const k = countLossTokens(b);
    if (k === 0) continue;
    const r = await model.forward(b, lora, { returnLogits: false });
    if (r.tokens !== k) throw new Error(`helora: model reports ${r.tokens} loss tokens for a batch holding ${k}`);
    sum += r.loss * k;
    tokens += k;
  }
  if (tokens === 0) throw new Error('helora: the held-out set has no token with a loss target');
  const loss = sum / tokens;
  return { loss, ppl: Math.exp(loss), tokens };
}

export type EvalMode = 'fp32' | 'quantized';
export const EVAL_MODES: readonly EvalMode[] = ['fp32', 'quantized'];

export interface EvaluateAdapterOptions {
  /** Hugging Face model folder (with its projection weights: the products run locally). */
  model: string;
  /** PEFT adapter folder; absent: the base model. */
  adapter?: string;
  /** Data file (any format `helora train` reads) or records in memory. */
  data: string | DataRecord[];
  batchTokens: number;
  mode: EvalMode;
  /** Activation bits of the quantized mode (default 8). */
  actBits?: number;
}

export interface EvaluateAdapterResult extends HeldOutLoss {
  records: number;
  batches: number;
}

/** `helora eval`: the held-out loss of a finished adapter (or the base model) on a data file, computed locally. */
export async function evaluateAdapter(o: EvaluateAdapterOptions): Promise<EvaluateAdapterResult> {
  if (!EVAL_MODES.includes(o.mode)) throw new Error(`helora: --mode must be one of ${EVAL_MODES.join(', ')}, got ${JSON.stringify(o.mode)}`);
  if (!Number.isSafeInteger(o.batchTokens) || o.batchTokens < 2) throw new Error(`helora: --batch-tokens must be an integer >= 2, got ${o.batchTokens}`);
  if (o.actBits !== undefined && o.mode !== 'quantized') throw new Error('helora: --act-bits is only used with --mode quantized');
  const records = typeof o.data === 'string' ? readTrainingFile(o.data).records : o.data;
  if (records.length === 0) throw new Error('helora: the evaluation data has no records');
  const { config, tensors } = loadClientModel(o.model, true);
  const tokenizer = loadTokenizer(o.model);
  const provider = o.mode === 'quantized'
    ? LocalQuantizedProvider.fromTensors(config, tensors, o.actBits ?? DEFAULT_ACT_BITS)
    : LocalFp32Provider.fromTensors(config, tensors);
  const model = LlamaModel.fromTensors(config, tensors, provider);
  const lora = o.adapter ? LoraAdapter.fromTensors(config, loadAdapter(o.adapter, config)) : null;
  const { examples, padId } = tokenizeForTraining(records, tokenizer, config);
  const batches = packHeldOut(examples, { T: o.batchTokens, padId, vocabSize: config.vocabSize });
  return { ...(await heldOutLoss(model, lora, batches)), records: records.length, batches: batches.length };
}
