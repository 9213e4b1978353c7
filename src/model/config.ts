// Hugging Face config.json -> LlamaConfig, for the Llama family (llama, mistral, qwen2).
// Anything whose math we do not implement is rejected by name, never silently ignored.

export type RopeScaling =
  | null
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  | { type: 'linear'; factor: number };

export interface LlamaConfig {
  architecture: 'llama' | 'mistral' | 'qwen2';
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Bias on the q, k and v projections (never on o_proj): true for qwen2. */
  attentionBias: boolean;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
  torchDtype: string | null;
}

/** Defaults of transformers' config classes for keys a config.json may omit. */
const DEFAULTS = {
  llama: { ropeTheta: 10000, rmsNormEps: 1e-6, maxPositionEmbeddings: 2048 },
  mistral: { ropeTheta: 10000, rmsNormEps: 1e-6, maxPositionEmbeddings: 4096 * 32 },
  qwen2: { ropeTheta: 10000, rmsNormEps: 1e-6, maxPositionEmbeddings: 32768 },
} as const;

function fail(msg: string): never {
  throw new Error('helora: config.json: ' + msg);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Upper bounds on the dimensions of a config.json, checked before anything is allocated from them.
 * Far above every supported checkpoint (Llama-3.1-405B: hidden 16384, intermediate 53248, 126
 * layers, 128 heads, vocab 128256); a larger value is refused as implausible, not as unsupported math.
 */
export const CONFIG_LIMITS = {
  hidden_size: 65_536,
  intermediate_size: 262_144,
  num_hidden_layers: 1_024,
  num_attention_heads: 1_024,
  num_key_value_heads: 1_024,
  head_dim: 1_024,
  vocab_size: 4_194_304,
  max_position_embeddings: 16_777_216,
} as const;
/** Most elements of one weight matrix (embeddings vocab x hidden, MLP intermediate x hidden): 2^32. */
export const MAX_MATRIX_ELEMENTS = 2 ** 32;

function posInt(obj: Record<string, unknown>, key: string, fallback?: number): number {
  const v = obj[key] ?? fallback;
  if (v === undefined) fail(`missing required key "${key}"`);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) fail(`"${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  const cap = Object.hasOwn(CONFIG_LIMITS, key) ? CONFIG_LIMITS[key as keyof typeof CONFIG_LIMITS] : undefined;
  if (cap !== undefined && v > cap) fail(`"${key}" = ${v} exceeds the limit of ${cap} (helora refuses implausible dimensions before allocating)`);
  return v;
}

function posNum(obj: Record<string, unknown>, key: string, fallback?: number): number {
  const v = obj[key] ?? fallback;
  if (v === undefined) fail(`missing required key "${key}"`);
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(`"${key}" must be a positive finite number, got ${JSON.stringify(v)}`);
  return v;
}

function optBool(obj: Record<string, unknown>, key: string, fallback: boolean): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') fail(`"${key}" must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function tokenId(v: unknown, key: string): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`"${key}" must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

function parseRopeScaling(v: unknown, maxPos: number): RopeScaling {
  if (v === undefined || v === null) return null;
  if (!isObject(v)) fail(`"rope_scaling" must be an object or null, got ${JSON.stringify(v)}`);
  const type = v.rope_type ?? v.type;
  if (type === 'default') return null;
  if (type === 'linear') return { type: 'linear', factor: posNum(v, 'factor') };
  if (type === 'llama3') {
    const factor = posNum(v, 'factor');
    const lowFreqFactor = posNum(v, 'low_freq_factor');
    const highFreqFactor = posNum(v, 'high_freq_factor');
    const originalMaxPositionEmbeddings = posInt(v, 'original_max_position_embeddings');
    // transformers divides by (high - low) when interpolating the middle band.
    if (!(highFreqFactor > lowFreqFactor)) fail(`rope_scaling llama3 needs high_freq_factor > low_freq_factor, got ${highFreqFactor} <= ${lowFreqFactor}`);
    if (originalMaxPositionEmbeddings > maxPos) fail(`rope_scaling original_max_position_embeddings ${originalMaxPositionEmbeddings} exceeds max_position_embeddings ${maxPos}`);
    return { type: 'llama3', factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings };
  }
  fail(`unsupported rope_scaling type ${JSON.stringify(type)} (supported: llama3, linear, default)`);
}

/** Parse and validate a Hugging Face config.json object (already JSON.parse'd). */
export function parseConfig(json: unknown): LlamaConfig {
  if (!isObject(json)) fail('expected a JSON object');
  const modelType = json.model_type;
  if (modelType !== 'llama' && modelType !== 'mistral' && modelType !== 'qwen2') {
    fail(`unsupported model_type ${JSON.stringify(modelType)} (supported: llama, mistral, qwen2)`);
  }
  const defaults = DEFAULTS[modelType];

  const hiddenAct = json.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') fail(`unsupported hidden_act ${JSON.stringify(hiddenAct)} (only silu, i.e. SwiGLU, is supported)`);
  if (optBool(json, 'mlp_bias', false)) fail('unsupported mlp_bias=true (biases on gate/up/down projections)');

  let attentionBias: boolean;
  if (modelType === 'qwen2') {
    attentionBias = true; // Qwen2Attention always has q/k/v bias, o_proj none.
  } else if (modelType === 'llama') {
    // transformers' LlamaAttention puts attention_bias on o_proj as well, which our layers do not model.
    if (optBool(json, 'attention_bias', false)) fail('unsupported attention_bias=true for llama (it adds a bias to o_proj too; only q/k/v biases are supported, as in qwen2)');
    attentionBias = false;
  } else {
    attentionBias = false; // MistralAttention has no biases.
  }

  const hiddenSize = posInt(json, 'hidden_size');
  const intermediateSize = posInt(json, 'intermediate_size');
  const numLayers = posInt(json, 'num_hidden_layers');
  const numHeads = posInt(json, 'num_attention_heads');
  const numKvHeads = posInt(json, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) fail(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  const explicitHeadDim = json.head_dim !== undefined && json.head_dim !== null;
  const headDim = explicitHeadDim ? posInt(json, 'head_dim') : hiddenSize / numHeads;
  if (!explicitHeadDim && !Number.isInteger(headDim)) fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads} (and no head_dim given)`);
  if (headDim % 2 !== 0) fail(`head_dim ${headDim} must be even for rotary embeddings`);
  const vocabSize = posInt(json, 'vocab_size');
  if (numHeads * headDim > CONFIG_LIMITS.hidden_size * 4) fail(`num_attention_heads * head_dim = ${numHeads * headDim} exceeds the limit of ${CONFIG_LIMITS.hidden_size * 4}`);
  for (const [what, n] of [['vocab_size * hidden_size', vocabSize * hiddenSize], ['intermediate_size * hidden_size', intermediateSize * hiddenSize]] as const) {
    if (n > MAX_MATRIX_ELEMENTS) fail(`${what} = ${n} elements exceeds the limit of ${MAX_MATRIX_ELEMENTS} for one matrix`);
  }
  const rmsNormEps = posNum(json, 'rms_norm_eps', defaults.rmsNormEps);
  const ropeTheta = posNum(json, 'rope_theta', defaults.ropeTheta);
  const maxPositionEmbeddings = posInt(json, 'max_position_embeddings', defaults.maxPositionEmbeddings);
  const ropeScaling = parseRopeScaling(json.rope_scaling, maxPositionEmbeddings);

  if (json.partial_rotary_factor !== undefined && json.partial_rotary_factor !== null && json.partial_rotary_factor !== 1 && json.partial_rotary_factor !== 1.0) {
    fail(`unsupported partial_rotary_factor ${JSON.stringify(json.partial_rotary_factor)} (only full rotary embeddings)`);
  }
  const pretrainingTp = json.pretraining_tp;
  if (pretrainingTp !== undefined && pretrainingTp !== null && (typeof pretrainingTp !== 'number' || !Number.isSafeInteger(pretrainingTp) || pretrainingTp < 1)) {
    fail(`"pretraining_tp" must be a positive integer, got ${JSON.stringify(pretrainingTp)}`);
  }

  if (modelType === 'mistral') {
    const sw = json.sliding_window;
    if (sw !== undefined && sw !== null) {
      if (typeof sw !== 'number' || !Number.isSafeInteger(sw) || sw <= 0) fail(`"sliding_window" must be a positive integer or null, got ${JSON.stringify(sw)}`);
      if (sw < maxPositionEmbeddings) fail(`unsupported sliding-window attention (sliding_window ${sw} < max_position_embeddings ${maxPositionEmbeddings}); only full causal attention is implemented`);
    }
  }
  if (modelType === 'qwen2' && optBool(json, 'use_sliding_window', false)) {
    fail('unsupported sliding-window attention (use_sliding_window=true); only full causal attention is implemented');
  }

  const tieWordEmbeddings = optBool(json, 'tie_word_embeddings', false);

  let eosTokenId: number | number[] | null;
  if (Array.isArray(json.eos_token_id)) {
    eosTokenId = json.eos_token_id.map((v, i) => {
      const id = tokenId(v, `eos_token_id[${i}]`);
      if (id === null) fail(`"eos_token_id[${i}]" must be an integer`);
      return id;
    });
  } else {
    eosTokenId = tokenId(json.eos_token_id, 'eos_token_id');
  }
  const bosTokenId = tokenId(json.bos_token_id, 'bos_token_id');
  for (const id of [bosTokenId, ...(Array.isArray(eosTokenId) ? eosTokenId : [eosTokenId])]) {
    if (id !== null && id >= vocabSize) fail(`special token id ${id} is outside vocab_size ${vocabSize}`);
  }

  // transformers >= 4.56 writes "dtype"; older versions "torch_dtype".
  const dtype = json.torch_dtype ?? json.dtype ?? null;
  if (dtype !== null && typeof dtype !== 'string') fail(`"torch_dtype" must be a string, got ${JSON.stringify(dtype)}`);

  return {
    architecture: modelType,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings,
    tieWordEmbeddings,
    attentionBias,
    bosTokenId,
    eosTokenId,
    torchDtype: dtype,
  };
}
