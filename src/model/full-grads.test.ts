// Full-parameter training (pretraining): gradients of every weight (projections through
// LocalTrainableProvider, embeddings / tied or untied LM head / RMSNorm / q,k,v biases through
// LlamaModel fullGrads) against PyTorch autograd on the reference checkpoints.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../util/paths.js';
import { expectedTensorShapes, loadModelFolder } from './loader.js';
import { LocalFp32Provider, LocalTrainableProvider } from './frozen.js';
import { LlamaModel, type Batch } from './llama.js';

const PYTHON = '/usr/bin/python3';
let dir = '';
let cases: string[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'helora-fullgrad-'));
  const script = join(repoRoot(), 'src', 'model', 'reference', 'torch_reference.py');
  const r = spawnSync(PYTHON, [script, dir], { encoding: 'utf8', timeout: 120_000 });
  if (r.error || r.status !== 0) {
    throw new Error(`helora test: the PyTorch reference failed (${PYTHON} ${script}); it needs Debian's python3-torch. ` +
      `status ${r.status}, error ${r.error?.message ?? 'none'}\n${r.stderr}`);
  }
  cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')) as string[];
});
after(() => { if (dir) rmSync(dir, { recursive: true, force: true }); });

interface Expected {
  batch: { tokens: number[]; targets: number[]; positions: number[]; seqIds: number[] };
  loss_base: number;
  tensors: Record<string, { offset: number; shape: number[] }>;
}

function loadCase(name: string): { exp: Expected; get: (k: string) => Float32Array; batch: Batch; folder: string } {
  const folder = join(dir, name);
  const exp = JSON.parse(readFileSync(join(folder, 'expected.json'), 'utf8')) as Expected;
  const buf = readFileSync(join(folder, 'expected.bin'));
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const get = (k: string): Float32Array => {
    const t = exp.tensors[k];
    if (!t) throw new Error(`expected tensor ${k} missing`);
    return all.subarray(t.offset, t.offset + t.shape.reduce((a, b) => a * b, 1));
  };
  const b = exp.batch;
  const batch: Batch = { T: b.tokens.length, tokens: Int32Array.from(b.tokens), targets: Int32Array.from(b.targets), positions: Int32Array.from(b.positions), seqIds: Int32Array.from(b.seqIds) };
  return { exp, get, batch, folder };
}

/** max |a - b| / max |b|. */
function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num = Math.max(num, Math.abs(a[i]! - b[i]!)); den = Math.max(den, Math.abs(b[i]!)); }
  assert.ok(den > 0, 'reference tensor is all zeros');
  return num / den;
}

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
