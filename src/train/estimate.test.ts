import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_PARAMS, maxInnerDim } from '../crypto/params.js';
import { parseConfig } from '../model/config.js';
import { LocalFp32Provider, type FrozenLinearProvider } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { LoraAdapter } from '../model/lora.js';
import { groupShapes, PROJECTION_NAMES, type ProjectionGroup } from '../model/projections.js';
import { encryptedInputBytes, encryptedOutputBytes } from '../protocol/wire.js';
import { parseCalibration, readmeCalibration } from './calibration.js';
import { measureCalibration, QUICK_CALIBRATION_SHAPE } from './calibrate.js';
import {
  batchPlan, clientMacs, estimateRun, frozenProductMacs, maskTableBytes, microBatchRequests, NAMED_SHAPES, planFromExamples, planFromTokenCount, requestTokenChunks,
} from './estimate.js';
import { makeSchedule } from './optim.js';
import { epochBatchSource, seededRandom, type Example } from './packing.js';
import { llamaConfigJson, randomLlamaTensors } from './random-init.js';
import { TINY_SHAPE } from './test-fixtures.js';
import { Trainer } from './trainer.js';

const wire = { params: DEFAULT_PARAMS, actBits: 8, maxTokensPerRequest: 4096, maskMode: 'fresh' as const };

/** Records every frozen product a model asks for: (direction, layer, group, T). */
class RecordingProvider implements FrozenLinearProvider {
  calls: { op: 'forward' | 'backward'; layer: number; group: ProjectionGroup; T: number }[] = [];
  constructor(private readonly inner: FrozenLinearProvider) {}
  forward(layer: number, group: ProjectionGroup, x: Float32Array, T: number): Promise<Float32Array[]> {
    this.calls.push({ op: 'forward', layer, group, T });
    return this.inner.forward(layer, group, x, T);
  }
  backward(layer: number, group: ProjectionGroup, dys: Float32Array[], T: number): Promise<Float32Array> {
    this.calls.push({ op: 'backward', layer, group, T });
    return this.inner.backward(layer, group, dys, T);
  }
}

function randomExamples(n: number, vocab: number, seed: number): Example[] {
  const rnd = seededRandom(seed);
  return Array.from({ length: n }, () => {
    const len = 5 + Math.floor(rnd() * 60);
    const ids = Array.from({ length: len }, () => Math.floor(rnd() * vocab));
    return { ids, lossMask: ids.map((_, i) => i > len / 3) };
  });
}

test('a real training run asks for exactly the products, micro-batches and frozen MACs the estimate counts', async () => {
  const config = parseConfig(llamaConfigJson(TINY_SHAPE));
  const tensors = randomLlamaTensors(TINY_SHAPE, 1);
  const provider = new RecordingProvider(LocalFp32Provider.fromTensors(config, tensors));
  const model = LlamaModel.fromTensors(config, tensors, provider);
  const lora = LoraAdapter.create(config, { rank: 2, targetModules: ['v_proj', 'up_proj'] }, { seed: 'estimate-test' });
  const examples = randomExamples(30, config.vocabSize, 2);
  const pack = { T: 128, padId: 0, seed: 6, vocabSize: config.vocabSize };
  const plan = planFromExamples(examples, pack, { epochs: 2.5, gradAccum: 3 });
  const source = epochBatchSource(examples, pack);
  const seen: ReturnType<typeof batchPlan>[] = [];
  const recording = { next: () => { const b = source.next(); seen.push(batchPlan(b)); return b; }, position: () => source.position(), seek: (p: { epoch: number; index: number }) => source.seek(p) };
  const trainer = new Trainer({ model, lora, data: recording, gradAccum: 3, seed: 1, schedule: makeSchedule({ kind: 'constant', lr: 1e-3 }) });
  for (let s = 0; s < plan.optimizerSteps; s++) await trainer.trainStep();

  // The same micro-batches, in the same order, with the same epochs' sequences.
  assert.deepEqual(seen, plan.microBatches.map(({ epoch: _epoch, ...mb }) => mb));
  assert.ok(new Set(plan.microBatches.map((m) => m.epoch)).size === 3, 'the plan spans three epochs');
  // The same products, in the same order.
  const expected = plan.microBatches.flatMap((mb) => microBatchRequests(config, mb.T, wire).map((r) => ({ op: r.op, layer: r.layer, group: r.group, T: r.tokens })));
  assert.deepEqual(provider.calls, expected);
  // Frozen MACs: sum over the calls of T x the group's out x in.
  const macs = provider.calls.reduce((s, c) => s + c.T * groupShapes(config, c.group).reduce((q, [o, i]) => q + o * i, 0), 0);
  assert.equal(plan.microBatches.reduce((s, mb) => s + frozenProductMacs(config, mb.T), 0), macs);
});

test('request bytes: token chunks, K-chunk terms and the wire sizes; table mode drops the a halves', () => {
  assert.deepEqual(requestTokenChunks(256, 100, 2048), [100, 100, 56]);
  assert.deepEqual(requestTokenChunks(5000, 4096, 2048), [4096, 904]);
  assert.deepEqual(requestTokenChunks(5000, 3000, 2048), [2048, 2048, 904]);
  // Llama-3.2-1B: the summed gate/up backward (K = 16384) is the one product over the 8-bit capacity.
  const dims = NAMED_SHAPES['llama-3.2-1b']!;
  const reqs = microBatchRequests(dims, 2048, wire);
  assert.equal(reqs.length, 16 * 4 + 16 * 4 - 1);
  const gateUpBack = reqs.find((r) => r.op === 'backward' && r.group === 'gate_up')!;
  assert.ok(16384 > maxInnerDim(DEFAULT_PARAMS, 8, 8));
  assert.equal(gateUpBack.downloadBytes, encryptedOutputBytes(1, [2048], 2048, 2));
  assert.equal(gateUpBack.uploadBytes, encryptedInputBytes(1, [8192, 8192], 2048));
  assert.equal(gateUpBack.serverMacs, 2048 * 16384 * 2048);
  const table = microBatchRequests(dims, 2048, { ...wire, maskMode: 'table' });
  reqs.forEach((r, i) => {
    assert.equal(table[i]!.uploadBytes, r.uploadBytes);
    assert.equal(r.downloadBytes - table[i]!.downloadBytes, 4 * r.decryptedValues);
  });
  // Design notes section 6: the table is (sum of output dims of all products) x N x 4 bytes, about 0.31 GB per layer.
  const perLayerRows = 2048 + 512 + 512 + 2048 + 8192 + 8192 + 2048 + 2048 + 2048 + 2 * 2048 + 8192;
  assert.equal(maskTableBytes(dims, wire), 16 * perLayerRows * 2048 * 4);
});

test('client MACs: LM head, causal attention per sequence and LoRA from the shapes', () => {
  const d = NAMED_SHAPES['smollm2-135m']!;
  const none = { targets: [], rank: 8 };
  const T = 4;
  // Two sequences of 3 and 1 tokens: 6 + 1 causal pairs, 7 attention units each (2 forward, 5 backward).
  assert.equal(clientMacs(d, { T, seqLens: [3, 1], realTokens: 4 }, none), 2 * T * d.vocabSize * d.hiddenSize + d.numLayers * 7 * 7 * d.numHeads * d.headDim);
  const q = { targets: ['q_proj' as const], rank: 8 };
  assert.equal(clientMacs(d, { T, seqLens: [4], realTokens: 4 }, q) - clientMacs(d, { T, seqLens: [4], realTokens: 4 }, none), T * d.numLayers * 3 * 8 * (576 + 576));
  const plan = planFromTokenCount(5000, 2048, { epochs: 2, gradAccum: 2 });
  assert.equal(plan.optimizerSteps, 3);
  assert.deepEqual(plan.microBatches.map((m) => [m.epoch, m.realTokens]), [[0, 2048], [0, 2048], [0, 904], [1, 2048], [1, 2048], [1, 904]]);
  const est = estimateRun({
    dims: d, plan, wire, lora: { targets: PROJECTION_NAMES, rank: 8 },
    cost: { bandwidthBytesPerS: 1e8, rttS: 0.001, serverPricePerHour: 3.6, egressPricePerGB: 0.1 },
    serverCalibration: readmeCalibration(), clientCalibration: readmeCalibration(),
  });
  assert.deepEqual(est.epochs.map((e) => [e.tokens, e.optimizerSteps, e.microBatches]), [[5000, 1, 3], [5000, 2, 3]]);
  const t = est.total;
  assert.equal(t.transferS, (t.uploadBytes + t.downloadBytes) / 1e8);
  assert.equal(t.requestOverheadS, t.requests * 0.001);
  assert.ok(Math.abs(t.wallS - (t.serverS + t.clientComputeS + t.cryptoS + t.transferS + t.requestOverheadS)) < 1e-9 * t.wallS);
  assert.ok(Math.abs(t.cost - (t.wallS / 3600 * 3.6 + t.downloadBytes / 1e9 * 0.1)) < 1e-9 * t.cost);
});

test('calibration files are validated; the README defaults reproduce the README step they come from; calibrate runs', async () => {
  const readme = readmeCalibration();
  assert.deepEqual(parseCalibration(JSON.stringify(readme)), readme);
  // bench:train (table mode): server_s 19.8 for one SmolLM2-135M step of 2048 tokens (four 512-token sequences).
  const step = estimateRun({
    dims: NAMED_SHAPES['smollm2-135m']!, plan: { microBatches: [{ T: 2048, seqLens: [512, 512, 512, 512], realTokens: 2048, epoch: 0 }], gradAccum: 1, optimizerSteps: 1, source: 'data' },
    wire: { ...wire, maskMode: 'table' }, lora: { targets: PROJECTION_NAMES, rank: 8 }, cost: { bandwidthBytesPerS: 1e9, rttS: 0, serverPricePerHour: 0, egressPricePerGB: 0 },
    serverCalibration: readme, clientCalibration: readme,
  }).total;
  assert.ok(Math.abs(step.serverS - 19.8) < 1e-9 && Math.abs(step.cryptoS - 19.5) < 1e-9 && Math.abs(step.clientComputeS - 10.5) < 1e-9);
  assert.ok(Math.abs(2048 / step.localFp32.wallS - 107.42) < 1e-9);
  const bad = (f: (c: any) => void): string => { const c = structuredClone(readme) as any; f(c); return JSON.stringify(c); };
  assert.throws(() => parseCalibration('nope'), /not JSON/);
  assert.throws(() => parseCalibration(bad((c) => { c.format = 'x'; })), /format/);
  assert.throws(() => parseCalibration(bad((c) => { c.rates.serverMacsPerS = 0; })), /serverMacsPerS must be a positive/);
  assert.throws(() => parseCalibration(bad((c) => { c.rates.cryptoValuesPerS = 'fast'; })), /cryptoValuesPerS/);
  assert.throws(() => parseCalibration(bad((c) => { delete c.rates.localFrozenMacsPerS; })), /localFrozenMacsPerS/);
  assert.throws(() => parseCalibration(bad((c) => { c.notes = 'x'; })), /notes/);

  const measured = await measureCalibration({ shape: QUICK_CALIBRATION_SHAPE, tokens: 256, seqLen: 64, rounds: 1, threads: 1 });
  assert.deepEqual(parseCalibration(JSON.stringify(measured)), measured);
  for (const v of Object.values(measured.rates)) assert.ok(Number.isFinite(v) && v > 0);
});
