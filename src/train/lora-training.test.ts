/**
 * End to end: LoRA training on a small random-init Llama lowers the loss on real text nobody
 * here wrote (the GPL-3 and Apache-2.0 licence texts that every Debian ships), with the fp32 and
 * the int8-quantized frozen provider; the trained adapter survives a PEFT save/load exactly.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { trainBpe, writeTokenizerFolder } from '../model/bpe-train.js';
import { LocalFp32Provider, LocalQuantizedProvider, type FrozenLinearProvider } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { loadModelFolder, writeModelFolder } from '../model/loader.js';
import { LoraAdapter } from '../model/lora.js';
import { loadAdapter, saveAdapter } from '../model/peft.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { parseTrainingData, tokenizeRecords } from './data.js';
import { makeSchedule } from './optim.js';
import { epochBatchSource, packExamples } from './packing.js';
import { llamaConfigJson, randomLlamaTensors } from './random-init.js';
import { Trainer, evaluateLoss } from './trainer.js';

const LICENSES = ['/usr/share/common-licenses/GPL-3', '/usr/share/common-licenses/Apache-2.0'];
const VOCAB = 384;
const T = 256;
const STEPS = 30;

test('LoRA training lowers the loss on the GPL-3/Apache-2.0 texts (fp32 and int8), adapter round-trips', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'helora-lora-e2e-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const text = LICENSES.map((p) => readFileSync(p, 'utf8')).join('\n\n');

  // Tokenizer trained here, written as tokenizer.json, loaded back through the HF tokenizer.
  const trained = trainBpe(text, { vocabSize: VOCAB, specialTokens: ['<|endoftext|>'] });
  const tokDir = join(dir, 'model');
  writeTokenizerFolder(tokDir, trained);
  const tok = loadTokenizer(tokDir);
  assert.equal(tok.vocabSize, VOCAB);
  const eos = tok.eosId!;

  // A tiny random model, through the real checkpoint writer and loader.
  const shape = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: VOCAB };
  // Embeddings a little larger than the HF init, so the tied head can express what LoRA learns.
  writeModelFolder(tokDir, llamaConfigJson(shape), randomLlamaTensors(shape, 1234, { embedStd: 0.1 }));
  const { config, tensors } = loadModelFolder(tokDir);

  const docs = parseTrainingData(text, { format: 'plain' }).records;
  assert.ok(docs.length > 50, `only ${docs.length} documents`);
  const examples = tokenizeRecords(docs, (s) => tok.encode(s, { addSpecialTokens: false }), { eosId: eos });
  // Held-in evaluation set: a fixed packing of all the training text.
  const evalBatches = packExamples(examples, { T, padId: eos }).batches.slice(0, 8);

  const providers: [string, FrozenLinearProvider][] = [
    ['fp32', LocalFp32Provider.fromTensors(config, tensors)],
    ['int8', LocalQuantizedProvider.fromTensors(config, tensors)],
  ];
  for (const [name, provider] of providers) {
    const model = LlamaModel.fromTensors(config, tensors, provider);
    const lora = LoraAdapter.create(config, { rank: 8, alpha: 16, dropout: 0.05 }, { seed: 'e2e' });
    const before = await evaluateLoss(model, lora, evalBatches);
    // B = 0 at init: the adapter starts as the identity on the base model.
    assert.ok(Math.abs(before.loss - (await evaluateLoss(model, null, evalBatches)).loss) < 1e-6);
    const data = epochBatchSource(examples, { T, padId: eos, seed: 42 });
    const trainer = new Trainer({
      model, lora, data, gradAccum: 1, seed: 7,
      schedule: makeSchedule({ kind: 'cosine', lr: 3e-2, warmupSteps: 3, totalSteps: STEPS, minLr: 3e-3 }),
      optimizer: { weightDecay: 0 },
    });
    const events = await trainer.train(STEPS);
    const after = await evaluateLoss(model, lora, evalBatches);
    const drop = 1 - after.loss / before.loss;
    t.diagnostic(`${name}: held-in loss ${before.loss.toFixed(3)} -> ${after.loss.toFixed(3)} (${(drop * 100).toFixed(1)}%), ${events.at(-1)!.tokensPerSec.toFixed(0)} tok/s`);
    assert.ok(events.every((e) => !e.skipped && Number.isFinite(e.loss)));
    assert.ok(drop > 0.1, `${name}: loss fell only ${(drop * 100).toFixed(1)}% (${before.loss} -> ${after.loss})`);
    // Below a uniform guess over the vocabulary: the adapter learned something about the text.
    assert.ok(after.loss < Math.log(VOCAB), `${name}: loss ${after.loss} not below uniform ${Math.log(VOCAB)}`);

    // PEFT export and reload: identical logits.
    const adDir = join(dir, `adapter-${name}`);
    saveAdapter(adDir, lora.toTensors(), 'random-tiny-llama');
    const reloaded = LoraAdapter.fromTensors(config, loadAdapter(adDir, config));
    const b = evalBatches[0]!;
    const l1 = (await model.forward(b, lora)).logits;
    const l2 = (await model.forward(b, reloaded)).logits;
    assert.deepEqual(l2, l1);
    const base = (await model.forward(b, null)).logits;
    assert.notDeepEqual(base, l1, 'the adapter changes the logits');
  }
});
