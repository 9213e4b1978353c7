/**
 * Random-weight Llama checkpoints for tests and benchmarks (no pretrained weights can be
 * installed here). Produces an HF-style config.json object and an HF-named tensor map, so the
 * result goes through the same loader / model code as a real checkpoint.
 */

import { seededRandom } from './packing.js';
import { PROJECTION_NAMES, projectionShape, projectionWeightName, type ProjectionDims } from '../model/projections.js';

export interface RandomLlamaShape {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  vocabSize: number;
  ropeTheta?: number;
  maxPositionEmbeddings?: number;
}

/** transformers' initializer_range for Llama: weights ~ N(0, 0.02); we use a uniform of that std. */
export const INIT_STD = 0.02;

/** HF config.json object (model_type llama, tied embeddings) for the shape. */
export function llamaConfigJson(s: RandomLlamaShape): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: s.hiddenSize,
    intermediate_size: s.intermediateSize,
    num_hidden_layers: s.numLayers,
    num_attention_heads: s.numHeads,
    num_key_value_heads: s.numKvHeads,
    vocab_size: s.vocabSize,
    hidden_act: 'silu',
    rms_norm_eps: 1e-5,
    rope_theta: s.ropeTheta ?? 10000,
    max_position_embeddings: s.maxPositionEmbeddings ?? 2048,
    tie_word_embeddings: true,
    torch_dtype: 'float32',
  };
}

/** Seeded uniform values with standard deviation `std` (Math.random-free, so tests repeat). */
function fill(n: number, std: number, rnd: () => number): Float32Array {
  const a = std * Math.sqrt(3);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rnd() - 1) * a;
  return out;
}

/**
 * Every tensor of a tied Llama checkpoint of this shape; norms are 1, the rest random. A larger
 * embedStd mimics trained embeddings, whose norms let the tied LM head move logits by several
 * nats (at 0.02 a hidden-64 model cannot express much beyond a uniform prediction).
 */
export function randomLlamaTensors(s: RandomLlamaShape, seed: number, opts: { embedStd?: number } = {}): Map<string, { shape: number[]; data: Float32Array }> {
  const rnd = seededRandom(seed);
  const C = s.hiddenSize;
  const headDim = C / s.numHeads;
  if (!Number.isInteger(headDim)) throw new Error(`helora: hidden size ${C} is not a multiple of ${s.numHeads} heads`);
  const dims: ProjectionDims = { ...s, headDim };
  const t = new Map<string, { shape: number[]; data: Float32Array }>();
  const mat = (name: string, o: number, i: number): void => void t.set(name, { shape: [o, i], data: fill(o * i, INIT_STD, rnd) });
  const ones = (name: string): void => void t.set(name, { shape: [C], data: new Float32Array(C).fill(1) });
  t.set('model.embed_tokens.weight', { shape: [s.vocabSize, C], data: fill(s.vocabSize * C, opts.embedStd ?? INIT_STD, rnd) });
  ones('model.norm.weight');
  for (let l = 0; l < s.numLayers; l++) {
    const p = `model.layers.${l}.`;
    ones(`${p}input_layernorm.weight`);
    ones(`${p}post_attention_layernorm.weight`);
    for (const name of PROJECTION_NAMES) mat(projectionWeightName(l, name), ...projectionShape(dims, name));
  }
  return t;
}
