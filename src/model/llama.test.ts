// LlamaModel against the PyTorch reference (tiny HF-format checkpoints built at test time),
// plus model-level checks: dropout finite differences, accumulation, merge, quantized provider.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { loadReferenceCase, relErr, runTorchReference, type ReferenceExpected } from './reference/torch-reference.js';
import { loadModelFolder } from './loader.js';
import { LocalFp32Provider, LocalQuantizedProvider } from './frozen.js';
import { LlamaModel, type Batch } from './llama.js';
import { LoraAdapter, mergeLora } from './lora.js';
import type { ProjectionName } from './projections.js';
import type { LoraTensors } from './peft.js';

let dir = '';
let cases: string[] = [];

before(() => {
  ({ dir, cases } = runTorchReference('helora-torchref-'));
});
after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

interface Expected extends ReferenceExpected {
  loss_lora: number;
  lora: { rank: number; alpha: number; targetModules: string[]; keys: string[] };
}

function loraTensorsOf(exp: Expected, get: (k: string) => Float32Array): LoraTensors {
  const layers = new Map<string, { A: Float32Array; B: Float32Array; inDim: number; outDim: number }>();
  for (const key of exp.lora.keys) {
    const a = exp.tensors[`lora.${key}.lora_A`]!, b = exp.tensors[`lora.${key}.lora_B`]!;
    layers.set(key, { A: get(`lora.${key}.lora_A`).slice(), B: get(`lora.${key}.lora_B`).slice(), inDim: a.shape[1]!, outDim: b.shape[0]! });
  }
  return { rank: exp.lora.rank, alpha: exp.lora.alpha, dropout: 0, targetModules: exp.lora.targetModules, layersToTransform: null, layers };
}

test('matches the PyTorch reference: logits, loss and LoRA gradients for every case', async () => {
  assert.ok(cases.length >= 5, `expected at least 5 reference cases, got ${cases.length}`);
  for (const name of cases) {
    const { exp, get, batch, folder } = loadCase(name);
    const { config, tensors } = loadModelFolder(folder);
    const model = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));
    const lora = LoraAdapter.fromTensors(config, loraTensorsOf(exp, get));

    const base = await model.forward(batch, null);
    assert.ok(relErr(base.logits, get('logits_base')) <= 1e-4, `${name}: base logits rel err ${relErr(base.logits, get('logits_base'))}`);
    assert.ok(Math.abs(base.loss - exp.loss_base) <= 1e-5 * Math.abs(exp.loss_base), `${name}: base loss ${base.loss} vs ${exp.loss_base}`);

    const lossOnly = await model.forward(batch, null, { returnLogits: false });
    assert.equal(lossOnly.logits.length, 0);
    assert.ok(Math.abs(lossOnly.loss - base.loss) <= 1e-6 * base.loss, `${name}: chunked loss ${lossOnly.loss} vs ${base.loss}`);

    const withLora = await model.forward(batch, lora);
    assert.ok(relErr(withLora.logits, get('logits_lora')) <= 1e-4, `${name}: LoRA logits rel err ${relErr(withLora.logits, get('logits_lora'))}`);
    assert.ok(Math.abs(withLora.loss - exp.loss_lora) <= 1e-5 * Math.abs(exp.loss_lora), `${name}: LoRA loss ${withLora.loss} vs ${exp.loss_lora}`);

    lora.zeroGrad();
    const fb = await model.forwardBackward(batch, lora);
    assert.ok(Math.abs(fb.loss - exp.loss_lora) <= 1e-5 * Math.abs(exp.loss_lora), `${name}: forwardBackward loss ${fb.loss} vs ${exp.loss_lora}`);
    assert.equal(fb.tokens, batch.targets.filter((t) => t !== -100).length);
    const params = new Map(lora.parameters().map((p) => [p.name, p]));
    assert.equal(params.size, exp.lora.keys.length * 2);
    for (const key of exp.lora.keys) {
      for (const ab of ['lora_A', 'lora_B']) {
        const p = params.get(`${key}.${ab}`);
        assert.ok(p, `${name}: no parameter ${key}.${ab}`);
        const e = relErr(p.grad, get(`grad.${key}.${ab}`));
        assert.ok(e <= 1e-3, `${name}: gradient of ${key}.${ab} rel err ${e}`);
      }
    }
  }
});

async function firstCase(): Promise<{ model: LlamaModel; batch: Batch; lora: LoraAdapter; tensors: Map<string, { shape: number[]; data: Float32Array }>; config: ReturnType<typeof loadModelFolder>['config'] }> {
  const { exp, get, batch, folder } = loadCase('llama_gqa');
  const { config, tensors } = loadModelFolder(folder);
  const model = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));
  const lora = LoraAdapter.fromTensors(config, loraTensorsOf(exp, get));
  return { model, batch, lora, tensors, config };
}

test('forwardBackward with LoRA dropout matches finite differences of the same-mask forward', async () => {
  const { model, batch, config, lora: ref } = await firstCase();
  const t = ref.toTensors();
  t.dropout = 0.3;
  const lora = LoraAdapter.fromTensors(config, t);
  const seed = 'fd-seed';
  await model.forwardBackward(batch, lora, { dropoutSeed: seed });
  const params = lora.parameters();
  // Dropout is really on: the same-mask loss differs from the no-dropout loss.
  const l0 = (await model.forward(batch, lora, { dropoutSeed: seed })).loss;
  assert.notEqual(l0, (await model.forward(batch, lora)).loss);
  const eps = 1e-2;
  let checked = 0;
  for (const name of ['layers.0.self_attn.q_proj.lora_A', 'layers.1.mlp.down_proj.lora_B', 'layers.0.mlp.gate_proj.lora_B', 'layers.1.self_attn.v_proj.lora_A']) {
    const p = params.find((q) => q.name === name)!;
    for (const i of [0, 3, p.value.length - 1]) {
      const v0 = p.value[i]!;
      p.value[i] = v0 + eps; const lp = (await model.forward(batch, lora, { dropoutSeed: seed })).loss;
      p.value[i] = v0 - eps; const lm = (await model.forward(batch, lora, { dropoutSeed: seed })).loss;
      p.value[i] = v0;
      const fd = (lp - lm) / (2 * eps);
      const an = p.grad[i]!;
      assert.ok(Math.abs(fd - an) <= 2e-2 * Math.abs(an) + 2e-4, `${name}[${i}]: fd ${fd} vs analytic ${an}`);
      checked++;
    }
  }
  assert.equal(checked, 12);
});

test('gradients accumulate over calls and scale with lossDenominator', async () => {
  const { model, batch, lora } = await firstCase();
  lora.zeroGrad();
  await model.forwardBackward(batch, lora);
  const once = lora.parameters().map((p) => p.grad.slice());
  await model.forwardBackward(batch, lora);
  const twice = lora.parameters().map((p) => p.grad.slice());
  lora.zeroGrad();
  const n = batch.targets.filter((t) => t !== -100).length;
  const r = await model.forwardBackward(batch, lora, { lossDenominator: 4 * n });
  assert.equal(r.tokens, n);
  const quarter = lora.parameters().map((p) => p.grad);
  for (let j = 0; j < once.length; j++) {
    for (let i = 0; i < once[j]!.length; i += 7) {
      assert.ok(Math.abs(twice[j]![i]! - 2 * once[j]![i]!) <= 1e-6 * (1 + Math.abs(once[j]![i]!)));
      assert.ok(Math.abs(4 * quarter[j]![i]! - once[j]![i]!) <= 1e-6 * (1 + Math.abs(once[j]![i]!)));
    }
  }
});

test('mergeLora: the merged checkpoint without LoRA equals base + LoRA', async () => {
  const { model, batch, lora, tensors, config } = await firstCase();
  const want = (await model.forward(batch, lora)).logits;
  const merged = mergeLora(tensors, lora);
  const mModel = LlamaModel.fromTensors(config, merged, LocalFp32Provider.fromTensors(config, merged));
  const got = (await mModel.forward(batch, null)).logits;
  assert.ok(relErr(got, want) <= 1e-5, `merged rel err ${relErr(got, want)}`);
  // The originals are untouched and merging really changed the weights.
  const base = (await model.forward(batch, null)).logits;
  assert.ok(relErr(base, want) > 1e-3);
});

test('LocalQuantizedProvider stays close to fp32 (int8 weights, 8-bit per-token activations)', async () => {
  const { batch, lora, tensors, config } = await firstCase();
  const fp = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));
  const q8 = LlamaModel.fromTensors(config, tensors, LocalQuantizedProvider.fromTensors(config, tensors));
  const a = await fp.forward(batch, lora), b = await q8.forward(batch, lora);
  const e = relErr(b.logits, a.logits);
  assert.ok(e > 0 && e < 0.05, `quantized logits rel err ${e}`);
  assert.ok(Math.abs(a.loss - b.loss) < 0.02 * a.loss);
  lora.zeroGrad();
  await fp.forwardBackward(batch, lora);
  const g1 = lora.parameters().map((p) => p.grad.slice());
  lora.zeroGrad();
  await q8.forwardBackward(batch, lora);
  const g2 = lora.parameters().map((p) => p.grad);
  let dot = 0, n1 = 0, n2 = 0;
  for (let j = 0; j < g1.length; j++) for (let i = 0; i < g1[j]!.length; i++) { dot += g1[j]![i]! * g2[j]![i]!; n1 += g1[j]![i]! ** 2; n2 += g2[j]![i]! ** 2; }
  const cosine = dot / Math.sqrt(n1 * n2);
  assert.ok(cosine > 0.99, `quantized vs fp32 gradient cosine ${cosine}`);
});

test('bad inputs are rejected with helora errors', async () => {
  const { model, batch, config } = await firstCase();
  await assert.rejects(model.forward({ ...batch, tokens: batch.tokens.slice(1) }, null), /helora: batch tokens/);
  const bad = batch.tokens.slice(); bad[0] = config.vocabSize;
  await assert.rejects(model.forward({ ...batch, tokens: bad }, null), /helora: token id/);
  assert.throws(() => LoraAdapter.create(config, { targetModules: ['bogus' as ProjectionName] }), /helora: unknown LoRA target/);
});

function loadCase(name: string) {
  return loadReferenceCase<Expected>(dir, name);
}
