/**
 * Pretraining a small Llama-architecture base model from scratch (no pretrained LLM can be
 * installed here): byte-level BPE trained on the corpus, sentence documents packed into
 * micro-batches, every weight trained with AdamW (warmup + cosine), a held-out validation loss,
 * periodic checkpoints, and a Hugging Face model folder at the end (bf16 weights, config.json in
 * the transformers Llama format, tokenizer.json, tokenizer_config.json, a model card).
 *
 * Corpus: the npm package nlp-corpus (MIT), builds/doc-N.json = arrays of English sentences.
 * The last HELD_OUT_FILES files are never trained on (neither the tokenizer nor the model).
 */

import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { trainBpe, writeTokenizerFolder } from '../model/bpe-train.js';
import { parseConfig, type LlamaConfig } from '../model/config.js';
import { LocalTrainableProvider, type TensorMap } from '../model/frozen.js';
import { generate } from '../model/generate.js';
import { LlamaModel } from '../model/llama.js';
import { writeModelFolder } from '../model/loader.js';
import { floatToBf16Bits } from '../model/safetensors.js';
import { loadTokenizer, type TextTokenizer } from '../model/tokenizer.js';
import { repoRoot } from '../util/paths.js';
import { loadTrainerCheckpoint, saveTrainerCheckpoint } from './checkpoint.js';
import { makeSchedule } from './optim.js';
import { epochBatchSource, packExamples, type Example, type PackedBatch } from './packing.js';
import { llamaConfigJson, randomLlamaTensors } from './random-init.js';
import { evaluateLoss, Trainer, type StepEvent } from './trainer.js';
import { projectionWeightName } from '../model/projections.js';

/** The separator / end-of-text token: it opens every document (bos) and closes it (eos). */
export const EOT_TOKEN = '<|endoftext|>';
/** Trailing corpus files kept out of training (tokenizer and model): the validation source. */
export const HELD_OUT_FILES = 2;
/** Sentences of the first held-out file that make the validation set (fixed, in file order). */
export const VAL_SENTENCES = 300;
/** Most tokens of one micro-batch (one forward/backward); larger steps accumulate micro-batches. */
export const MAX_MICRO_BATCH_TOKENS = 2048;
/** Characters of training text the BPE trainer sees (the merges settle long before the whole corpus). */
export const TOKENIZER_TRAIN_CHARS = 2_000_000;
/** A corpus file larger than this is refused before reading. */
const MAX_CORPUS_FILE_BYTES = 64 * 1024 * 1024;
/** Learning rate floor of the cosine decay, as a fraction of the peak. */
export const MIN_LR_RATIO = 0.1;
/** RoPE base of the shipped model (Llama 2 value). */
const ROPE_THETA = 10000;

export interface PretrainOptions {
  /** Output model folder. */
  out: string;
  steps: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  /** Longest training sequence (documents are split into chunks of at most this many tokens). */
  seqLen: number;
  /** Tokens per optimizer step (padding included). */
  batchTokens: number;
  /** Peak learning rate. */
  lr: number;
  seed: number;
  /** Linear warmup steps (default: 10% of the steps, at most 100). */
  warmupSteps?: number;
  weightDecay?: number;
  /** Validation every this many steps (default: steps / 10). */
  evalEvery?: number;
  /** Checkpoint (out/checkpoint.safetensors) every this many steps; 0 = only at the end. */
  checkpointEvery?: number;
  /** Continue from out/checkpoint.safetensors when it exists. */
  resume?: boolean;
  /** Folder of doc-N.json files (default: node_modules/nlp-corpus/builds). */
  corpusDir?: string;
  /** Use only the first this many TRAINING files (tests). */
  maxTrainFiles?: number;
  /** Validation sentences (default VAL_SENTENCES). */
  valSentences?: number;
  /** Prompts for the greedy samples of the model card. */
  samplePrompts?: string[];
  /** Write the model card (README.md); default true. */
  modelCard?: boolean;
  /** The command line that rebuilds this model, for the model card. */
  command?: string;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/** Defaults of `helora pretrain`: exactly the shipped models/helora-tiny. */
export const PRETRAIN_DEFAULTS = {
  out: 'models/helora-tiny',
  steps: 1800,
  hidden: 128,
  layers: 4,
  heads: 4,
  kvHeads: 2,
  intermediate: 352,
  vocab: 2048,
  seqLen: 256,
  batchTokens: 1024,
  lr: 3e-3,
  seed: 1234,
} as const;

export const DEFAULT_SAMPLE_PROMPTS = ['The', 'I think that', 'She looked at', 'The president said', 'What is'];

export interface PretrainResult {
  config: LlamaConfig;
  configJson: Record<string, unknown>;
  /** The trained weights (bf16-rounded: exactly what was written). */
  tensors: TensorMap;
  model: LlamaModel;
  tokenizer: TextTokenizer;
  eotId: number;
  initialValLoss: number;
  finalValLoss: number;
  finalTrainLoss: number;
  steps: number;
  trainTokens: number;
  seconds: number;
  params: number;
  corpus: { trainFiles: number; trainSentences: number; valSentences: number; trainDocTokens: number };
  history: Array<{ step: number; trainLoss: number; valLoss?: number; lr: number }>;
  samples: Array<{ prompt: string; completion: string }>;
}

// ---------------------------------------------------------------------------------------------
// Corpus

/** doc-N.json files of a folder in numeric order. */
export function corpusFiles(dir: string): string[] {
  if (!existsSync(dir)) throw new Error(`helora: corpus folder ${dir} not found (npm package nlp-corpus)`);
  const files = readdirSync(dir).filter((f) => /^doc-\d+\.json$/.test(f));
  files.sort((a, b) => Number(a.slice(4, -5)) - Number(b.slice(4, -5)));
  if (files.length <= HELD_OUT_FILES) throw new Error(`helora: corpus folder ${dir} has ${files.length} doc-N.json files, need more than ${HELD_OUT_FILES}`);
  return files.map((f) => join(dir, f));
}

/** The sentences of one corpus file (a JSON array of strings). */
export function readCorpusFile(path: string): string[] {
  const size = statSync(path).size;
  if (size > MAX_CORPUS_FILE_BYTES) throw new Error(`helora: corpus file ${path} is ${size} bytes (cap ${MAX_CORPUS_FILE_BYTES})`);
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`helora: corpus file ${path} is not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw new Error(`helora: corpus file ${path} must hold a JSON array of strings`);
  return (v as string[]).map((s) => s.trim()).filter((s) => s.length > 0);
}

export function defaultCorpusDir(): string {
  return join(repoRoot(), 'node_modules', 'nlp-corpus', 'builds');
}

/** Training sentences (all files but the held-out ones) and the validation sentences. */
export function loadCorpus(dir: string, opts: { maxTrainFiles?: number; valSentences?: number } = {}): { train: string[]; val: string[]; trainFiles: number } {
  const files = corpusFiles(dir);
  let trainFiles = files.slice(0, files.length - HELD_OUT_FILES);
  if (opts.maxTrainFiles !== undefined) trainFiles = trainFiles.slice(0, opts.maxTrainFiles);
  const train = trainFiles.flatMap(readCorpusFile);
  const val = readCorpusFile(files[files.length - HELD_OUT_FILES]!).slice(0, opts.valSentences ?? VAL_SENTENCES);
  return { train, val, trainFiles: trainFiles.length };
}

/**
 * One document per sentence: [eot] + tokens + [eot], split into chunks of at most seqLen tokens
 * that overlap by one token, so the last token of a chunk is predicted as the first-but-one
 * position of the next and no prediction is lost.
 */
export function sentenceExamples(sentences: readonly string[], tok: TextTokenizer, eotId: number, seqLen: number): Example[] {
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new Error(`helora: seqLen must be an integer >= 2, got ${seqLen}`);
  const out: Example[] = [];
  for (const s of sentences) {
    const ids = [eotId, ...tok.encode(s, { addSpecialTokens: false }), eotId];
    for (let start = 0; start < ids.length - 1; start += seqLen - 1) out.push({ ids: ids.slice(start, start + seqLen) });
  }
  return out;
}

/** Validation micro-batches: the examples in order, no shuffle (the same every run). */
export function validationBatches(examples: readonly Example[], T: number, eotId: number, vocab: number): PackedBatch[] {
  return packExamples(examples, { T, padId: eotId, vocabSize: vocab }).batches;
}

/** Held-out validation loss of a model folder written by pretrain (what the shipped-model test checks). */
export async function heldOutLoss(model: LlamaModel, tok: TextTokenizer, opts: { corpusDir?: string; valSentences?: number; seqLen: number }): Promise<{ loss: number; tokens: number }> {
  const eot = eotIdOf(tok);
  const { val } = loadCorpus(opts.corpusDir ?? defaultCorpusDir(), { maxTrainFiles: 0, valSentences: opts.valSentences });
  const batches = validationBatches(sentenceExamples(val, tok, eot, opts.seqLen), MAX_MICRO_BATCH_TOKENS, eot, model.config.vocabSize);
  return evaluateLoss({ forward: (b) => model.forward(b, null, { returnLogits: false }) }, null, batches);
}

function eotIdOf(tok: TextTokenizer): number {
  const id = tok.eosId;
  if (id === null) throw new Error(`helora: the tokenizer has no eos token (${EOT_TOKEN} expected)`);
  return id;
}

// ---------------------------------------------------------------------------------------------
// Model

function checkOptions(o: PretrainOptions): void {
  const ints: Array<[string, number, number]> = [
    ['steps', o.steps, 1], ['hidden', o.hidden, 8], ['layers', o.layers, 1], ['heads', o.heads, 1], ['kv-heads', o.kvHeads, 1],
    ['intermediate', o.intermediate, 1], ['vocab', o.vocab, 257], ['seq-len', o.seqLen, 2], ['batch-tokens', o.batchTokens, 2],
  ];
  for (const [n, v, min] of ints) if (!Number.isSafeInteger(v) || v < min) throw new Error(`helora: --${n} must be an integer >= ${min}, got ${v}`);
  if (o.hidden % o.heads !== 0 || (o.hidden / o.heads) % 2 !== 0) throw new Error(`helora: --hidden ${o.hidden} must be a multiple of 2 x --heads ${o.heads} (even head size for RoPE)`);
  if (o.heads % o.kvHeads !== 0) throw new Error(`helora: --heads ${o.heads} must be a multiple of --kv-heads ${o.kvHeads}`);
  if (o.seqLen > o.batchTokens) throw new Error(`helora: --seq-len ${o.seqLen} must not exceed --batch-tokens ${o.batchTokens}`);
  if (!(Number.isFinite(o.lr) && o.lr > 0)) throw new Error(`helora: --lr must be a positive number, got ${o.lr}`);
  if (!Number.isSafeInteger(o.seed)) throw new Error(`helora: --seed must be an integer, got ${o.seed}`);
}

/** Micro-batch size and accumulation count for a step of batchTokens tokens. */
export function microBatching(batchTokens: number, seqLen: number): { T: number; accum: number } {
  const accum = Math.ceil(batchTokens / MAX_MICRO_BATCH_TOKENS);
  const T = Math.ceil(batchTokens / accum);
  return { T: Math.max(T, seqLen), accum };
}

/**
 * Fresh weights: N(0, 0.02)-like uniform everywhere (random-init.ts), with the projections that
 * write into the residual stream (o_proj, down_proj) scaled by 1/sqrt(2 * layers), as GPT-2 does,
 * so the residual variance does not grow with depth.
 */
export function initTensors(o: PretrainOptions): TensorMap {
  const t = randomLlamaTensors({
    hiddenSize: o.hidden, intermediateSize: o.intermediate, numLayers: o.layers, numHeads: o.heads, numKvHeads: o.kvHeads, vocabSize: o.vocab,
  }, o.seed);
  const s = 1 / Math.sqrt(2 * o.layers);
  for (let l = 0; l < o.layers; l++) {
    for (const m of ['o_proj', 'down_proj'] as const) {
      const d = t.get(projectionWeightName(l, m))!.data;
      for (let i = 0; i < d.length; i++) d[i] = d[i]! * s;
    }
  }
  return t;
}

/** HF config.json of the pretrained model (transformers LlamaConfig keys). */
export function pretrainConfigJson(o: PretrainOptions, eotId: number): Record<string, unknown> {
  const base = llamaConfigJson({
    hiddenSize: o.hidden, intermediateSize: o.intermediate, numLayers: o.layers, numHeads: o.heads, numKvHeads: o.kvHeads,
    vocabSize: o.vocab, ropeTheta: ROPE_THETA, maxPositionEmbeddings: o.seqLen,
  });
  return {
    ...base,
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    head_dim: o.hidden / o.heads,
    attention_bias: false,
    attention_dropout: 0.0,
    mlp_bias: false,
    initializer_range: 0.02,
    pretraining_tp: 1,
    rope_scaling: null,
    bos_token_id: eotId,
    eos_token_id: eotId,
    tie_word_embeddings: true,
    use_cache: true,
    torch_dtype: 'bfloat16',
  };
}

/** Round every value to the nearest bf16 (in place), so the model in memory is the one on disk. */
export function roundToBf16InPlace(tensors: TensorMap): void {
  const u = new Uint32Array(1);
  const f = new Float32Array(u.buffer);
  for (const t of tensors.values()) {
    const d = t.data;
    for (let i = 0; i < d.length; i++) {
      f[0] = d[i]!;
      u[0] = floatToBf16Bits(u[0]!) << 16;
      d[i] = f[0]!;
    }
  }
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const r = Math.round(s);
  const m = Math.floor(r / 60);
  return m > 0 ? `${m}m${String(r % 60).padStart(2, '0')}s` : `${r}s`;
}

// ---------------------------------------------------------------------------------------------

/** Train a tokenizer and a model from scratch and write the model folder to o.out. */
export async function pretrain(o: PretrainOptions): Promise<PretrainResult> {
  checkOptions(o);
  const log = o.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const t0 = performance.now();
  mkdirSync(o.out, { recursive: true });

  // 1. Corpus and tokenizer (trained on training files only).
  const corpus = loadCorpus(o.corpusDir ?? defaultCorpusDir(), { maxTrainFiles: o.maxTrainFiles, valSentences: o.valSentences });
  if (corpus.train.length === 0 || corpus.val.length === 0) throw new Error('helora: the corpus has no training or no validation sentences');
  const tokText: string[] = [];
  let chars = 0;
  for (const s of corpus.train) {
    if (chars >= TOKENIZER_TRAIN_CHARS) break;
    tokText.push(s);
    chars += s.length;
  }
  const trained = trainBpe(tokText, { vocabSize: o.vocab, specialTokens: [EOT_TOKEN], bosToken: EOT_TOKEN, eosToken: EOT_TOKEN });
  writeTokenizerFolder(o.out, trained);
  const tok = loadTokenizer(o.out);
  const eotId = eotIdOf(tok);
  if (tok.vocabSize !== o.vocab) throw new Error(`helora: the trained tokenizer has ${tok.vocabSize} tokens, expected ${o.vocab}`);
  log(`helora pretrain: tokenizer ${o.vocab} tokens trained on ${chars} chars (${fmtTime((performance.now() - t0) / 1000)})`);

  const trainEx = sentenceExamples(corpus.train, tok, eotId, o.seqLen);
  const valEx = sentenceExamples(corpus.val, tok, eotId, o.seqLen);
  const trainDocTokens = trainEx.reduce((a, e) => a + e.ids.length, 0);
  const { T, accum } = microBatching(o.batchTokens, o.seqLen);
  const valBatches = validationBatches(valEx, T, eotId, o.vocab);
  log(`helora pretrain: ${corpus.train.length} training sentences (${trainDocTokens} tokens, ${corpus.trainFiles} files), ${corpus.val.length} validation sentences; micro-batch ${T} x ${accum}`);

  // 2. Model.
  const configJson = pretrainConfigJson(o, eotId);
  const config = parseConfig(configJson);
  const tensors = initTensors(o);
  const provider = LocalTrainableProvider.fromTensors(config, tensors);
  const model = LlamaModel.fromTensors(config, tensors, provider, { fullGrads: true });
  const params = model.parameters().reduce((a, p) => a + p.value.length, 0);

  const warmup = o.warmupSteps ?? Math.min(100, Math.max(1, Math.floor(o.steps / 10)));
  const schedule = makeSchedule({ kind: 'cosine', lr: o.lr, warmupSteps: Math.min(warmup, o.steps), totalSteps: o.steps, minLr: o.lr * MIN_LR_RATIO });
  const data = epochBatchSource(trainEx, { T, padId: eotId, seed: o.seed, vocabSize: o.vocab });
  const trainer = new Trainer({
    model: { forwardBackward: (b, _a, opts) => model.forwardBackward(b, null, opts) },
    lora: { parameters: () => model.parameters(), zeroGrad: () => model.zeroGrad() },
    data,
    gradAccum: accum,
    schedule,
    optimizer: { weightDecay: o.weightDecay ?? 0.01, beta2: 0.95 },
    seed: o.seed,
  });
  const ckptPath = join(o.out, 'checkpoint.safetensors');
  if (o.resume && existsSync(ckptPath)) {
    trainer.loadState(loadTrainerCheckpoint(ckptPath));
    log(`helora pretrain: resumed from ${ckptPath} at step ${trainer.step}`);
  }

  const evalVal = async (): Promise<number> => {
    const r = await evaluateLoss({ forward: (b) => model.forward(b, null, { returnLogits: false }) }, null, valBatches);
    provider.releaseInputs();
    return r.loss;
  };
  const initialValLoss = await evalVal();
  log(`helora pretrain: ${params} parameters; validation loss at step ${trainer.step}: ${initialValLoss.toFixed(4)} (uniform would be ${Math.log(o.vocab).toFixed(4)})`);

  const evalEvery = o.evalEvery ?? Math.max(1, Math.floor(o.steps / 10));
  const ckptEvery = o.checkpointEvery ?? 0;
  const history: PretrainResult['history'] = [];
  const tTrain = performance.now();
  const startStep = trainer.step;
  let trainTokens = startStep * accum * T;
  let lastLoss = NaN;
  let smooth = NaN;
  while (trainer.step < o.steps) {
    const ev: StepEvent = await trainer.trainStep();
    trainTokens += ev.tokens;
    lastLoss = ev.loss;
    smooth = Number.isNaN(smooth) ? ev.loss : 0.9 * smooth + 0.1 * ev.loss;
    const h: PretrainResult['history'][number] = { step: ev.step, trainLoss: ev.loss, lr: ev.lr };
    const elapsed = (performance.now() - tTrain) / 1000;
    const done = ev.step - startStep;
    const eta = (elapsed / done) * (o.steps - ev.step);
    const tps = ((done * accum * T) / elapsed).toFixed(0);
    let line = `step ${ev.step}/${o.steps} loss ${ev.loss.toFixed(4)} (avg ${smooth.toFixed(4)}) lr ${ev.lr.toExponential(2)} gnorm ${ev.gradNorm.toFixed(2)} | ${tps} tok/s | ETA ${fmtTime(eta)}`;
    if (ev.step % evalEvery === 0 || ev.step === o.steps) {
      h.valLoss = await evalVal();
      line += ` | val ${h.valLoss.toFixed(4)}`;
    }
    history.push(h);
    log(line);
    if (ckptEvery > 0 && ev.step % ckptEvery === 0 && ev.step < o.steps) saveTrainerCheckpoint(ckptPath, trainer.state());
  }
  const trainSeconds = (performance.now() - tTrain) / 1000;
  // The run finished: the checkpoint (3x the fp32 model) is no longer needed to resume.
  if (existsSync(ckptPath)) unlinkSync(ckptPath);

  // 3. The shipped weights are bf16: round, then measure the loss of exactly those.
  roundToBf16InPlace(tensors);
  const finalValLoss = await evalVal();
  writeModelFolder(o.out, configJson, tensors, { dtype: 'BF16' });
  writeFileSync(join(o.out, 'generation_config.json'), JSON.stringify({ bos_token_id: eotId, eos_token_id: eotId, do_sample: false }, null, 2) + '\n');

  const samples: PretrainResult['samples'] = [];
  for (const prompt of o.samplePrompts ?? DEFAULT_SAMPLE_PROMPTS) {
    const ids = [eotId, ...tok.encode(prompt, { addSpecialTokens: false })];
    const outIds = await generate(model, null, ids, { maxNewTokens: 24, temperature: 0 });
    samples.push({ prompt, completion: tok.decode(outIds, { skipSpecialTokens: true }) });
  }
  provider.releaseInputs();
  const seconds = (performance.now() - t0) / 1000;
  const result: PretrainResult = {
    config, configJson, tensors, model, tokenizer: tok, eotId, initialValLoss, finalValLoss, finalTrainLoss: lastLoss, steps: trainer.step,
    trainTokens, seconds, params, history, samples,
    corpus: { trainFiles: corpus.trainFiles, trainSentences: corpus.train.length, valSentences: corpus.val.length, trainDocTokens },
  };
  writeFileSync(join(o.out, 'training_log.json'), JSON.stringify({
    options: { ...o, log: undefined }, params, initialValLoss, finalValLoss, finalTrainLoss: lastLoss, trainTokens, trainSeconds, seconds, history, samples,
  }, null, 1) + '\n');
  if (o.modelCard ?? true) writeFileSync(join(o.out, 'README.md'), modelCard(o, result, trainSeconds));
  log(`helora pretrain: done in ${fmtTime(seconds)}: validation loss ${initialValLoss.toFixed(4)} -> ${finalValLoss.toFixed(4)}; wrote ${o.out}`);
  return result;
}

/** The model card: architecture, tokenizer, corpus and license, training figures, samples, rebuild command. */
export function modelCard(o: PretrainOptions, r: PretrainResult, trainSeconds: number): string {
  const c = r.config;
  const cmd = o.command ?? `helora pretrain --out ${o.out} --steps ${o.steps} --hidden ${o.hidden} --layers ${o.layers} --heads ${o.heads} --kv-heads ${o.kvHeads} --intermediate ${o.intermediate} --vocab ${o.vocab} --seq-len ${o.seqLen} --batch-tokens ${o.batchTokens} --lr ${o.lr} --seed ${o.seed}`;
  const vals = r.history.filter((h) => h.valLoss !== undefined).map((h) => `| ${h.step} | ${h.trainLoss.toFixed(3)} | ${h.valLoss!.toFixed(3)} |`);
  return `# helora-tiny

A small Llama-architecture base model trained from scratch by \`helora pretrain\`, so that
\`helora demo\` has a real (if tiny) base model to fine-tune offline. It is a toy: it writes
English-looking sentences, it knows next to nothing.

## Architecture (transformers \`LlamaForCausalLM\`, \`model_type: "llama"\`)

| | |
|---|---|
| hidden size | ${c.hiddenSize} |
| layers | ${c.numLayers} |
| attention heads / key-value heads | ${c.numHeads} / ${c.numKvHeads} (grouped-query attention), head size ${c.headDim} |
| MLP (SwiGLU) intermediate size | ${c.intermediateSize} |
| vocabulary | ${c.vocabSize} |
| RoPE theta | ${c.ropeTheta}, trained context ${o.seqLen} tokens (\`max_position_embeddings\`) |
| RMSNorm eps | ${c.rmsNormEps} |
| tied input/output embeddings | yes |
| parameters | ${r.params} |
| weights | \`model.safetensors\`, bfloat16 |

## Tokenizer

Byte-level BPE (Llama-3 pre-tokenizer pattern, GPT-2 byte alphabet) trained by
\`src/model/bpe-train.ts\` on the first ${TOKENIZER_TRAIN_CHARS.toLocaleString('en-US')} characters of the training sentences:
256 byte tokens, ${c.vocabSize - 257} merges and one special token \`${EOT_TOKEN}\` (id ${r.eotId}), which is
both bos and eos. Every training document is \`${EOT_TOKEN}\` + sentence + \`${EOT_TOKEN}\`.

## Training data and license

[nlp-corpus](https://www.npmjs.com/package/nlp-corpus) 4.4.0 by Spencer Kelly, MIT license (npm
package, \`builds/doc-N.json\`: arrays of English sentences mixed from many sources: SMS, TV
transcripts, song lyrics, fiction, speeches, legal text, forum posts, quiz questions). Its README
says the texts were collected from the web for testing NLP parsers and asks that they not be
republished commercially; some sentences are offensive. This model is for tests and demos only.

- training: files doc-0 .. doc-${r.corpus.trainFiles - 1} (${r.corpus.trainSentences} sentences, ${r.corpus.trainDocTokens} tokens with separators)
- validation (never trained on, neither tokenizer nor model): the first ${r.corpus.valSentences} sentences of the
  first held-out file (the last ${HELD_OUT_FILES} files are held out)

## Training

AdamW (beta2 0.95, weight decay ${o.weightDecay ?? 0.01}), peak learning rate ${o.lr}, linear warmup then cosine decay to
${MIN_LR_RATIO} x peak, gradient clipping at 1.0, every weight trained in fp32 (helora's own forward/backward,
checked against PyTorch autograd), sentences packed into micro-batches of ${microBatching(o.batchTokens, o.seqLen).T} tokens
(attention stays inside each sentence), seed ${o.seed}.

| | |
|---|---|
| optimizer steps | ${r.steps} |
| tokens per step | ${o.batchTokens} (padding included) |
| tokens seen | ${r.trainTokens} |
| training time | ${fmtTime(trainSeconds)} (total with tokenizer and evaluation ${fmtTime(r.seconds)}), one CPU thread of a shared 2-core machine |
| validation loss before training | ${r.initialValLoss.toFixed(4)} nats/token (uniform: ${Math.log(c.vocabSize).toFixed(4)}) |
| **validation loss of the shipped bf16 weights** | **${r.finalValLoss.toFixed(4)}** nats/token (perplexity ${Math.exp(r.finalValLoss).toFixed(1)}) |
| last training-step loss | ${r.finalTrainLoss.toFixed(4)} |

| step | train loss | validation loss |
|---|---|---|
${vals.join('\n')}

## Greedy samples

Prompt = \`${EOT_TOKEN}\` + text, greedy decoding, 24 new tokens at most (\`src/model/generate.ts\`):

${r.samples.map((s) => `- **${s.prompt}**${s.completion.replace(/\n/g, ' ')}`).join('\n')}

## Rebuild

\`\`\`
${cmd}
\`\`\`

(Deterministic for a given seed and machine; \`node dist/cli/main.js pretrain ...\` after \`npm run build\`.)
\`training_log.json\` holds the options and the loss of every step.
`;
}
