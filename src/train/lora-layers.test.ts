/**
 * LoRA on a subset of layers (PEFT layers_to_transform): only the listed layers get adapters, their
 * gradients equal those of a full adapter, backward asks the frozen provider for no product below
 * the lowest adapted layer, and the adapter round-trips through PEFT's adapter_config.json.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../model/config.js';
import { LocalFp32Provider, type FrozenLinearProvider } from '../model/frozen.js';
import { LlamaModel, type Batch } from '../model/llama.js';
import { LoraAdapter } from '../model/lora.js';
import { loadAdapter, saveAdapter } from '../model/peft.js';
import type { ProjectionGroup } from '../model/projections.js';
import { tinyModel } from './test-fixtures.js';

const SHAPE = { hiddenSize: 32, intermediateSize: 48, numLayers: 4, numHeads: 4, numKvHeads: 2, vocabSize: 50 };

/** Counts the backward products per layer. */
class CountingProvider implements FrozenLinearProvider {
  readonly backwardLayers: number[] = [];
  constructor(private readonly inner: FrozenLinearProvider) {}
  forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    return this.inner.forward(layer, group, x, T);
  }
  backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    this.backwardLayers.push(layer);
    return this.inner.backward(layer, group, dys, T);
  }
}

function batchOf(T: number, vocab: number): Batch {
  const tokens = Int32Array.from({ length: T }, (_, i) => (i * 7 + 3) % vocab);
  const targets = Int32Array.from({ length: T }, (_, i) => (i + 1 < T ? tokens[i + 1]! : -100));
  return { T, tokens, targets, positions: Int32Array.from({ length: T }, (_, i) => i), seqIds: new Int32Array(T) };
}

/** Non-zero B everywhere, so every layer's adapter changes the activations above it. */
function perturb(lora: LoraAdapter): void {
  for (const p of lora.parameters()) for (let i = 0; i < p.value.length; i++) p.value[i] = 0.05 * Math.sin(i * 0.37 + p.name.length);
}

test('layers_to_transform: adapters on the listed layers only, gradients equal a full adapter, no backward product below them', async () => {
  const { configJson, tensors } = tinyModel(SHAPE, 11);
  const config = parseConfig(configJson);
  const batch = batchOf(24, SHAPE.vocabSize);

  const full = LoraAdapter.create(config, { rank: 2, alpha: 4, dropout: 0 }, { seed: 'layers' });
  perturb(full);
  // The same weights on layers 2 and 3, none below: zero the lower layers' B so both models agree.
  const subset = LoraAdapter.create(config, { rank: 2, alpha: 4, dropout: 0, layers: [2, 3] }, { seed: 'layers' });
  assert.deepEqual(subset.adaptedLayers(), [2, 3]);
  assert.equal(subset.get(1, 'q_proj'), undefined);
  assert.equal(subset.numParameters() * 2, full.numParameters());
  for (const p of full.parameters()) {
    const l = Number(p.name.split('.')[1]);
    if (l < 2 && p.name.endsWith('lora_B')) p.value.fill(0);
  }
  const fullByName = new Map(full.parameters().map((p) => [p.name, p]));
  for (const p of subset.parameters()) p.value.set(fullByName.get(p.name)!.value);

  const counted = new CountingProvider(LocalFp32Provider.fromTensors(config, tensors));
  const model = LlamaModel.fromTensors(config, tensors, counted);
  const a = await model.forwardBackward(batch, full);
  // down, gate_up, o, qkv per layer; layer 0's q/k/v input gradient would only reach the frozen embeddings.
  assert.deepEqual(counted.backwardLayers, [3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0]);
  counted.backwardLayers.length = 0;
  const b = await model.forwardBackward(batch, subset);
  assert.equal(b.loss, a.loss);
  // Layer 2's q/k/v input gradient would only reach layers without adapters: not requested either.
  assert.deepEqual(counted.backwardLayers, [3, 3, 3, 3, 2, 2, 2]);
  for (const p of subset.parameters()) {
    const ref = fullByName.get(p.name)!.grad;
    let worst = 0, scale = 0;
    for (let i = 0; i < ref.length; i++) { worst = Math.max(worst, Math.abs(p.grad[i]! - ref[i]!)); scale = Math.max(scale, Math.abs(ref[i]!)); }
    assert.ok(scale > 0, `${p.name} has a gradient`);
    assert.ok(worst <= 1e-6 * scale, `${p.name}: max difference ${worst} (scale ${scale})`);
  }
});

test('layers_to_transform round-trips through adapter_config.json and is validated', (t) => {
  const { configJson } = tinyModel(SHAPE, 11);
  const config = parseConfig(configJson);
  const dir = mkdtempSync(join(tmpdir(), 'helora-lora-layers-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const lora = LoraAdapter.create(config, { rank: 2, alpha: 4, targetModules: ['q_proj', 'down_proj'], layers: [1, 3] }, { seed: 'rt' });
  perturb(lora);
  saveAdapter(dir, lora.toTensors(), 'test/base');
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
  assert.deepEqual(cfg.layers_to_transform, [1, 3]);
  assert.equal(cfg.layers_pattern, 'layers');
  const back = LoraAdapter.fromTensors(config, loadAdapter(dir, config));
  assert.deepEqual(back.config.layers, [1, 3]);
  assert.deepEqual(back.parameters().map((p) => p.name), lora.parameters().map((p) => p.name));
  back.parameters().forEach((p, j) => assert.deepEqual(p.value, lora.parameters()[j]!.value));

  // PEFT also writes a single index; a weight outside the listed layers, a layer the model lacks and
  // another layers_pattern are refused.
  const rewrite = (patch: Record<string, unknown>): void => writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, ...patch }));
  rewrite({ layers_to_transform: 3 });
  assert.throws(() => loadAdapter(dir, config), /layers\.1\.self_attn\.q_proj is not in layers_to_transform \[3\]/);
  rewrite({ layers_to_transform: [1, 3, 9] });
  assert.throws(() => loadAdapter(dir, config), /names layer 9, the model has 4/);
  rewrite({ layers_pattern: 'h' });
  assert.throws(() => loadAdapter(dir, config), /layers_pattern "h" is not supported/);
  rewrite({ layers_to_transform: [] });
  assert.throws(() => loadAdapter(dir, config), /layers_to_transform must be/);
  assert.throws(() => LoraAdapter.create(config, { layers: [3, 1] }), /ascending/);
  assert.throws(() => LoraAdapter.create(config, { layers: [4] }), /layer 4 does not exist/);
});
