// Pretraining from scratch: a tiny run lowers the held-out loss and writes a model folder that
// the loader reads back to the same logits; the shipped models/helora-tiny is what its card says.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../util/paths.js';
import { loadModelFolder } from '../model/loader.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { LocalFp32Provider } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { readSafetensorsHeader } from '../model/safetensors.js';
import {
  defaultCorpusDir, EOT_TOKEN, heldOutLoss, loadCorpus, pretrain, PRETRAIN_DEFAULTS, sentenceExamples, validationBatches, type PretrainOptions,
} from './pretrain.js';

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function tiny(out: string): PretrainOptions {
  return {
    out, steps: 24, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 64, vocab: 320, seqLen: 48, batchTokens: 512,
    lr: 5e-3, seed: 7, maxTrainFiles: 1, valSentences: 60, evalEvery: 12, samplePrompts: ['The'], log: () => {},
  };
}

test('a tiny pretraining run lowers the held-out loss and writes a loadable HF Llama folder with the same logits', async () => {
  const out = mkdtempSync(join(tmpdir(), 'helora-pretrain-'));
  dirs.push(out);
  const r = await pretrain(tiny(out));
  assert.ok(r.finalValLoss < r.initialValLoss - 0.5, `validation loss ${r.initialValLoss} -> ${r.finalValLoss}`);
  assert.ok(Math.abs(r.initialValLoss - Math.log(320)) < 0.3, `an untrained model is near uniform (${r.initialValLoss})`);
  assert.equal(r.steps, 24);
  assert.deepEqual(readdirSync(out).sort(), ['README.md', 'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'training_log.json']);

  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg.model_type, 'llama');
  assert.deepEqual(cfg.architectures, ['LlamaForCausalLM']);
  assert.equal(cfg.tie_word_embeddings, true);
  assert.equal(cfg.torch_dtype, 'bfloat16');
  assert.equal(cfg.num_key_value_heads, 2);
  for (const info of readSafetensorsHeader(join(out, 'model.safetensors')).values()) assert.equal(info.dtype, 'BF16');

  const tok = loadTokenizer(out);
  assert.equal(tok.vocabSize, 320);
  assert.equal(tok.eosId, r.eotId);
  assert.equal(tok.decode([r.eotId]), EOT_TOKEN);
  assert.equal(cfg.eos_token_id, r.eotId);
  const text = 'The cat sat on the mat.';
  assert.equal(tok.decode(tok.encode(text, { addSpecialTokens: false })), text);

  const { config, tensors } = loadModelFolder(out);
  const loaded = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));
  const { val } = loadCorpus(defaultCorpusDir(), { maxTrainFiles: 0, valSentences: 60 });
  const [batch] = validationBatches(sentenceExamples(val, tok, r.eotId, 48), 512, r.eotId, 320);
  const a = await r.model.forward(batch!, null);
  const b = await loaded.forward(batch!, null);
  let maxDiff = 0;
  for (let i = 0; i < a.logits.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a.logits[i]! - b.logits[i]!));
  assert.ok(maxDiff <= 1e-4, `logits of the written model differ by ${maxDiff}`);
  const held = await heldOutLoss(loaded, tok, { seqLen: 48, valSentences: 60 });
  assert.ok(Math.abs(held.loss - r.finalValLoss) <= 1e-4, `held-out loss of the folder ${held.loss} vs reported ${r.finalValLoss}`);

  // Same seed, same run.
  const out2 = mkdtempSync(join(tmpdir(), 'helora-pretrain-'));
  dirs.push(out2);
  const r2 = await pretrain({ ...tiny(out2), steps: 24 });
  assert.equal(r2.finalValLoss, r.finalValLoss);
  assert.deepEqual(readFileSync(join(out2, 'model.safetensors')), readFileSync(join(out, 'model.safetensors')));
});

test('pretrain rejects inconsistent shapes with clear messages', async () => {
  const out = join(tmpdir(), 'helora-pretrain-never-written');
  await assert.rejects(pretrain({ ...tiny(out), heads: 3 }), /multiple of 2 x --heads/);
  await assert.rejects(pretrain({ ...tiny(out), kvHeads: 3 }), /multiple of --kv-heads/);
  await assert.rejects(pretrain({ ...tiny(out), seqLen: 1024 }), /must not exceed --batch-tokens/);
});

test('the shipped models/helora-tiny matches its model card: config, size, and held-out loss', async () => {
  const dir = join(repoRoot(), 'models', 'helora-tiny');
  const files = readdirSync(dir);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'README.md']) assert.ok(files.includes(f), `models/helora-tiny lacks ${f}`);
  const total = files.reduce((a, f) => a + statSync(join(dir, f)).size, 0);
  assert.ok(total <= 8 * 1024 * 1024, `models/helora-tiny is ${total} bytes (limit 8 MiB)`);

  const d = PRETRAIN_DEFAULTS;
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg.model_type, 'llama');
  assert.deepEqual(cfg.architectures, ['LlamaForCausalLM']);
  assert.equal(cfg.tie_word_embeddings, true);
  assert.deepEqual(
    [cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings],
    [d.hidden, d.layers, d.heads, d.kvHeads, d.intermediate, d.vocab, d.seqLen],
    'the shipped config is the one `helora pretrain` builds by default',
  );

  const card = readFileSync(join(dir, 'README.md'), 'utf8');
  assert.match(card, /nlp-corpus/);
  assert.match(card, /MIT/);
  assert.match(card, new RegExp(`\\| hidden size \\| ${d.hidden} \\|`));
  assert.match(card, new RegExp(`\\| layers \\| ${d.layers} \\|`));
  const m = /\*\*validation loss of the shipped bf16 weights\*\* \| \*\*([0-9.]+)\*\*/.exec(card);
  assert.ok(m, 'the model card states the validation loss');
  const stated = Number(m[1]);
  const before = /\| validation loss before training \| ([0-9.]+) /.exec(card);
  assert.ok(before && Number(before[1]) - stated > 2, `the card shows a clear fall of the loss (${before?.[1]} -> ${stated})`);

  const { config, tensors } = loadModelFolder(dir);
  const tok = loadTokenizer(dir);
  assert.equal(tok.vocabSize, config.vocabSize);
  const model = LlamaModel.fromTensors(config, tensors, LocalFp32Provider.fromTensors(config, tensors));
  const r = await heldOutLoss(model, tok, { seqLen: d.seqLen });
  assert.ok(r.tokens > 5000, `validation set has ${r.tokens} tokens`);
  assert.ok(r.loss <= stated + 0.01, `held-out loss ${r.loss} is above the card's ${stated}`);
});
