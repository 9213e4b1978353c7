import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LlamaConfig } from './config.js';
import { LocalFp32Provider, type TensorMap } from './frozen.js';
import { argmax, generate, sampleToken } from './generate.js';
import { KvCache, LlamaModel, type Batch } from './llama.js';
import { LoraAdapter } from './lora.js';
import { expectedTensorShapes } from './loader.js';

const config: LlamaConfig = {
  architecture: 'qwen2', hiddenSize: 24, intermediateSize: 40, numLayers: 2, numHeads: 6, numKvHeads: 2, headDim: 4,
  vocabSize: 29, rmsNormEps: 1e-6, ropeTheta: 10000, ropeScaling: null, maxPositionEmbeddings: 128, tieWordEmbeddings: false,
  attentionBias: true, bosTokenId: 1, eosTokenId: 2, torchDtype: 'float32',
};

/** Deterministic pseudo-random weights (no RNG state: a hash of the index). */
function tinyTensors(): TensorMap {
  const m: TensorMap = new Map();
  let salt = 0;
  for (const [name, shape] of expectedTensorShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const isNorm = name.endsWith('norm.weight');
    const scale = name.includes('embed') ? 1 : shape.length === 2 ? 1.5 / Math.sqrt(shape[1]!) : 0.3;
    salt++;
    for (let i = 0; i < n; i++) {
      const u = Math.sin(i * 12.9898 + salt * 78.233) * 43758.5453;
      const r = (u - Math.floor(u)) * 2 - 1;
      data[i] = isNorm ? 1 + 0.1 * r : scale * r;
    }
    m.set(name, { shape, data });
  }
  return m;
}

const tensors = tinyTensors();
const model = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));

function nonzeroLora(): LoraAdapter {
  const lora = LoraAdapter.create(config, { rank: 3, alpha: 6 }, { seed: 'gen' });
  for (const p of lora.parameters()) if (p.name.endsWith('lora_B')) for (let i = 0; i < p.value.length; i++) p.value[i] = 0.3 * Math.cos(i + p.name.length);
  return lora;
}

function single(tokens: number[]): Batch {
  const T = tokens.length;
  return { T, tokens: Int32Array.from(tokens), targets: new Int32Array(T).fill(-100), positions: Int32Array.from({ length: T }, (_, i) => i), seqIds: new Int32Array(T) };
}

test('a fresh adapter (B = 0) leaves logits and generations equal to the base model', async () => {
  const lora = LoraAdapter.create(config, { rank: 4, alpha: 8 }, { seed: 'zero' });
  const b = single([1, 5, 9, 3, 17, 4]);
  assert.deepEqual((await model.forward(b, lora)).logits, (await model.forward(b, null)).logits);
  const opts = { maxNewTokens: 6, eosTokenId: null };
  assert.deepEqual(await generate(model, lora, [1, 5, 9], opts), await generate(model, null, [1, 5, 9], opts));
  // ... while a nonzero B does change them.
  assert.notDeepEqual((await model.forward(b, nonzeroLora())).logits, (await model.forward(b, null)).logits);
});

for (const withLora of [false, true]) {
  test(`KV-cache logits equal a full forward of the prefix at every step (${withLora ? 'with' : 'without'} LoRA)`, async () => {
    const lora = withLora ? nonzeroLora() : null;
    const seq = [1, 7, 3, 22, 9, 14, 5, 28, 0, 11];
    const cache = new KvCache(config, seq.length);
    const V = config.vocabSize;
    // Prompt of 4 in one call, then one token at a time.
    const first = await model.forwardCached(Int32Array.from(seq.slice(0, 4)), cache, lora);
    const full4 = (await model.forward(single(seq.slice(0, 4)), lora)).logits;
    for (let i = 0; i < full4.length; i++) assert.ok(Math.abs(first[i]! - full4[i]!) < 1e-5, `prompt logit ${i}`);
    for (let n = 5; n <= seq.length; n++) {
      const step = await model.forwardCached(Int32Array.of(seq[n - 1]!), cache, lora);
      const full = (await model.forward(single(seq.slice(0, n)), lora)).logits.subarray((n - 1) * V);
      for (let j = 0; j < V; j++) assert.ok(Math.abs(step[j]! - full[j]!) < 1e-5, `step ${n} logit ${j}: ${step[j]} vs ${full[j]}`);
    }
    assert.equal(cache.length, seq.length);
    await assert.rejects(model.forwardCached(Int32Array.of(1), cache, lora), /helora: KV cache holds/);
  });
}

test('greedy generation equals repeated argmax of full forwards, and stops on eos', async () => {
  const lora = nonzeroLora();
  const prompt = [1, 4, 8];
  const got = await generate(model, lora, prompt, { maxNewTokens: 7, eosTokenId: null });
  const seq = [...prompt];
  for (let i = 0; i < 7; i++) {
    const lg = (await model.forward(single(seq), lora)).logits;
    seq.push(argmax(lg.subarray((seq.length - 1) * config.vocabSize)));
  }
  assert.deepEqual(got, seq.slice(prompt.length));
  // Make the third generated token the eos: generation ends right after it.
  const stopped = await generate(model, lora, prompt, { maxNewTokens: 7, eosTokenId: got[2]! });
  assert.deepEqual(stopped, got.slice(0, got.indexOf(got[2]!) + 1));
});

test('sampling: seeded runs repeat, tiny top-p is greedy, temperature sampling follows softmax', async () => {
  const a = await generate(model, null, [1, 2, 3], { maxNewTokens: 8, temperature: 1, seed: 's', eosTokenId: null });
  assert.deepEqual(await generate(model, null, [1, 2, 3], { maxNewTokens: 8, temperature: 1, seed: 's', eosTokenId: null }), a);
  const greedy = await generate(model, null, [1, 2, 3], { maxNewTokens: 8, eosTokenId: null });
  assert.deepEqual(await generate(model, null, [1, 2, 3], { maxNewTokens: 8, temperature: 0.7, topP: 1e-6, seed: 'x', eosTokenId: null }), greedy);
  // sampleToken on a known distribution: probs ~ [0.5, 0.25, 0.25] at temperature 1.
  const logits = Float32Array.from([Math.log(2), 0, 0]);
  assert.equal(sampleToken(logits, 1, 1, 0.49), 0);
  assert.equal(sampleToken(logits, 1, 1, 0.51), 1);
  assert.equal(sampleToken(logits, 1, 1, 0.99), 2);
  // top-p 0.6 keeps tokens 0 and 1 (0.5 + 0.25 >= 0.6), renormalised to 2/3, 1/3.
  assert.equal(sampleToken(logits, 1, 0.6, 0.6), 0);
  assert.equal(sampleToken(logits, 1, 0.6, 0.7), 1);
  assert.equal(sampleToken(logits, 0, 1, 0.99), 0);
});
