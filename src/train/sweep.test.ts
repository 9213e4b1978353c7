import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DataRecord } from './data.js';
import { NAMED_SHAPES } from './estimate.js';
import { fineTune, TRAIN_DEFAULTS } from './fine-tune.js';
import { bytesPerTokenAt, checkWidths, pickWidth, relativeGap, runSweep } from './sweep.js';
import { writeTinyModelFolder } from './test-fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'helora-sweep-test-'));
const modelDir = join(work, 'model');
let records: DataRecord[] = [];

before(() => {
  records = writeTinyModelFolder(modelDir).slice(0, 50).map((p) => ({ kind: 'pair', ...p }));
});
after(() => rmSync(work, { recursive: true, force: true }));

test('pickWidth: the smallest width within the tolerance of fp32 (a lower loss counts), null when none is', () => {
  const runs = (losses: Record<number, number>) => Object.entries(losses).map(([b, l]) => ({ actBits: Number(b), finalEvalLoss: l }));
  assert.equal(pickWidth(runs({ 4: 2.1, 5: 2.03, 6: 2.019, 8: 2.0 }), 2.0, 0.01), 6);
  assert.equal(pickWidth(runs({ 8: 2.0, 6: 2.019, 4: 2.1, 5: 2.03 }), 2.0, 0.01), 6); // order does not matter
  assert.equal(pickWidth(runs({ 4: 1.9, 8: 2.0 }), 2.0, 0.01), 4); // below fp32 is within
  assert.equal(pickWidth(runs({ 4: 2.02, 5: 2.0199, 8: 2.05 }), 2.0, 0.01), 5); // not monotone: still the smallest that is within
  assert.equal(pickWidth(runs({ 4: 2.5, 8: 2.0201 }), 2.0, 0.01), null);
  assert.equal(pickWidth(runs({ 4: NaN, 8: 2.0 }), 2.0, 0.01), 8);
  assert.equal(pickWidth(runs({ 4: 2.0 }), NaN, 0.01), null);
  assert.equal(pickWidth([], 2.0, 0.01), null);
  assert.equal(relativeGap(2.02, 2.0), (2.02 - 2.0) / 2.0);
});

test('checkWidths: ascending, integers in 2..16, no repeats', () => {
  assert.deepEqual(checkWidths([8, 4, 6]), [4, 6, 8]);
  assert.throws(() => checkWidths([]), /at least one/);
  assert.throws(() => checkWidths([1, 8]), /1 is not an activation width in 2\.\.16/);
  assert.throws(() => checkWidths([4.5]), /not an activation width/);
  assert.throws(() => checkWidths([4, 4]), /twice/);
});

test('bytes per token follow the width through the K-splits: fewer download bytes at 4 bits than at 8 for Llama-3.2-1B', () => {
  const wire = { maxTokensPerRequest: 4096, maskMode: 'table' as const };
  const b4 = bytesPerTokenAt(NAMED_SHAPES['llama-3.2-1b']!, 4, 2048, wire);
  const b8 = bytesPerTokenAt(NAMED_SHAPES['llama-3.2-1b']!, 8, 2048, wire);
  assert.equal(b4.up, b8.up); // the upload holds one value per input feature whatever the width
  assert.ok(b4.down < b8.down, `${b4.down} vs ${b8.down}`);
});

test('runSweep on the tiny model: fp32 and each width are the runs helora train would make; gaps and pick follow', async () => {
  const base = { ...TRAIN_DEFAULTS, model: modelDir, data: records, steps: 3, batchTokens: 128, lr: 1e-2, seed: 2, resume: false, checkpointEvery: 3 };
  const labels: string[] = [];
  const r = await runSweep({ ...base, out: join(work, 'sweep'), widths: [8, 3], wire: { maxTokensPerRequest: 4096, maskMode: 'table' }, onRun: (l) => labels.push(l) });
  assert.deepEqual(labels, ['fp32', 'bits-3', 'bits-8']);
  for (const l of labels) assert.ok(existsSync(join(work, 'sweep', l, 'adapter', 'adapter_model.safetensors')), l);
  assert.deepEqual(r.widths.map((w) => w.actBits), [3, 8]);
  assert.deepEqual(r.fp32.evals.map((e) => e.step), [0, 1, 2, 3]); // a tenth of the steps, at least 1

  // The same runs made alone (default held-out split 0.1, same seed): identical held-out losses.
  const held = { evalSplit: 0.1, evalEvery: 1 };
  const fp32 = await fineTune({ ...base, ...held, mode: 'fp32', out: join(work, 'alone-fp32') });
  const q3 = await fineTune({ ...base, ...held, mode: 'quantized', actBits: 3, out: join(work, 'alone-q3') });
  assert.deepEqual(r.fp32.evals, fp32.evals);
  assert.deepEqual(r.widths[0]!.evals, q3.evals);
  assert.equal(r.widths[0]!.finalEvalLoss, q3.finalEval!.loss);
  assert.equal(r.widths[0]!.relGap, (q3.finalEval!.loss - fp32.finalEval!.loss) / fp32.finalEval!.loss);
  assert.ok(r.widths[0]!.relGap > r.widths[1]!.relGap, '3 bits are further from fp32 than 8');
  assert.equal(r.recommended, pickWidth(r.widths.map((w) => ({ actBits: w.actBits!, finalEvalLoss: w.finalEvalLoss })), r.fp32.finalEvalLoss, 0.01));
  assert.equal(r.fp32.bytesPerToken, null);
  assert.ok(r.widths.every((w) => w.bytesPerToken!.up > 0 && w.bytesPerToken!.down > 0));
  // A tolerance nothing meets: no recommendation.
  const strict = await runSweep({ ...base, out: join(work, 'sweep'), widths: [3], tolerance: 0, resume: true, wire: { maxTokensPerRequest: 4096, maskMode: 'table' } });
  assert.equal(strict.widths[0]!.finalEvalLoss, r.widths[0]!.finalEvalLoss); // resumed at its end: the same run
  assert.equal(strict.recommended, null);
});
