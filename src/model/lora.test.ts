import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LlamaConfig } from './config.js';
import { loadAdapter, saveAdapter } from './peft.js';
import { dropoutMask, LoraAdapter, loraLinearBackward, loraLinearForward, mergeLora, type LoraPair } from './lora.js';
import { projectionShape } from './projections.js';

const config: LlamaConfig = {
  architecture: 'llama', hiddenSize: 16, intermediateSize: 24, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 4,
  vocabSize: 11, rmsNormEps: 1e-5, ropeTheta: 10000, ropeScaling: null, maxPositionEmbeddings: 64, tieWordEmbeddings: true,
  attentionBias: false, bosTokenId: null, eosTokenId: null, torchDtype: 'float32',
};

function filled(n: number, f: (i: number) => number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return a;
}
const wave = (i: number, k: number): number => Math.sin(i * 1.7 + k) * 0.8;

/** L = sum(R * y) of the LoRA branch only; float32 so the step is large, L is bilinear in A and B. */
function branchLoss(x: Float32Array, T: number, pair: LoraPair, rank: number, scale: number, R: Float32Array, drop: { mask: Uint8Array; p: number } | null): number {
  const y = new Float32Array(T * pair.outDim);
  loraLinearForward(y, x, T, pair, rank, scale, drop);
  let s = 0;
  for (let i = 0; i < y.length; i++) s += y[i]! * R[i]!;
  return s;
}

for (const p of [0, 0.4]) {
  test(`LoRA linear backward matches finite differences (dropout ${p})`, () => {
    const T = 5, inDim = 6, outDim = 7, rank = 3, scale = 2.5;
    const pair: LoraPair = {
      A: filled(rank * inDim, (i) => wave(i, 1)), B: filled(outDim * rank, (i) => wave(i, 2)),
      gradA: new Float32Array(rank * inDim), gradB: new Float32Array(outDim * rank), inDim, outDim,
    };
    const x = filled(T * inDim, (i) => wave(i, 3)), R = filled(T * outDim, (i) => wave(i, 4));
    const drop = p > 0 ? { mask: dropoutMask(Buffer.from('s'), 'x', T * inDim, p), p } : null;
    if (drop) assert.ok(drop.mask.includes(0) && drop.mask.includes(1));
    const y = new Float32Array(T * outDim);
    const h = loraLinearForward(y, x, T, pair, rank, scale, drop);
    const dx = new Float32Array(T * inDim);
    loraLinearBackward(dx, R, x, h, T, pair, rank, scale, drop);
    const eps = 1e-2;
    for (const [name, arr, grad] of [['A', pair.A, pair.gradA], ['B', pair.B, pair.gradB], ['x', x, dx]] as const) {
      let maxG = 0;
      for (let i = 0; i < arr.length; i++) {
        const v0 = arr[i]!;
        arr[i] = v0 + eps; const lp = branchLoss(x, T, pair, rank, scale, R, drop);
        arr[i] = v0 - eps; const lm = branchLoss(x, T, pair, rank, scale, R, drop);
        arr[i] = v0;
        const fd = (lp - lm) / (2 * eps);
        maxG = Math.max(maxG, Math.abs(grad[i]!));
        assert.ok(Math.abs(fd - grad[i]!) <= 1e-3 * (1 + Math.abs(fd)), `d${name}[${i}]: fd ${fd} vs ${grad[i]}`);
      }
      assert.ok(maxG > 0.1, `d${name} is (near) zero`);
    }
  });
}

test('dropout masks: deterministic per seed and label, keep rate about 1 - p', () => {
  const n = 20000, p = 0.25;
  const a = dropoutMask(Buffer.from('seed'), 'L', n, p);
  assert.deepEqual(a, dropoutMask(Buffer.from('seed'), 'L', n, p));
  assert.notDeepEqual(a, dropoutMask(Buffer.from('seed'), 'M', n, p));
  const kept = a.reduce((s, v) => s + v, 0) / n;
  assert.ok(Math.abs(kept - (1 - p)) < 0.02, `keep rate ${kept}`);
});

test('create: PEFT init (A uniform in +-1/sqrt(in), B = 0), shapes, parameters and zeroGrad', () => {
  const lora = LoraAdapter.create(config, { rank: 4, alpha: 8, targetModules: ['q_proj', 'down_proj'] }, { seed: 'init' });
  assert.equal(lora.scale, 2);
  const params = lora.parameters();
  assert.deepEqual(params.map((p) => p.name), [
    'layers.0.self_attn.q_proj.lora_A', 'layers.0.self_attn.q_proj.lora_B', 'layers.0.mlp.down_proj.lora_A', 'layers.0.mlp.down_proj.lora_B',
    'layers.1.self_attn.q_proj.lora_A', 'layers.1.self_attn.q_proj.lora_B', 'layers.1.mlp.down_proj.lora_A', 'layers.1.mlp.down_proj.lora_B',
  ]);
  const down = lora.get(0, 'down_proj')!;
  assert.equal(down.A.length, 4 * config.intermediateSize);
  assert.equal(down.B.length, config.hiddenSize * 4);
  assert.equal(lora.get(0, 'k_proj'), undefined);
  const bound = 1 / Math.sqrt(config.intermediateSize);
  let maxAbs = 0;
  for (const v of down.A) maxAbs = Math.max(maxAbs, Math.abs(v));
  assert.ok(maxAbs <= bound && maxAbs > 0.7 * bound, `max |A| ${maxAbs} vs bound ${bound}`);
  assert.ok(down.B.every((v) => v === 0));
  // Same seed -> same init; no seed -> fresh randomness.
  assert.deepEqual(LoraAdapter.create(config, { rank: 4, alpha: 8, targetModules: ['q_proj', 'down_proj'] }, { seed: 'init' }).get(0, 'down_proj')!.A, down.A);
  assert.notDeepEqual(LoraAdapter.create(config, { rank: 4, alpha: 8, targetModules: ['q_proj', 'down_proj'] }).get(0, 'down_proj')!.A, down.A);
  params[0]!.grad.fill(3);
  lora.zeroGrad();
  assert.ok(params.every((p) => p.grad.every((v) => v === 0)));
  assert.equal(lora.numParameters(), params.reduce((s, p) => s + p.value.length, 0));
});

test('toTensors / fromTensors round trip, also through a PEFT folder on disk', () => {
  const lora = LoraAdapter.create(config, { rank: 2, alpha: 4, dropout: 0.1 }, { seed: 'rt' });
  for (const p of lora.parameters()) for (let i = 0; i < p.value.length; i++) p.value[i] = wave(i, p.name.length);
  const back = LoraAdapter.fromTensors(config, lora.toTensors());
  assert.deepEqual(back.config, lora.config);
  const a = lora.parameters(), b = back.parameters();
  assert.deepEqual(b.map((p) => p.name), a.map((p) => p.name));
  for (let j = 0; j < a.length; j++) assert.deepEqual(b[j]!.value, a[j]!.value);
  const dir = mkdtempSync(join(tmpdir(), 'helora-lora-'));
  try {
    saveAdapter(dir, lora.toTensors(), 'test/base');
    const disk = LoraAdapter.fromTensors(config, loadAdapter(dir, config));
    const c = disk.parameters();
    for (let j = 0; j < a.length; j++) assert.deepEqual(c[j]!.value, a[j]!.value);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // Wrong shapes are refused.
  const t = lora.toTensors();
  const first = t.layers.get('layers.0.self_attn.q_proj')!;
  t.layers.set('layers.0.self_attn.q_proj', { ...first, A: first.A.subarray(1) });
  assert.throws(() => LoraAdapter.fromTensors(config, t), /helora: adapter layers.0.self_attn.q_proj/);
});

test('mergeLora adds (alpha/r) B A to exactly the targeted weights', () => {
  const lora = LoraAdapter.create(config, { rank: 2, alpha: 6, targetModules: ['v_proj'] }, { seed: 'm' });
  const pair = lora.get(1, 'v_proj')!;
  for (let i = 0; i < pair.B.length; i++) pair.B[i] = wave(i, 9);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (let l = 0; l < config.numLayers; l++) {
    for (const m of ['q_proj', 'v_proj'] as const) {
      const [o, i] = projectionShape(config, m);
      tensors.set(`model.layers.${l}.self_attn.${m}.weight`, { shape: [o, i], data: filled(o * i, (k) => wave(k, l)) });
    }
  }
  const merged = mergeLora(tensors, lora);
  assert.equal(merged.get('model.layers.0.self_attn.q_proj.weight'), tensors.get('model.layers.0.self_attn.q_proj.weight'));
  const w0 = tensors.get('model.layers.1.self_attn.v_proj.weight')!.data, w1 = merged.get('model.layers.1.self_attn.v_proj.weight')!.data;
  const [o, inDim] = projectionShape(config, 'v_proj');
  for (let r = 0; r < o; r++) {
    for (let c = 0; c < inDim; c++) {
      let d = 0;
      for (let k = 0; k < 2; k++) d += pair.B[r * 2 + k]! * pair.A[k * inDim + c]!;
      assert.ok(Math.abs(w1[r * inDim + c]! - (w0[r * inDim + c]! + 3 * d)) < 1e-5);
    }
  }
});
