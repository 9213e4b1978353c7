import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from './config.js';

// config.json files as published on the Hugging Face model cards.
const LLAMA_3_2_1B = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: 128001,
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.45.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

const SMOLLM2_135M = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 0,
  eos_token_id: 0,
  hidden_act: 'silu',
  hidden_size: 576,
  initializer_range: 0.041666666666666664,
  intermediate_size: 1536,
  is_llama_config: true,
  max_position_embeddings: 8192,
  model_type: 'llama',
  num_attention_heads: 9,
  num_hidden_layers: 30,
  num_key_value_heads: 3,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_interleaved: false,
  rope_scaling: null,
  rope_theta: 100000,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.40.1',
  use_cache: true,
  vocab_size: 49152,
};

const QWEN2_5_0_5B = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.40.1',
  use_cache: true,
  use_mrope: false,
  use_sliding_window: false,
  vocab_size: 151936,
};

const TINYLLAMA_1_1B = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 5632,
  max_position_embeddings: 2048,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 22,
  num_key_value_heads: 4,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.35.0',
  use_cache: true,
  vocab_size: 32000,
};

const MISTRAL_7B_V03 = {
  architectures: ['MistralForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 1000000.0,
  sliding_window: null,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.42.0.dev0',
  use_cache: true,
  vocab_size: 32768,
};

test('Llama-3.2-1B config', () => {
  const c = parseConfig(LLAMA_3_2_1B);
  assert.deepEqual(c, {
    architecture: 'llama',
    hiddenSize: 2048,
    intermediateSize: 8192,
    numLayers: 16,
    numHeads: 32,
    numKvHeads: 8,
    headDim: 64,
    vocabSize: 128256,
    rmsNormEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    maxPositionEmbeddings: 131072,
    tieWordEmbeddings: true,
    attentionBias: false,
    bosTokenId: 128000,
    eosTokenId: 128001,
    torchDtype: 'bfloat16',
  });
  // Older transformers wrote rope_scaling.type instead of rope_type; the instruct model lists several eos ids.
  const { rope_type: _, ...scaling } = LLAMA_3_2_1B.rope_scaling;
  const c2 = parseConfig({ ...LLAMA_3_2_1B, rope_scaling: { ...scaling, type: 'llama3' }, eos_token_id: [128001, 128008, 128009] });
  assert.equal(c2.ropeScaling?.type, 'llama3');
  assert.deepEqual(c2.eosTokenId, [128001, 128008, 128009]);
});

test('SmolLM2-135M config', () => {
  const c = parseConfig(SMOLLM2_135M);
  assert.equal(c.architecture, 'llama');
  assert.equal(c.hiddenSize, 576);
  assert.equal(c.intermediateSize, 1536);
  assert.equal(c.numLayers, 30);
  assert.equal(c.numHeads, 9);
  assert.equal(c.numKvHeads, 3);
  assert.equal(c.headDim, 64); // 576 / 9, no head_dim key
  assert.equal(c.vocabSize, 49152);
  assert.equal(c.ropeTheta, 100000);
  assert.equal(c.ropeScaling, null);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.bosTokenId, 0);
  assert.equal(c.eosTokenId, 0);
});

test('Qwen2.5-0.5B config: q/k/v bias, sliding window off', () => {
  const c = parseConfig(QWEN2_5_0_5B);
  assert.equal(c.architecture, 'qwen2');
  assert.equal(c.hiddenSize, 896);
  assert.equal(c.intermediateSize, 4864);
  assert.equal(c.numLayers, 24);
  assert.equal(c.numHeads, 14);
  assert.equal(c.numKvHeads, 2);
  assert.equal(c.headDim, 64);
  assert.equal(c.vocabSize, 151936);
  assert.equal(c.rmsNormEps, 1e-6);
  assert.equal(c.ropeTheta, 1e6);
  assert.equal(c.attentionBias, true);
  assert.equal(c.tieWordEmbeddings, true);
  assert.throws(() => parseConfig({ ...QWEN2_5_0_5B, use_sliding_window: true }), /sliding-window attention/);
});

test('TinyLlama-1.1B config: untied', () => {
  const c = parseConfig(TINYLLAMA_1_1B);
  assert.equal(c.hiddenSize, 2048);
  assert.equal(c.intermediateSize, 5632);
  assert.equal(c.numLayers, 22);
  assert.equal(c.numHeads, 32);
  assert.equal(c.numKvHeads, 4);
  assert.equal(c.headDim, 64);
  assert.equal(c.vocabSize, 32000);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.maxPositionEmbeddings, 2048);
  assert.equal(c.ropeTheta, 10000);
});

test('Mistral: full attention accepted, real sliding window rejected', () => {
  const c = parseConfig(MISTRAL_7B_V03);
  assert.equal(c.architecture, 'mistral');
  assert.equal(c.numKvHeads, 8);
  assert.equal(c.headDim, 128);
  assert.equal(c.attentionBias, false);
  assert.equal(parseConfig({ ...MISTRAL_7B_V03, sliding_window: 32768 }).architecture, 'mistral');
  // Mistral-7B-v0.1 uses a 4096-token window inside 32768 positions.
  assert.throws(() => parseConfig({ ...MISTRAL_7B_V03, sliding_window: 4096 }), /unsupported sliding-window attention \(sliding_window 4096/);
  // Mistral-Nemo style: explicit head_dim that is not hidden/heads.
  const nemo = parseConfig({ ...MISTRAL_7B_V03, hidden_size: 5120, head_dim: 128 });
  assert.equal(nemo.headDim, 128);
  assert.equal(nemo.hiddenSize, 5120);
});

test('defaults for omitted optional keys', () => {
  const minimal = { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100 };
  const c = parseConfig(minimal);
  assert.equal(c.numKvHeads, 4);
  assert.equal(c.headDim, 16);
  assert.equal(c.rmsNormEps, 1e-6);
  assert.equal(c.ropeTheta, 10000);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.bosTokenId, null);
  assert.equal(c.eosTokenId, null);
  assert.equal(c.torchDtype, null);
  assert.equal(parseConfig({ ...minimal, dtype: 'float32' }).torchDtype, 'float32');
  assert.deepEqual(parseConfig({ ...minimal, rope_scaling: { type: 'linear', factor: 2 } }).ropeScaling, { type: 'linear', factor: 2 });
});

test('unsupported or invalid configs are rejected with the reason', () => {
  const base = SMOLLM2_135M;
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ ...base, model_type: 'gemma' }, /unsupported model_type "gemma"/],
    [{ ...base, model_type: undefined }, /unsupported model_type/],
    [{ ...base, hidden_act: 'gelu' }, /unsupported hidden_act "gelu"/],
    [{ ...base, mlp_bias: true }, /mlp_bias/],
    [{ ...base, attention_bias: true }, /attention_bias=true for llama.*o_proj/],
    [{ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } }, /unsupported rope_scaling type "yarn"/],
    [{ ...base, rope_scaling: { type: 'dynamic', factor: 2 } }, /unsupported rope_scaling type "dynamic"/],
    [{ ...base, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 4, high_freq_factor: 1, original_max_position_embeddings: 8192 } }, /high_freq_factor > low_freq_factor/],
    [{ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } }, /missing required key "low_freq_factor"/],
    [{ ...base, num_key_value_heads: 4 }, /not a multiple of num_key_value_heads 4/],
    [{ ...base, hidden_size: 577 }, /not a multiple of num_attention_heads/],
    [{ ...base, hidden_size: 0 }, /"hidden_size" must be a positive integer/],
    [{ ...base, num_hidden_layers: 2.5 }, /"num_hidden_layers" must be a positive integer/],
    [{ ...base, vocab_size: '49152' }, /"vocab_size" must be a positive integer/],
    [{ ...base, intermediate_size: undefined }, /missing required key "intermediate_size"/],
    [{ ...base, rms_norm_eps: -1 }, /rms_norm_eps/],
    [{ ...base, rope_theta: Infinity }, /rope_theta/],
    [{ ...base, eos_token_id: 49152 }, /outside vocab_size/],
    [{ ...base, bos_token_id: -1 }, /bos_token_id/],
    [{ ...base, tie_word_embeddings: 'yes' }, /tie_word_embeddings/],
    [{ ...base, partial_rotary_factor: 0.5 }, /partial_rotary_factor/],
    [{ ...base, head_dim: 63 }, /even/],
  ];
  for (const [json, re] of cases) assert.throws(() => parseConfig(json), (e: Error) => re.test(e.message) && e.message.startsWith('helora:'), `expected ${re}`);
  assert.throws(() => parseConfig(null), /expected a JSON object/);
  assert.throws(() => parseConfig([]), /expected a JSON object/);
});
