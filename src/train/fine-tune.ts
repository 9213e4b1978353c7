// LoRA fine-tuning of a Hugging Face model folder, with the frozen products computed
//   encrypted  on a server over RLWE ciphertexts (the caller connects it: connectEncrypted),
//   quantized  locally with exactly the integers of the encrypted path (no encryption),
//   fp32       locally in fp32.
// The client reads from the model folder only what it computes itself (tokenizer, embeddings, norms,
// biases, LM head); in encrypted mode the projection weights are not even read.
//
// Determinism (what makes a resume equal an uninterrupted run): the LoRA init comes from the seed,
// the data order from the seed and the epoch (packing.ts epochBatchSource), the dropout masks from
// (seed, step, micro-batch), and a checkpoint holds the LoRA values, the AdamW moments, the step and
// the data position. Only the HE noise differs between two encrypted runs.
//
// Held-out evaluation (evaluate.ts; evalData or evalSplit): the loss over records the run does not
// train on, before the first step, every evalEvery steps and after the last, through the same
// products as training (forward only), without dropout. It is recorded next to the training loss.
//
// The run's folder (run-files.ts) is its outcome: loss.csv after every step, checkpoints/ every
// checkpointEvery steps and at the end, adapter/ (PEFT) once every step is done. No UI here:
// messages go out through `say`, progress through onStart / onStep.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { LlamaConfig } from '../model/config.js';
import { LocalFp32Provider, LocalQuantizedProvider, type FrozenLinearProvider, type TensorMap } from '../model/frozen.js';
import { LlamaModel } from '../model/llama.js';
import { loadModelFolder } from '../model/loader.js';
import { LoraAdapter } from '../model/lora.js';
import { isProjectionName, parseProjectionWeightName, PROJECTION_NAMES, type ProjectionName } from '../model/projections.js';
import { readSafetensorsHeader } from '../model/safetensors.js';
import { DEFAULT_ACT_BITS, MAX_BITS, MIN_BITS } from '../quant/quantize.js';
import { loadTokenizer, type TextTokenizer } from '../model/tokenizer.js';
import { readTrainingFile, tokenizeRecords, type DataRecord } from './data.js';
import { makeSchedule, type ScheduleOptions } from './optim.js';
import { epochBatchSource, epochSeed, packExamples } from './packing.js';
import {
  historyCsv, listCheckpoints, loadRunCheckpoint, saveAdapterAtomic, saveRunCheckpoint, writeFileAtomic, type EvalRow, type HistoryRow,
} from './run-files.js';
import { heldOutLoss, packHeldOut, splitHeldOut } from './evaluate.js';
import { Trainer, type StepEvent } from './trainer.js';
import { stepsForEpochs } from './estimate.js';

export type TrainMode = 'encrypted' | 'quantized' | 'fp32';
export const TRAIN_MODES: readonly TrainMode[] = ['encrypted', 'quantized', 'fp32'];

/** Bytes sent to / received from the server that computes the products. */
export interface Traffic { up: number; down: number }

/** The frozen products of encrypted mode, on a server the caller connected to. */
export interface EncryptedProducts {
  provider: FrozenLinearProvider;
  /** Traffic of this connection so far. */
  traffic(): Traffic;
  close(): Promise<void>;
}

/**
 * Connects the encrypted products for this model (src/transport/remote-training.ts: a helora
 * server). Called once the data and the local model are loaded, so a bad file fails first.
 */
export type ConnectEncrypted = (config: LlamaConfig, modelDir: string) => Promise<EncryptedProducts>;

/** Where a run starts, known once the data is packed and a checkpoint (if any) is read. */
export interface RunStart {
  totalSteps: number;
  /** 0, or the checkpoint's step when resumed. */
  startStep: number;
}

export interface FineTuneOptions {
  /** Hugging Face model folder. */
  model: string;
  /** Training file (JSONL text, prompt/completion or chat messages, or plain text) or records in memory. */
  data: string | DataRecord[];
  /** Run folder: loss.csv, checkpoints/, adapter/. */
  out: string;
  mode: TrainMode;
  /** Encrypted mode only (and required there). */
  connectEncrypted?: ConnectEncrypted;
  /** Optimizer steps, or epochs over the data (exactly one of them; default 1 epoch). */
  steps?: number;
  epochs?: number;
  batchTokens: number;
  gradAccum: number;
  lr: number;
  warmup: number;
  schedule: ScheduleOptions['kind'];
  rank: number;
  alpha: number;
  dropout: number;
  targets: ProjectionName[];
  /** Decoder layers that get adapters (PEFT layers_to_transform); absent or null: every layer. */
  layers?: number[] | null;
  seed: number;
  /** Continue from the newest checkpoint in `out` (without: refuse a folder that has checkpoints). */
  resume: boolean;
  checkpointEvery: number;
  /** Name of the run in messages (default: the mode). */
  label?: string;
  /** Messages for the user (default: none). */
  say?: (line: string) => void;
  /** Called once the run knows its steps, before the first step. */
  onStart?: (start: RunStart) => void;
  /** Called when a checkpoint folder is in place (before onStep of its step). */
  onCheckpoint?: (step: number, dir: string) => void;
  /** Called after every optimizer step, once the CSV (and a due checkpoint) is written. */
  onStep?: (row: HistoryRow, step: StepEvent) => void;
  /**
   * Bits the activations and gradients are quantized to (quantized and encrypted mode). Default:
   * 8 in quantized mode, the server's width (8 unless it says otherwise) in encrypted mode, where
   * the server's width is an upper bound.
   */
  actBits?: number;
  /** Held-out records (a file or records in memory), or evalSplit: a seeded fraction of the training records (not both). */
  evalData?: string | DataRecord[];
  evalSplit?: number;
  /** Evaluate every this many steps (besides before the first and after the last); needs evalData or evalSplit. */
  evalEvery?: number;
  /** Called after every held-out evaluation, once it is in the CSV. */
  onEval?: (row: EvalRow) => void;
  /** Test hook: stop (without the final adapter) once this many steps are done, as a crash would. */
  stopAfter?: number;
}

export const TRAIN_DEFAULTS = {
  mode: 'encrypted' as TrainMode,
  batchTokens: 2048,
  gradAccum: 1,
  lr: 2e-4,
  warmup: 0,
  schedule: 'cosine' as const,
  rank: 8,
  alpha: 16,
  dropout: 0.05,
  targets: [...PROJECTION_NAMES],
  seed: 0,
  checkpointEvery: 10,
};

export interface FineTuneResult {
  history: HistoryRow[];
  /** The run folder (absolute). */
  out: string;
  csvPath: string;
  /** null when the run stopped early (stopAfter). */
  adapterDir: string | null;
  lora: LoraAdapter;
  model: LlamaModel;
  tokenizer: TextTokenizer;
  config: LlamaConfig;
  totalSteps: number;
  /** Step the run started from (0, or the checkpoint's step when resumed). */
  startStep: number;
  /** Held-out evaluations, step 0 first (empty without a held-out set). */
  evals: EvalRow[];
  /** The evaluation after the last step (null without a held-out set, or when the run stopped early). */
  finalEval: EvalRow | null;
}

const isProjectionWeight = (tensorName: string): boolean => parseProjectionWeightName(tensorName) !== null;

/** Whether the folder's safetensors files hold the projection weights (a client may ship without them). */
export function folderHasProjections(dir: string): boolean {
  const index = join(dir, 'model.safetensors.index.json');
  try {
    if (existsSync(index)) {
      const j = JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> };
      return Object.keys(j.weight_map ?? {}).some(isProjectionWeight);
    }
    return [...readSafetensorsHeader(join(dir, 'model.safetensors')).keys()].some(isProjectionWeight);
  } catch {
    return false;
  }
}

/** Loads what the client computes itself; with projections, also the projection weights. */
export function loadClientModel(dir: string, withProjections: boolean): { config: LlamaConfig; tensors: TensorMap } {
  return loadModelFolder(dir, withProjections ? undefined : (n) => !isProjectionWeight(n));
}

export function checkFineTuneOptions(o: FineTuneOptions): void {
  const int = (name: string, v: number, min: number): void => {
    if (!Number.isSafeInteger(v) || v < min) throw new Error(`helora: ${name} must be an integer >= ${min}, got ${v}`);
  };
  if (!TRAIN_MODES.includes(o.mode)) throw new Error(`helora: --mode must be one of ${TRAIN_MODES.join(', ')}, got ${JSON.stringify(o.mode)}`);
  if (o.mode === 'encrypted' && !o.connectEncrypted) throw new Error('helora: encrypted mode needs connectEncrypted (the server that computes the products)');
  if (o.steps !== undefined && o.epochs !== undefined) throw new Error('helora: give either --steps or --epochs, not both');
  if (o.steps !== undefined) int('--steps', o.steps, 1);
  if (o.epochs !== undefined && !(Number.isFinite(o.epochs) && o.epochs > 0)) throw new Error(`helora: --epochs must be a positive number, got ${o.epochs}`);
  int('--batch-tokens', o.batchTokens, 2);
  int('--grad-accum', o.gradAccum, 1);
  int('--warmup', o.warmup, 0);
  int('--rank', o.rank, 1);
  int('--seed', o.seed, 0);
  if (o.seed > 0xffffffff) throw new Error(`helora: --seed must fit in 32 bits, got ${o.seed}`);
  int('--checkpoint-every', o.checkpointEvery, 1);
  if (!(Number.isFinite(o.lr) && o.lr > 0)) throw new Error(`helora: --lr must be a positive number, got ${o.lr}`);
  if (!(Number.isFinite(o.alpha) && o.alpha > 0)) throw new Error(`helora: --alpha must be a positive number, got ${o.alpha}`);
  if (!(o.dropout >= 0 && o.dropout < 1)) throw new Error(`helora: --dropout must be in [0, 1), got ${o.dropout}`);
  if (o.targets.length === 0) throw new Error('helora: --targets needs at least one module');
  for (const t of o.targets) {
    if (!isProjectionName(t)) throw new Error(`helora: unknown LoRA target ${JSON.stringify(t)} (expected some of ${PROJECTION_NAMES.join(',')})`);
  }
  checkEvalOptions(o);
  if (o.actBits !== undefined) {
    if (o.mode === 'fp32') throw new Error('helora: --act-bits is used in quantized and encrypted mode, not with --mode fp32');
    if (!Number.isInteger(o.actBits) || o.actBits < MIN_BITS || o.actBits > MAX_BITS) throw new Error(`helora: --act-bits must be an integer in [${MIN_BITS}, ${MAX_BITS}], got ${o.actBits}`);
  }
}

function checkEvalOptions(o: FineTuneOptions): void {
  if (o.evalData !== undefined && o.evalSplit !== undefined) throw new Error('helora: give either --eval-data or --eval-split, not both');
  if (o.evalSplit !== undefined && !(o.evalSplit > 0 && o.evalSplit < 1)) throw new Error(`helora: --eval-split must be a fraction in (0, 1), got ${o.evalSplit}`);
  if (o.evalEvery !== undefined) {
    if (!Number.isSafeInteger(o.evalEvery) || o.evalEvery < 1) throw new Error(`helora: --eval-every must be an integer >= 1, got ${o.evalEvery}`);
    if (o.evalData === undefined && o.evalSplit === undefined) throw new Error('helora: --eval-every needs a held-out set: --eval-data FILE or --eval-split FRACTION');
  }
}

/** The records to train on and the held-out ones (null without evaluation). */
function trainAndHeldOut(o: FineTuneOptions): { train: DataRecord[]; heldOut: DataRecord[] | null } {
  const all = typeof o.data === 'string' ? readTrainingFile(o.data).records : o.data;
  if (o.evalSplit !== undefined) return splitHeldOut(all, o.evalSplit, o.seed);
  if (o.evalData === undefined) return { train: all, heldOut: null };
  const heldOut = typeof o.evalData === 'string' ? readTrainingFile(o.evalData).records : o.evalData;
  if (heldOut.length === 0) throw new Error('helora: the held-out data (--eval-data) has no records');
  return { train: all, heldOut };
}

/** Evaluates the model with the run's LoRA on the held-out records, packed like training. */
function heldOutEvaluator(model: LlamaModel, lora: LoraAdapter, heldOut: DataRecord[], tokenizer: TextTokenizer, batchTokens: number) {
  const { examples, padId } = tokenizeForTraining(heldOut, tokenizer, model.config);
  const batches = packHeldOut(examples, { T: batchTokens, padId, vocabSize: model.config.vocabSize });
  return async (step: number): Promise<EvalRow> => ({ step, ...(await heldOutLoss(model, lora, batches)) });
}

function sha256(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

/** The token ids a run trains on, with the pad / bos / eos ids used. */
export function tokenizeForTraining(records: DataRecord[], tok: TextTokenizer, config: LlamaConfig) {
  const eos = tok.eosId ?? (typeof config.eosTokenId === 'number' ? config.eosTokenId : null);
  const bos = tok.bosId ?? config.bosTokenId ?? null;
  const examples = tokenizeRecords(records, (t) => tok.encode(t, { addSpecialTokens: false }), {
    bosId: bos ?? undefined, eosId: eos ?? undefined, encodeChat: (messages) => tok.encodeChat(messages),
  });
  return { examples, padId: eos ?? 0 };
}

/** The client's side of the model: what it computes itself (in encrypted mode, no projection weights) and the tokenizer. */
function loadClient(o: FineTuneOptions): { config: LlamaConfig; tensors: TensorMap; tokenizer: TextTokenizer } {
  const { config, tensors } = loadClientModel(o.model, o.mode !== 'encrypted');
  const tokenizer = loadTokenizer(o.model);
  if (tokenizer.vocabSize > config.vocabSize) throw new Error(`helora: the tokenizer has ${tokenizer.vocabSize} tokens, more than the model's vocabulary of ${config.vocabSize}`);
  return { config, tensors, tokenizer };
}

/** The frozen products for the mode: local ones from the projection weights, encrypted ones from the caller's server. */
async function openProducts(o: FineTuneOptions, config: LlamaConfig, tensors: TensorMap): Promise<EncryptedProducts> {
  if (o.mode === 'encrypted') return o.connectEncrypted!(config, o.model);
  const provider = o.mode === 'quantized' ? LocalQuantizedProvider.fromTensors(config, tensors, o.actBits ?? DEFAULT_ACT_BITS) : LocalFp32Provider.fromTensors(config, tensors);
  return { provider, traffic: () => ({ up: 0, down: 0 }), close: async () => {} };
}

/** The packed data, the LoRA initialization and the trainer; the step count follows from the data when epochs are asked for. */
function prepareTrainer(o: FineTuneOptions, model: LlamaModel, records: DataRecord[], tokenizer: TextTokenizer) {
  const config = model.config;
  const { examples, padId } = tokenizeForTraining(records, tokenizer, config);
  const packOpts = { T: o.batchTokens, padId, seed: o.seed, vocabSize: config.vocabSize };
  const perEpoch = packExamples(examples, { ...packOpts, seed: epochSeed(o.seed, 0) }).batches.length;
  if (perEpoch === 0) throw new Error('helora: no training examples with a loss target left after packing');
  const totalSteps = o.steps ?? stepsForEpochs(o.epochs ?? 1, perEpoch, o.gradAccum);
  const lora = LoraAdapter.create(config, { rank: o.rank, alpha: o.alpha, dropout: o.dropout, targetModules: o.targets, layers: o.layers ?? null }, { seed: `helora-lora-init:${o.seed}` });
  const trainer = new Trainer({
    model, lora, data: epochBatchSource(examples, packOpts), gradAccum: o.gradAccum, seed: o.seed,
    schedule: makeSchedule({ kind: o.schedule, lr: o.lr, warmupSteps: o.warmup, totalSteps }),
  });
  return { lora, trainer, totalSteps };
}

/** The settings a resume must match to continue the same run. */
function runFingerprint(o: FineTuneOptions, records: DataRecord[], heldOut: DataRecord[] | null, totalSteps: number, config: LlamaConfig): Record<string, unknown> {
  return {
    data_sha256: sha256(JSON.stringify(records)), seed: o.seed, batch_tokens: o.batchTokens, grad_accum: o.gradAccum, lr: o.lr, warmup: o.warmup,
    schedule: o.schedule, rank: o.rank, alpha: o.alpha, dropout: o.dropout, targets: [...o.targets], total_steps: totalSteps,
    model: { hidden: config.hiddenSize, layers: config.numLayers, vocab: config.vocabSize },
    // (only when set: runs on every layer keep the fingerprint they always had)
    ...(o.layers ? { lora_layers: [...o.layers] } : {}),
    ...(o.actBits !== undefined && o.actBits !== DEFAULT_ACT_BITS ? { act_bits: o.actBits } : {}),
    ...(heldOut ? { eval_sha256: sha256(JSON.stringify(heldOut)), eval_every: o.evalEvery ?? null } : {}),
  };
}

/**
 * One run in progress: the trainer, its loss history and the run folder. A resumed run carries on
 * the history, the elapsed time and the traffic of the sessions before it.
 */
class FineTuneRun {
  readonly out: string;
  readonly csvPath: string;
  history: HistoryRow[] = [];
  evals: EvalRow[] = [];
  startStep = 0;
  private elapsedBefore = 0;
  private trafficBefore: Traffic = { up: 0, down: 0 };
  private t0 = performance.now();

  constructor(
    private readonly o: FineTuneOptions,
    private readonly trainer: Trainer<LoraAdapter>,
    readonly totalSteps: number,
    private readonly fingerprint: Record<string, unknown>,
    private readonly products: EncryptedProducts,
    private readonly evaluate: ((step: number) => Promise<EvalRow>) | null,
  ) {
    this.out = resolve(o.out);
    this.csvPath = join(this.out, 'loss.csv');
  }

  /** Continues from the newest checkpoint when asked to; never starts over a folder that has one. */
  resumeOrStart(): void {
    const { o, out } = this;
    const say = o.say ?? (() => {});
    const existing = listCheckpoints(out);
    if (o.resume && existing.length > 0) {
      const last = existing[existing.length - 1]!;
      const ck = loadRunCheckpoint(last.dir);
      const diff = Object.keys(this.fingerprint).filter((k) => JSON.stringify(this.fingerprint[k]) !== JSON.stringify(ck.fingerprint[k]));
      if (diff.length > 0) throw new Error(`helora: cannot resume from ${last.dir}: these settings differ from the checkpoint's: ${diff.join(', ')}`);
      this.trainer.loadState(ck.state);
      this.history = ck.history.slice(0, ck.state.step);
      this.evals = (ck.evals ?? []).filter((e) => e.step <= ck.state.step);
      this.elapsedBefore = ck.elapsedS;
      this.trafficBefore = { up: ck.bytesUp, down: ck.bytesDown };
      say(`helora: resuming ${o.label ?? o.mode} from step ${ck.state.step} of ${this.totalSteps} (${last.dir})`);
    } else if (o.resume) {
      say(`helora: no checkpoint in ${out}; starting from step 0`);
    } else if (existing.length > 0) {
      throw new Error(`helora: ${out} already holds checkpoints of a run: pass --resume to continue it, or choose another --out`);
    }
    this.startStep = this.trainer.step;
    this.t0 = performance.now();
  }

  /** Whether the loop ends here: every step done, or the stopAfter test hook reached. */
  get stopped(): boolean {
    const step = this.trainer.step;
    return step >= this.totalSteps || (this.o.stopAfter !== undefined && step >= this.o.stopAfter);
  }

  /** One optimizer step, logged to loss.csv; checkpointed every checkpointEvery steps and at the last. */
  async step(): Promise<{ row: HistoryRow; event: StepEvent }> {
    const event = await this.trainer.trainStep();
    const traffic = this.traffic();
    const row: HistoryRow = { step: event.step, loss: event.loss, lr: event.lr, tokens: event.tokens, elapsedS: this.elapsedS(), bytesUp: traffic.up, bytesDown: traffic.down };
    this.history.push(row);
    const every = this.o.evalEvery;
    if ((every !== undefined && event.step % every === 0) || event.step === this.totalSteps) await this.evaluateAt(event.step);
    this.writeCsv();
    if (event.step % this.o.checkpointEvery === 0 || event.step === this.totalSteps) this.checkpoint();
    return { row, event };
  }

  /** The held-out evaluation before the first step (not again when a resumed run has it). */
  async evaluateStart(): Promise<void> {
    if (this.trainer.step === 0 && await this.evaluateAt(0)) this.writeCsv();
  }

  /** One held-out evaluation after `step` steps, unless the run has it already; whether one was taken. */
  private async evaluateAt(step: number): Promise<boolean> {
    if (!this.evaluate || this.evals.some((e) => e.step === step)) return false;
    const row = await this.evaluate(step);
    this.evals.push(row);
    this.o.onEval?.(row);
    return true;
  }

  /** The evaluation after the last step, when every step is done. */
  get finalEval(): EvalRow | null {
    const last = this.evals[this.evals.length - 1];
    return last && last.step === this.totalSteps && this.trainer.step >= this.totalSteps ? last : null;
  }

  /** The CSV once more (a run resumed at its end has taken no step), and the adapter when every step is done. */
  finish(lora: LoraAdapter): { adapterDir: string | null } {
    this.writeCsv();
    if (this.trainer.step < this.totalSteps) return { adapterDir: null };
    const adapterDir = join(this.out, 'adapter');
    saveAdapterAtomic(adapterDir, lora.toTensors(), basename(resolve(this.o.model)));
    return { adapterDir };
  }

  private checkpoint(): void {
    const traffic = this.traffic();
    const dir = saveRunCheckpoint(this.out, { state: this.trainer.state(), fingerprint: this.fingerprint, history: this.history, evals: this.evals, elapsedS: this.elapsedS(), bytesUp: traffic.up, bytesDown: traffic.down });
    this.o.onCheckpoint?.(this.trainer.step, dir);
  }

  private writeCsv(): void {
    writeFileAtomic(this.csvPath, historyCsv(this.history, this.evals));
  }

  private elapsedS(): number {
    return this.elapsedBefore + (performance.now() - this.t0) / 1000;
  }

  private traffic(): Traffic {
    const now = this.products.traffic();
    return { up: this.trafficBefore.up + now.up, down: this.trafficBefore.down + now.down };
  }
}

/** Fine-tunes a LoRA adapter (see the top of this file); the run folder holds the outcome. */
export async function fineTune(o: FineTuneOptions): Promise<FineTuneResult> {
  checkFineTuneOptions(o);
  // Data first: a bad file should fail before any model is loaded or server contacted.
  const { train: records, heldOut } = trainAndHeldOut(o);
  const { config, tensors, tokenizer } = loadClient(o);
  const products = await openProducts(o, config, tensors);
  try {
    const model = LlamaModel.fromTensors(config, tensors, products.provider);
    const { lora, trainer, totalSteps } = prepareTrainer(o, model, records, tokenizer);
    const evaluate = heldOut ? heldOutEvaluator(model, lora, heldOut, tokenizer, o.batchTokens) : null;
    const run = new FineTuneRun(o, trainer, totalSteps, runFingerprint(o, records, heldOut, totalSteps, config), products, evaluate);
    run.resumeOrStart();
    o.onStart?.({ totalSteps, startStep: run.startStep });
    await run.evaluateStart();
    while (!run.stopped) {
      const { row, event } = await run.step();
      o.onStep?.(row, event);
    }
    const { adapterDir } = run.finish(lora);
    return { history: run.history, out: run.out, csvPath: run.csvPath, adapterDir, lora, model, tokenizer, config, totalSteps, startStep: run.startStep,
      evals: run.evals, finalEval: run.finalEval,
    };
  } finally {
    await products.close();
  }
}
