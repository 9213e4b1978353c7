import { IGNORE_INDEX } from '../model/layers.js';
import type { Parameter } from '../model/parameter.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeSchedule } from './optim.js';
import { epochBatchSource, packExamples, seededRandom, type BatchSource, type Example, type PackedBatch } from './packing.js';
import { Trainer, evaluateLoss, microBatchSeed, type StepEvent } from './trainer.js';

const V = 12;

/** A bigram "adapter": logits of the next token = W[token] (V x V), all trainable. */
class Bigram {
  readonly W = new Float32Array(V * V);
  readonly gW = new Float32Array(V * V);
  parameters(): Parameter[] {
    return [{ name: 'W', value: this.W, grad: this.gW }];
  }
  zeroGrad(): void {
    this.gW.fill(0);
  }
}

/**
 * Cross entropy over target tokens: returns the mean, accumulates the gradient of
 * sum / lossDenominator (like LlamaModel). With a dropout seed, each
 * logit row is scaled by a seeded factor in [0.5, 1.5): training depends on the seed.
 */
class BigramModel {
  calls = 0;
  poison = false;
  constructor(private readonly useSeed = true) {}
  async forwardBackward(b: PackedBatch, lora: Bigram, opts?: { dropoutSeed?: number; lossDenominator?: number }): Promise<{ loss: number; tokens: number }> {
    return this.run(b, lora, true, opts?.dropoutSeed, opts?.lossDenominator);
  }
  async forward(b: PackedBatch, lora: Bigram | null): Promise<{ loss: number }> {
    return this.run(b, lora!, false);
  }
  private run(b: PackedBatch, m: Bigram, grad: boolean, seed?: number, denom?: number): { loss: number; tokens: number } {
    this.calls++;
    const rnd = seed === undefined || !this.useSeed ? null : seededRandom(seed);
    let n = 0;
    for (let t = 0; t < b.T; t++) if (b.targets[t] !== IGNORE_INDEX) n++;
    let loss = 0;
    const d = denom ?? n;
    const p = new Float64Array(V);
    for (let t = 0; t < b.T; t++) {
      const y = b.targets[t]!;
      if (y === IGNORE_INDEX) continue;
      const row = b.tokens[t]! * V;
      const s = rnd ? 0.5 + rnd() : 1;
      let max = -Infinity;
      for (let j = 0; j < V; j++) max = Math.max(max, s * m.W[row + j]!);
      let z = 0;
      for (let j = 0; j < V; j++) z += (p[j] = Math.exp(s * m.W[row + j]! - max));
      loss += Math.log(z) - (s * m.W[row + y]! - max);
      if (grad) for (let j = 0; j < V; j++) m.gW[row + j]! += (s * (p[j]! / z - (j === y ? 1 : 0))) / d;
    }
    if (this.poison) loss = NaN;
    return { loss: n ? loss / n : 0, tokens: n };
  }
}

/** A deterministic "language": token t is mostly followed by (3t+1) mod V. */
function corpus(n: number, seed: number): Example[] {
  const rnd = seededRandom(seed);
  return Array.from({ length: n }, () => {
    const len = 2 + Math.floor(rnd() * 30);
    const ids = [1 + Math.floor(rnd() * (V - 1))];
    while (ids.length < len) ids.push(rnd() < 0.9 ? (3 * ids[ids.length - 1]! + 1) % V : Math.floor(rnd() * V));
    return { ids };
  });
}

/** Replays a fixed list of batches. */
function listSource(batches: PackedBatch[]): BatchSource {
  let i = 0;
  return { next: () => batches[i++ % batches.length]!, position: () => ({ epoch: 0, index: i }), seek: (p) => void (i = p.index) };
}

function concatBatches(a: PackedBatch, b: PackedBatch): PackedBatch {
  const cat = (x: Int32Array, y: Int32Array): Int32Array => Int32Array.from([...x, ...y]);
  return { T: a.T + b.T, tokens: cat(a.tokens, b.tokens), targets: cat(a.targets, b.targets), positions: cat(a.positions, b.positions), seqIds: cat(a.seqIds, b.seqIds.map((s) => s + 1000)) };
}

test('accumulation weighs every token equally: k micro-batches == one merged batch', async () => {
  // Two micro-batches with very different target counts.
  const b1 = packExamples([{ ids: [1, 4, 1, 4, 2, 7, 3, 5, 9, 2] }], { T: 10, padId: 0 }).batches[0]!;
  const b2 = packExamples([{ ids: [5, 6] }], { T: 10, padId: 0 }).batches[0]!;
  const merged = concatBatches(b1, b2);
  const run = async (src: BatchSource, k: number): Promise<{ ev: StepEvent[]; W: Float32Array }> => {
    const lora = new Bigram();
    lora.W.forEach((_, i) => (lora.W[i] = Math.sin(i)));
    // Dropout depends on the micro-batch index, so it is off here.
    const tr = new Trainer({ model: new BigramModel(false), lora, data: src, gradAccum: k, schedule: makeSchedule({ kind: 'constant', lr: 0.05 }), maxGradNorm: Infinity, optimizer: { weightDecay: 0 }, seed: 1 });
    const ev = await tr.train(3);
    return { ev, W: lora.W };
  };
  {
    const a = await run(listSource([b1, b2]), 2);
    const m = await run(listSource([merged]), 1);
    for (let s = 0; s < 3; s++) {
      assert.ok(Math.abs(a.ev[s]!.loss - m.ev[s]!.loss) < 1e-6, `step ${s} loss ${a.ev[s]!.loss} vs ${m.ev[s]!.loss}`);
      assert.ok(Math.abs(a.ev[s]!.gradNorm - m.ev[s]!.gradNorm) < 1e-6, `step ${s} grad norm ${a.ev[s]!.gradNorm} vs ${m.ev[s]!.gradNorm}`);
      assert.equal(a.ev[s]!.lossTokens, 10);
      assert.equal(a.ev[s]!.tokens, 20);
    }
    a.W.forEach((v, i) => assert.ok(Math.abs(v - m.W[i]!) < 1e-5));
    // A plain average of per-batch means would differ: make sure this test can tell.
    const model = new BigramModel();
    const l = new Bigram();
    l.W.forEach((_, i) => (l.W[i] = Math.sin(i)));
    const mean = ((await model.forward(b1, l)).loss + (await model.forward(b2, l)).loss) / 2;
    assert.ok(Math.abs(mean - a.ev[0]!.loss) > 1e-3);
  }
});

test('training lowers the loss, follows the schedule, clips, and reports per step', async () => {
  const examples = corpus(200, 5);
  const data = epochBatchSource(examples, { T: 64, padId: 0, seed: 11 });
  const lora = new Bigram();
  const schedule = makeSchedule({ kind: 'cosine', lr: 0.1, warmupSteps: 5, totalSteps: 60, minLr: 0.01 });
  const events: StepEvent[] = [];
  const model = new BigramModel();
  const tr = new Trainer({ model, lora, data, gradAccum: 2, schedule, maxGradNorm: 0.2, seed: 3, onStep: (e) => void events.push(e) });
  const held = packExamples(corpus(40, 99), { T: 64, padId: 0 }).batches;
  const before = await evaluateLoss(model, lora, held);
  assert.ok(Math.abs(before.loss - Math.log(V)) < 1e-9, 'zero weights give a uniform prediction');
  await tr.train(60);
  const after = await evaluateLoss(model, lora, held);
  assert.equal(events.length, 60);
  assert.ok(after.loss < 0.6 * before.loss, `held-out loss ${before.loss} -> ${after.loss}`);
  events.forEach((e, i) => {
    assert.equal(e.step, i + 1);
    assert.equal(e.lr, schedule(i));
    assert.equal(e.tokens, 128);
    assert.ok(e.lossTokens > 0 && e.tokensPerSec > 0 && !e.skipped);
  });
  // Early gradients exceed the clip threshold; the reported norm is the pre-clip one.
  assert.ok(events[0]!.gradNorm > 0.2, `first grad norm ${events[0]!.gradNorm}`);
  assert.equal(model.calls, 120 + 2 * held.length);
});

test('same seeds give the same run; another dropout seed gives another', async () => {
  const runOnce = async (seed: number): Promise<Float32Array> => {
    const lora = new Bigram();
    const data = epochBatchSource(corpus(50, 1), { T: 32, padId: 0, seed: 4 });
    const tr = new Trainer({ model: new BigramModel(), lora, data, gradAccum: 3, schedule: makeSchedule({ kind: 'constant', lr: 0.05 }), seed });
    await tr.train(8);
    return lora.W;
  };
  assert.deepEqual(await runOnce(7), await runOnce(7));
  assert.notDeepEqual(await runOnce(7), await runOnce(8));
  assert.notEqual(microBatchSeed(1, 0, 1), microBatchSeed(1, 1, 0));
});

test('checkpoint state resumes to the same result as an uninterrupted run', async () => {
  const mk = (): { tr: Trainer<Bigram>; lora: Bigram } => {
    const lora = new Bigram();
    const data = epochBatchSource(corpus(30, 2), { T: 32, padId: 0, seed: 9 });
    return { lora, tr: new Trainer({ model: new BigramModel(), lora, data, gradAccum: 2, schedule: makeSchedule({ kind: 'linear', lr: 0.05, totalSteps: 12 }), seed: 5 }) };
  };
  const full = mk();
  await full.tr.train(12);
  const first = mk();
  await first.tr.train(7);
  const saved = first.tr.state();
  const second = mk();
  second.tr.loadState(saved);
  assert.equal(second.tr.step, 7);
  await second.tr.train(12);
  assert.deepEqual(second.lora.W, full.lora.W);
  assert.throws(() => second.tr.loadState({ ...saved, params: {} }), /lacks parameter W/);
});

test('a non-finite loss skips the update', async () => {
  const lora = new Bigram();
  const model = new BigramModel();
  const tr = new Trainer({ model, lora, data: epochBatchSource(corpus(10, 3), { T: 32, padId: 0, seed: 1 }), schedule: makeSchedule({ kind: 'constant', lr: 0.1 }), seed: 1 });
  model.poison = true;
  const ev = await tr.trainStep();
  assert.ok(ev.skipped);
  assert.ok(lora.W.every((v) => v === 0));
  assert.ok(lora.gW.every((v) => v === 0), 'gradients are cleared after a skipped step');
  model.poison = false;
  assert.ok(!(await tr.trainStep()).skipped);
  assert.ok(lora.W.some((v) => v !== 0));
});
