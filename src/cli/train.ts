// `helora train`: LoRA fine-tuning with the frozen products computed
//   encrypted  on a helora server over RLWE ciphertexts (RemoteEncryptedProvider),
//   quantized  locally with exactly the integers of the encrypted path (no encryption),
//   fp32       locally in fp32.
// The client reads from the model folder only what it computes itself (tokenizer, embeddings, norms,
// biases, LM head); in encrypted mode the projection weights are not even read.
//
// Determinism (what makes --resume equal an uninterrupted run): the LoRA init comes from --seed,
// the data order from --seed and the epoch (train/packing.ts epochBatchSource), the dropout masks
// from (--seed, step, micro-batch), and a checkpoint holds the LoRA values, the AdamW moments, the
// step and the data position. Only the HE noise differs between two encrypted runs.

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
import { loadTokenizer, type TextTokenizer } from '../model/tokenizer.js';
import { makeSchedule, type ScheduleOptions } from '../train/optim.js';
import { epochBatchSource, epochSeed, packExamples } from '../train/packing.js';
import { readTrainingFile, tokenizeRecords, type DataRecord } from '../train/data.js';
import { stepsForEpochs } from '../train/estimate.js';
import { Trainer } from '../train/trainer.js';
import { checkShapeMatches } from '../transport/model-info.js';
import { modelHashOfFolder } from '../transport/model-server.js';
import { RemoteEncryptedProvider, type RemoteStats } from '../transport/client.js';
import { Progress } from './progress.js';
import {
  historyCsv, listCheckpoints, loadRunCheckpoint, saveAdapterAtomic, saveRunCheckpoint, writeFileAtomic, writeLossPlot, type HistoryRow,
} from './run-files.js';

export type TrainMode = 'encrypted' | 'quantized' | 'fp32';
export const TRAIN_MODES: readonly TrainMode[] = ['encrypted', 'quantized', 'fp32'];

export interface TrainOptions {
  model: string;
  /** Training file (JSONL text, prompt/completion or chat messages, or plain text) or records in memory. */
  data: string | DataRecord[];
  out: string;
  mode: TrainMode;
  /** Server URL (encrypted mode). */
  server?: string;
  token?: string;
  expectHash?: string;
  /** PEM CA for a server with a self-signed certificate. */
  ca?: string;
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
  seed: number;
  resume: boolean;
  checkpointEvery: number;
  /** Progress bar / lines on stderr (default true). */
  progress?: boolean;
  /** Messages for the user (default: stderr). */
  say?: (line: string) => void;
  /** Label of the run in the progress output and the plot title. */
  label?: string;
  /** Called after every optimizer step (after the CSV is written). */
  onStep?: (row: HistoryRow) => void;
  /** Test hook: stop (without the final adapter) once this many steps are done, as a crash would. */
  stopAfter?: number;
  /** Server reconnect deadline (encrypted mode), ms. */
  retryDeadlineMs?: number;
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

export interface TrainResult {
  history: HistoryRow[];
  out: string;
  csvPath: string;
  pngPath: string;
  adapterDir: string | null;
  lora: LoraAdapter;
  model: LlamaModel;
  tokenizer: TextTokenizer;
  config: LlamaConfig;
  totalSteps: number;
  /** Step the run started from (0, or the checkpoint's step when resumed). */
  startStep: number;
  /** Server's model hash (encrypted mode) and how it was checked. */
  modelHash: string | null;
  hashCheck: 'expected' | 'local-folder' | 'unverified' | null;
  remote: RemoteStats | null;
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

export function checkTrainOptions(o: TrainOptions): void {
  const int = (name: string, v: number, min: number): void => {
    if (!Number.isSafeInteger(v) || v < min) throw new Error(`helora: ${name} must be an integer >= ${min}, got ${v}`);
  };
  if (!TRAIN_MODES.includes(o.mode)) throw new Error(`helora: --mode must be one of ${TRAIN_MODES.join(', ')}, got ${JSON.stringify(o.mode)}`);
  if (o.mode === 'encrypted' && !o.server) throw new Error('helora: encrypted mode needs --server URL (or use --mode quantized / fp32 to train locally)');
  if (o.mode !== 'encrypted' && o.server) throw new Error(`helora: --server is only used in encrypted mode, not with --mode ${o.mode}`);
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
  if (o.expectHash !== undefined && !/^[0-9a-f]{64}$/i.test(o.expectHash)) throw new Error('helora: --expect-hash must be 64 hex characters (the sha256 the server prints)');
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

export async function runTrain(o: TrainOptions): Promise<TrainResult> {
  checkTrainOptions(o);
  const say = o.say ?? ((l: string) => process.stderr.write(l + '\n'));
  const out = resolve(o.out);
  const label = o.label ?? o.mode;

  // Data first: a bad file should fail before any model is loaded or server contacted.
  const records = typeof o.data === 'string' ? readTrainingFile(o.data).records : o.data;
  const dataHash = sha256(JSON.stringify(records));

  // Model: in encrypted mode, without the projection weights.
  const local = o.mode !== 'encrypted';
  const { config, tensors } = loadClientModel(o.model, local);
  const tok = loadTokenizer(o.model);
  if (tok.vocabSize > config.vocabSize) throw new Error(`helora: the tokenizer has ${tok.vocabSize} tokens, more than the model's vocabulary of ${config.vocabSize}`);

  let provider: FrozenLinearProvider;
  let remote: RemoteEncryptedProvider | null = null;
  let modelHash: string | null = null;
  let hashCheck: TrainResult['hashCheck'] = null;
  if (o.mode === 'encrypted') {
    let expected = o.expectHash?.toLowerCase();
    hashCheck = expected ? 'expected' : 'unverified';
    if (!expected && folderHasProjections(o.model)) {
      expected = modelHashOfFolder(o.model);
      hashCheck = 'local-folder';
    }
    remote = await RemoteEncryptedProvider.connect({ url: o.server!, token: o.token, expectedModelHash: expected, ca: o.ca, retryDeadlineMs: o.retryDeadlineMs });
    modelHash = remote.info.hash;
    checkShapeMatches(remote.info, config);
    if (hashCheck === 'unverified') say(`helora: server model hash ${modelHash} (NOT verified: pass --expect-hash, or keep the projection weights in --model to check it)`);
    else say(`helora: server model hash ${modelHash} verified (${hashCheck === 'expected' ? '--expect-hash' : 'recomputed from the local model folder'})`);
    provider = remote;
  } else if (o.mode === 'quantized') {
    provider = LocalQuantizedProvider.fromTensors(config, tensors);
  } else {
    provider = LocalFp32Provider.fromTensors(config, tensors);
  }

  try {
    const model = LlamaModel.fromTensors(config, tensors, provider);
    const { examples, padId } = tokenizeForTraining(records, tok, config);
    const packOpts = { T: o.batchTokens, padId, seed: o.seed, vocabSize: config.vocabSize };
    const perEpoch = packExamples(examples, { ...packOpts, seed: epochSeed(o.seed, 0) }).batches.length;
    if (perEpoch === 0) throw new Error('helora: no training examples with a loss target left after packing');
    const totalSteps = o.steps ?? stepsForEpochs(o.epochs ?? 1, perEpoch, o.gradAccum);
    const source = epochBatchSource(examples, packOpts);

    const lora = LoraAdapter.create(config, { rank: o.rank, alpha: o.alpha, dropout: o.dropout, targetModules: o.targets }, { seed: `helora-lora-init:${o.seed}` });
    const trainer = new Trainer({
      model, lora, data: source, gradAccum: o.gradAccum, seed: o.seed,
      schedule: makeSchedule({ kind: o.schedule, lr: o.lr, warmupSteps: o.warmup, totalSteps }),
    });

    const fingerprint: Record<string, unknown> = {
      data_sha256: dataHash, seed: o.seed, batch_tokens: o.batchTokens, grad_accum: o.gradAccum, lr: o.lr, warmup: o.warmup,
      schedule: o.schedule, rank: o.rank, alpha: o.alpha, dropout: o.dropout, targets: [...o.targets], total_steps: totalSteps,
      model: { hidden: config.hiddenSize, layers: config.numLayers, vocab: config.vocabSize },
    };
    let history: HistoryRow[] = [];
    let elapsedBefore = 0;
    let bytesBefore = { up: 0, down: 0 };
    const existing = listCheckpoints(out);
    if (o.resume && existing.length > 0) {
      const last = existing[existing.length - 1]!;
      const ck = loadRunCheckpoint(last.dir);
      const diff = Object.keys(fingerprint).filter((k) => JSON.stringify(fingerprint[k]) !== JSON.stringify(ck.fingerprint[k]));
      if (diff.length > 0) throw new Error(`helora: cannot resume from ${last.dir}: these settings differ from the checkpoint's: ${diff.join(', ')}`);
      trainer.loadState(ck.state);
      history = ck.history.slice(0, ck.state.step);
      elapsedBefore = ck.elapsedS;
      bytesBefore = { up: ck.bytesUp, down: ck.bytesDown };
      say(`helora: resuming ${label} from step ${ck.state.step} of ${totalSteps} (${last.dir})`);
    } else if (o.resume) {
      say(`helora: no checkpoint in ${out}; starting from step 0`);
    } else if (existing.length > 0) {
      throw new Error(`helora: ${out} already holds checkpoints of a run: pass --resume to continue it, or choose another --out`);
    }
    const startStep = trainer.step;

    const csvPath = join(out, 'loss.csv');
    const pngPath = join(out, 'loss.png');
    const title = `${label} loss`;
    const progress = new Progress(totalSteps, startStep, { label, traffic: remote !== null, enabled: o.progress ?? true });
    const t0 = performance.now();
    const elapsed = (): number => elapsedBefore + (performance.now() - t0) / 1000;
    const bytes = (): { up: number; down: number } => {
      const s = remote?.stats();
      return { up: bytesBefore.up + (s?.bytesUp ?? 0), down: bytesBefore.down + (s?.bytesDown ?? 0) };
    };
    const checkpoint = (): void => {
      const b = bytes();
      saveRunCheckpoint(out, { state: trainer.state(), fingerprint, history, elapsedS: elapsed(), bytesUp: b.up, bytesDown: b.down });
    };
    try {
      while (trainer.step < totalSteps) {
        if (o.stopAfter !== undefined && trainer.step >= o.stopAfter) break;
        const ev = await trainer.trainStep();
        const b = bytes();
        const row: HistoryRow = { step: ev.step, loss: ev.loss, lr: ev.lr, tokens: ev.tokens, elapsedS: elapsed(), bytesUp: b.up, bytesDown: b.down };
        history.push(row);
        writeFileAtomic(csvPath, historyCsv(history));
        if (ev.step % o.checkpointEvery === 0 || ev.step === totalSteps) checkpoint();
        progress.update({ step: ev.step, loss: ev.loss, tokensPerSec: ev.tokensPerSec, bytesUp: b.up, bytesDown: b.down });
        o.onStep?.(row);
      }
    } finally {
      progress.stop();
    }
    writeFileAtomic(csvPath, historyCsv(history));
    writeLossPlot(pngPath, [{ name: label, points: history.map((r) => [r.step, r.loss]) }], title);
    let adapterDir: string | null = null;
    if (trainer.step >= totalSteps) {
      adapterDir = join(out, 'adapter');
      saveAdapterAtomic(adapterDir, lora.toTensors(), basename(resolve(o.model)));
    }
    return {
      history, out, csvPath, pngPath, adapterDir, lora, model, tokenizer: tok, config, totalSteps, startStep,
      modelHash, hashCheck, remote: remote?.stats() ?? null,
    };
  } finally {
    await remote?.close();
  }
}
