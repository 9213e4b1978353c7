// Full-parameter training (pretraining): gradients of every weight (projections through
// LocalTrainableProvider, embeddings / tied or untied LM head / RMSNorm / q,k,v biases through
// LlamaModel fullGrads) against PyTorch autograd on the reference checkpoints.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { loadReferenceCase, relErr, runTorchReference, type ReferenceExpected } from './reference/torch-reference.js';
import { expectedTensorShapes, loadModelFolder } from './loader.js';
import { LocalFp32Provider, LocalTrainableProvider } from './frozen.js';
import { LlamaModel } from './llama.js';

let dir = '';
let cases: string[] = [];

before(() => {
  ({ dir, cases } = runTorchReference('helora-fullgrad-'));
});
after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

type Expected = ReferenceExpected;

test('full-parameter gradients of every weight match PyTorch autograd (tied, untied, biases, GQA)', async () => {
  assert.ok(cases.length >= 5);
  let tied = 0, untied = 0, biased = 0;
  for (const name of cases) {
    const { exp, get, batch, folder } = loadCase(name);
    const { config, tensors } = loadModelFolder(folder);
    const model = LlamaModel.fromTensors(config, tensors, LocalTrainableProvider.fromTensors(config, tensors), { fullGrads: true });
    model.zeroGrad();
    const r = await model.forwardBackward(batch, null);
    assert.ok(Math.abs(r.loss - exp.loss_base) <= 1e-5 * exp.loss_base, `${name}: loss ${r.loss} vs ${exp.loss_base}`);
    const params = model.parameters();
    // Every tensor of the checkpoint is trained, exactly once.
    const names = params.map((p) => p.name).sort();
    assert.deepEqual(names, [...expectedTensorShapes(config).keys()].sort(), `${name}: parameter list`);
    for (const p of params) {
      const e = relErr(p.grad, get(`fullgrad.${p.name}`));
      assert.ok(e <= 1e-3, `${name}: gradient of ${p.name} rel err ${e}`);
      assert.equal(p.value, tensors.get(p.name)!.data, `${name}: ${p.name} must be the live tensor`);
    }
    if (config.tieWordEmbeddings) tied++; else untied++;
    if (config.attentionBias) biased++;
  }
  assert.ok(tied > 0 && untied > 0 && biased > 0, 'the cases cover tied, untied and biased models');
});

test('full gradients accumulate over calls, zeroGrad clears them, and an SGD step lowers the loss', async () => {
  const { batch, folder } = loadCase('llama_gqa');
  const { config, tensors } = loadModelFolder(folder);
  const model = LlamaModel.fromTensors(config, tensors, LocalTrainableProvider.fromTensors(config, tensors), { fullGrads: true });
  model.zeroGrad();
  await model.forwardBackward(batch, null);
  const once = model.parameters().map((p) => p.grad.slice());
  await model.forwardBackward(batch, null);
  model.parameters().forEach((p, i) => {
    for (let j = 0; j < p.grad.length; j += 7) assert.ok(Math.abs(p.grad[j]! - 2 * once[i]![j]!) <= 1e-5 * (1 + Math.abs(once[i]![j]!)), `${p.name}[${j}] did not accumulate`);
  });
  model.zeroGrad();
  for (const p of model.parameters()) assert.ok(p.grad.every((g) => g === 0), `${p.name} not zeroed`);

  const before = (await model.forward(batch, null)).loss;
  await model.forwardBackward(batch, null);
  for (const p of model.parameters()) for (let j = 0; j < p.value.length; j++) p.value[j] = p.value[j]! - 0.05 * p.grad[j]!;
  const afterLoss = (await model.forward(batch, null)).loss;
  assert.ok(afterLoss < before, `loss ${before} -> ${afterLoss} after a gradient step`);
});

test('without fullGrads the model keeps its LoRA-only behaviour', async () => {
  const { batch, folder } = loadCase('llama_gqa');
  const { config, tensors } = loadModelFolder(folder);
  const model = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));
  assert.equal(model.fullGrads, false);
  assert.throws(() => model.parameters(), /fullGrads/);
  await assert.rejects(model.forwardBackward(batch, null), /LoRA adapter or a model built with/);
});

test('LocalTrainableProvider refuses a backward without its forward', async () => {
  const { folder } = loadCase('llama_gqa');
  const { config, tensors } = loadModelFolder(folder);
  const p = LocalTrainableProvider.fromTensors(config, tensors);
  await assert.rejects(p.backward(0, 'o', [new Float32Array(3 * config.hiddenSize)], 3), /no matching forward input/);
});

function loadCase(name: string) {
  return loadReferenceCase<Expected>(dir, name);
}
