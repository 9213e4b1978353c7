import type { Parameter } from '../model/parameter.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { AdamW, clipGradNorm, globalGradNorm, makeSchedule } from './optim.js';

/** Debian's PyTorch; the pyenv python on PATH has no torch. Missing torch fails the test. */
const TORCH_PYTHON = '/usr/bin/python3';

function runTorch(script: string, input: unknown): any {
  const r = spawnSync(TORCH_PYTHON, ['-c', script], { input: JSON.stringify(input), encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`cannot run ${TORCH_PYTHON}: ${r.error.message}`);
  assert.equal(r.status, 0, `torch reference failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const ADAMW_REF = `
import json, sys, torch
d = json.load(sys.stdin)
ps = [torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in d['init']]
opt = torch.optim.AdamW(ps, lr=d['lrs'][0], betas=(d['b1'], d['b2']), eps=d['eps'], weight_decay=d['wd'])
for step, lr in enumerate(d['lrs']):
    for g in opt.param_groups: g['lr'] = lr
    for p, g in zip(ps, d['grads'][step]): p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
print(json.dumps([p.detach().tolist() for p in ps]))
`;

const CLIP_REF = `
import json, sys, torch
d = json.load(sys.stdin)
ps = [torch.nn.Parameter(torch.zeros(len(g), dtype=torch.float64)) for g in d['grads']]
for p, g in zip(ps, d['grads']): p.grad = torch.tensor(g, dtype=torch.float64)
n = torch.nn.utils.clip_grad_norm_(ps, d['max'])
print(json.dumps({'norm': float(n), 'grads': [p.grad.tolist() for p in ps]}))
`;

function rand(n: number, scale = 1): number[] {
  return Array.from({ length: n }, () => (Math.random() * 2 - 1) * scale);
}
function makeParams(init: number[][]): Parameter[] {
  return init.map((v, i) => ({ name: `p${i}`, value: Float32Array.from(v), grad: new Float32Array(v.length) }));
}

test('AdamW matches torch.optim.AdamW over several steps with changing lr and weight decay', () => {
  const sizes = [7, 13, 1];
  const steps = 6;
  const init = sizes.map((n) => rand(n));
  // Gradients of very different magnitudes exercise eps and the bias corrections.
  const grads = Array.from({ length: steps }, (_, s) => sizes.map((n) => rand(n, s === 2 ? 1e-3 : 3)));
  const lrs = [1e-2, 2e-2, 3e-2, 2.5e-2, 1e-2, 5e-3];
  const cfg = { b1: 0.85, b2: 0.98, eps: 1e-6, wd: 0.1 };
  const expected: number[][] = runTorch(ADAMW_REF, { init, grads, lrs, ...cfg });

  const params = makeParams(init);
  const opt = new AdamW(params, { lr: 1, beta1: cfg.b1, beta2: cfg.b2, eps: cfg.eps, weightDecay: cfg.wd });
  for (let s = 0; s < steps; s++) {
    params.forEach((p, i) => p.grad.set(grads[s]![i]!));
    opt.step(lrs[s]);
  }
  let maxErr = 0;
  params.forEach((p, i) => p.value.forEach((v, j) => (maxErr = Math.max(maxErr, Math.abs(v - expected[i]![j]!)))));
  assert.ok(maxErr < 2e-6, `max deviation from torch ${maxErr}`);
  // The updates are not trivially small: values really moved.
  const moved = Math.max(...params.flatMap((p, i) => Array.from(p.value, (v, j) => Math.abs(v - init[i]![j]!))));
  assert.ok(moved > 0.05, `parameters barely moved (${moved})`);
});

test('AdamW state save/load resumes exactly', () => {
  const init = [rand(9), rand(4)];
  const grads = Array.from({ length: 5 }, () => [rand(9), rand(4)]);
  const a = makeParams(init);
  const optA = new AdamW(a, { lr: 0.05 });
  for (let s = 0; s < 5; s++) {
    a.forEach((p, i) => p.grad.set(grads[s]![i]!));
    optA.step();
  }
  const b = makeParams(init);
  const optB = new AdamW(b, { lr: 0.05 });
  for (let s = 0; s < 3; s++) {
    b.forEach((p, i) => p.grad.set(grads[s]![i]!));
    optB.step();
  }
  const saved = optB.state();
  const c = b.map((p) => ({ name: p.name, value: p.value.slice(), grad: new Float32Array(p.value.length) }));
  const optC = new AdamW(c, { lr: 0.05 });
  optC.loadState(saved);
  assert.equal(optC.stepCount, 3);
  for (let s = 3; s < 5; s++) {
    c.forEach((p, i) => p.grad.set(grads[s]![i]!));
    optC.step();
  }
  a.forEach((p, i) => assert.deepEqual(c[i]!.value, p.value));
  // Mutating the snapshot must not reach into the optimizer.
  saved.m['p0']!.fill(123);
  assert.notEqual(optB.state().m['p0']![0], 123);
  assert.throws(() => optC.loadState({ step: 1, m: { p0: new Float32Array(9) }, v: { p0: new Float32Array(9) } }), /lacks moments for parameter p1/);
  assert.throws(() => optC.loadState({ ...saved, m: { ...saved.m, p1: new Float32Array(3) } }), /p1 has 3\/4 values/);
});

test('AdamW rejects mismatched parameter shapes and bad hyper-parameters', () => {
  assert.throws(() => new AdamW([{ name: 'x', value: new Float32Array(3), grad: new Float32Array(2) }], { lr: 1 }), /3 values but 2 gradient/);
  assert.throws(() => new AdamW(makeParams([[1]]), { lr: 1, beta2: 1 }), /beta2/);
  assert.throws(() => new AdamW(makeParams([[1]]), { lr: -1 }), /lr/);
});

test('clipGradNorm matches torch clip_grad_norm_ and returns the pre-clip norm', () => {
  const g = [rand(50, 2), rand(3, 2)];
  for (const maxNorm of [0.5, 1e6]) {
    const ref = runTorch(CLIP_REF, { grads: g, max: maxNorm });
    const params = g.map((v, i) => ({ name: `g${i}`, value: new Float32Array(v.length), grad: Float32Array.from(v) }));
    const norm = clipGradNorm(params, maxNorm);
    assert.ok(Math.abs(norm - ref.norm) < 1e-5 * ref.norm, `norm ${norm} vs torch ${ref.norm}`);
    params.forEach((p, i) => p.grad.forEach((x, j) => assert.ok(Math.abs(x - ref.grads[i][j]) < 1e-6)));
    const after = globalGradNorm(params);
    if (maxNorm < ref.norm) assert.ok(Math.abs(after - maxNorm) < 1e-5, `clipped norm ${after}`);
    else assert.ok(Math.abs(after - norm) < 1e-5);
  }
  const bad = [{ name: 'n', value: new Float32Array(2), grad: Float32Array.from([NaN, 1]) }];
  assert.ok(Number.isNaN(clipGradNorm(bad, 1)));
  assert.equal(bad[0]!.grad[1], 1, 'a non-finite norm leaves gradients untouched');
});

test('schedules: warmup, cosine and linear decay to a floor, constant', () => {
  const lr = 1e-3;
  const minLr = 1e-4;
  const cos = makeSchedule({ kind: 'cosine', lr, warmupSteps: 10, totalSteps: 110, minLr });
  for (let s = 0; s < 10; s++) assert.ok(Math.abs(cos(s) - (lr * (s + 1)) / 10) < 1e-15);
  assert.equal(cos(10), lr);
  // Half way through the decay the cosine sits at the middle between peak and floor.
  assert.ok(Math.abs(cos(60) - (lr + minLr) / 2) < 1e-12);
  for (let s = 11; s < 110; s++) assert.ok(cos(s) < cos(s - 1), `cosine not decreasing at ${s}`);
  assert.ok(cos(109) > minLr && cos(109) - minLr < 1e-6);
  assert.equal(cos(500), minLr);
  // Cosine is flat at both ends: its first decay step falls less than a linear one would.
  const lin = makeSchedule({ kind: 'linear', lr, warmupSteps: 10, totalSteps: 110, minLr });
  assert.ok(lr - cos(11) < lr - lin(11));
  const d1 = lin(20) - lin(21);
  const d2 = lin(80) - lin(81);
  assert.ok(Math.abs(d1 - d2) < 1e-15 && Math.abs(d1 - (lr - minLr) / 100) < 1e-15);
  assert.ok(Math.abs(lin(60) - (lr + minLr) / 2) < 1e-15);
  assert.equal(lin(1000), minLr);
  const c = makeSchedule({ kind: 'constant', lr, warmupSteps: 4 });
  assert.deepEqual([0, 1, 2, 3, 4, 1000].map(c), [lr / 4, lr / 2, (3 * lr) / 4, lr, lr, lr]);
  assert.equal(makeSchedule({ kind: 'constant', lr })(0), lr);
  assert.throws(() => makeSchedule({ kind: 'cosine', lr }), /needs totalSteps/);
  assert.throws(() => makeSchedule({ kind: 'linear', lr, totalSteps: 5, minLr: 1 }), /minLr/);
  assert.throws(() => makeSchedule({ kind: 'bogus' as 'constant', lr }), /unknown schedule kind/);
});
