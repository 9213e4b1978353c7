import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalFp32Provider } from '../model/frozen.js';
import { IGNORE_INDEX } from '../model/layers.js';
import { LlamaModel } from '../model/llama.js';
import { LoraAdapter } from '../model/lora.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { seededRandom } from '../util/random.js';
import type { DataRecord } from './data.js';
import { evaluateAdapter, heldOutLoss, packHeldOut, splitHeldOut } from './evaluate.js';
import { fineTune, loadClientModel, tokenizeForTraining, TRAIN_DEFAULTS, type FineTuneOptions } from './fine-tune.js';
import { packExamples } from './packing.js';
import { parseRunCsv } from './run-files.js';
import { writeTinyModelFolder } from './test-fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'helora-eval-test-'));
const modelDir = join(work, 'model');
let records: DataRecord[] = [];

before(() => {
  const pairs = writeTinyModelFolder(modelDir);
  records = pairs.slice(0, 60).map((p) => ({ kind: 'pair', ...p }));
});

after(() => rmSync(work, { recursive: true, force: true }));

function opts(over: Partial<FineTuneOptions>): FineTuneOptions {
  return {
    ...TRAIN_DEFAULTS, model: modelDir, data: records, out: join(work, 'unused'), mode: 'quantized', steps: 4, batchTokens: 128, lr: 1e-2,
    dropout: 0.1, seed: 3, resume: false, checkpointEvery: 1, ...over,
  };
}

/** -log softmax(logits)[target] summed over the counted targets of one [T, V] logits matrix. */
function handLossSum(logits: Float32Array, targets: Int32Array, V: number): { sum: number; n: number } {
  let sum = 0, n = 0;
  for (let t = 0; t < targets.length; t++) {
    if (targets[t] === IGNORE_INDEX) continue;
    const row = logits.subarray(t * V, (t + 1) * V);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let z = 0;
    for (const v of row) z += Math.exp(v - max);
    sum += Math.log(z) + max - row[targets[t]!]!;
    n++;
  }
  return { sum, n };
}

test('splitHeldOut: seeded, disjoint, complete, in file order, clamped to [1, n-1]', () => {
  const recs: DataRecord[] = Array.from({ length: 20 }, (_, i) => ({ kind: 'text', text: `r${i}` }));
  const a = splitHeldOut(recs, 0.2, 5);
  assert.deepEqual(splitHeldOut(recs, 0.2, 5), a);
  assert.equal(a.heldOut.length, 4);
  assert.equal(a.train.length, 16);
  const idx = (r: DataRecord): number => Number((r as { text: string }).text.slice(1));
  const all = [...a.train, ...a.heldOut].map(idx).sort((x, y) => x - y);
  assert.deepEqual(all, recs.map((_, i) => i));
  for (const part of [a.train, a.heldOut]) assert.deepEqual(part.map(idx), part.map(idx).sort((x, y) => x - y));
  assert.notDeepEqual(splitHeldOut(recs, 0.2, 6).heldOut, a.heldOut); // another seed, another split
  assert.equal(splitHeldOut(recs, 0.001, 1).heldOut.length, 1);
  assert.equal(splitHeldOut(recs, 0.999, 1).train.length, 1);
  assert.throws(() => splitHeldOut(recs.slice(0, 1), 0.5, 1), /at least 2 records/);
  assert.throws(() => splitHeldOut(recs, 1, 1), /fraction in \(0, 1\)/);
});

test('held-out loss equals a hand computation of the mean token loss (each record alone, softmax by hand)', async () => {
  const { config, tensors } = loadClientModel(modelDir, true);
  const model = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));
  const lora = LoraAdapter.create(config, { rank: 4, alpha: 8, dropout: 0.3 }, { seed: 'eval-test' });
  const rnd = seededRandom(9);
  for (const p of lora.parameters()) for (let i = 0; i < p.value.length; i++) p.value[i] = (rnd() - 0.5) * 0.2; // B != 0: the adapter counts
  const { examples, padId } = tokenizeForTraining(records.slice(0, 12), loadTokenizer(modelDir), config);
  let sum = 0, n = 0;
  for (const ex of examples) {
    const batch = packExamples([ex], { T: ex.ids.length, padId }).batches[0]!;
    const { logits } = await model.forward(batch, lora);
    const h = handLossSum(logits, batch.targets, config.vocabSize);
    sum += h.sum;
    n += h.n;
  }
  const batches = packHeldOut(examples, { T: 128, padId, vocabSize: config.vocabSize });
  assert.ok(batches.length < examples.length, 'several records share a micro-batch');
  const r = await heldOutLoss(model, lora, batches);
  assert.equal(r.tokens, n);
  assert.ok(Math.abs(r.loss - sum / n) <= 1e-5 * (sum / n), `${r.loss} vs ${sum / n}`);
  assert.equal(r.ppl, Math.exp(r.loss));
  // No dropout in an evaluation, although the adapter has some: twice the same.
  assert.equal((await heldOutLoss(model, lora, batches)).loss, r.loss);
});

test('fineTune with held-out eval: rows at 0, every N and the end; the training losses are those of a run without eval', async () => {
  const withEval = await fineTune(opts({ out: join(work, 'with'), evalSplit: 0.2, evalEvery: 3, steps: 5 }));
  const split = splitHeldOut(records, 0.2, 3);
  const without = await fineTune(opts({ out: join(work, 'without'), data: split.train, steps: 5 }));
  assert.deepEqual(withEval.history.map((r) => r.loss), without.history.map((r) => r.loss));
  assert.deepEqual(withEval.evals.map((e) => e.step), [0, 3, 5]);
  assert.equal(withEval.finalEval, withEval.evals[2]);
  assert.deepEqual(without.evals, []);
  assert.equal(without.finalEval, null);
  assert.ok(withEval.evals[2]!.loss < withEval.evals[0]!.loss, 'held-out loss goes down');

  // Step 0: the LoRA's B starts at zero, so the base model's loss (helora eval without adapter, same mode).
  const base = await evaluateAdapter({ model: modelDir, data: split.heldOut, batchTokens: 128, mode: 'quantized' });
  assert.equal(withEval.evals[0]!.loss, base.loss);
  assert.equal(withEval.evals[0]!.tokens, base.tokens);
  // The end: the saved adapter evaluated afresh.
  const fin = await evaluateAdapter({ model: modelDir, adapter: withEval.adapterDir!, data: split.heldOut, batchTokens: 128, mode: 'quantized' });
  assert.ok(Math.abs(fin.loss - withEval.finalEval!.loss) <= 1e-6 * fin.loss, `${fin.loss} vs ${withEval.finalEval!.loss}`);
  const fp32 = await evaluateAdapter({ model: modelDir, adapter: withEval.adapterDir!, data: split.heldOut, batchTokens: 128, mode: 'fp32' });
  assert.notEqual(fp32.loss, fin.loss);

  // The CSV: eval columns, a step-0 row, and training rows that read back as before.
  const text = readFileSync(withEval.csvPath, 'utf8');
  assert.match(text.split('\n')[0]!, /,eval_loss,eval_ppl$/);
  const parsed = parseRunCsv(text);
  assert.deepEqual(parsed.history.map((r) => r.loss), withEval.history.map((r) => r.loss));
  assert.deepEqual(parsed.evals, withEval.evals.map(({ step, loss, ppl }) => ({ step, loss, ppl })));
  assert.doesNotMatch(readFileSync(without.csvPath, 'utf8').split('\n')[0]!, /eval/);
});

test('a resumed run keeps its eval rows: none lost, none repeated, the same values as an uninterrupted run', async () => {
  const full = await fineTune(opts({ out: join(work, 'full'), evalData: records.slice(40), data: records.slice(0, 40), evalEvery: 2, steps: 5 }));
  const o = opts({ out: join(work, 'crash'), evalData: records.slice(40), data: records.slice(0, 40), evalEvery: 2, steps: 5 });
  const part = await fineTune({ ...o, stopAfter: 3 });
  assert.deepEqual(part.evals.map((e) => e.step), [0, 2]);
  assert.equal(part.finalEval, null);
  const resumed = await fineTune({ ...o, resume: true });
  assert.equal(resumed.startStep, 3);
  assert.deepEqual(resumed.evals, full.evals);
  assert.deepEqual(resumed.evals.map((e) => e.step), [0, 2, 4, 5]);
  assert.deepEqual(parseRunCsv(readFileSync(resumed.csvPath, 'utf8')).evals.map((e) => e.step), [0, 2, 4, 5]);
  // Another held-out set cannot continue this run.
  await assert.rejects(fineTune({ ...o, evalData: records.slice(41), resume: true }), /differ from the checkpoint's: eval_sha256/);
});

test('eval options: clear errors', async () => {
  await assert.rejects(fineTune(opts({ evalSplit: 0.1, evalData: records })), /either --eval-data or --eval-split/);
  await assert.rejects(fineTune(opts({ evalEvery: 2 })), /--eval-every needs a held-out set/);
  await assert.rejects(fineTune(opts({ evalSplit: 1 })), /--eval-split must be a fraction/);
  await assert.rejects(fineTune(opts({ evalData: [] })), /no records/);
});
