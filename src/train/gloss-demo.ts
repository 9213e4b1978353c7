// The demo's fine-tuning run: the shipped small model (models/helora-tiny) on short WordNet glosses
// ("word: X\ndefinition:" -> " ..."), with the same seed, data order and settings in every mode.
// `helora demo` runs it in each mode; bench:train reports its encrypted and fp32 final losses.

import { join } from 'node:path';
import { repoRoot } from '../util/paths.js';
import type { DataRecord } from './data.js';
import { TRAIN_DEFAULTS, type FineTuneOptions, type TrainMode } from './fine-tune.js';
import { shuffleInPlace } from './packing.js';
import { glossPair, readWordnetGlosses, type Gloss } from './wordnet.js';

/** Sized so the three runs finish well under 10 minutes on 2 cores (measured: see the README). */
export const DEMO_DEFAULTS = {
  model: join(repoRoot(), 'models', 'helora-tiny'),
  steps: 40,
  batchTokens: 2048,
  examples: 1500,
  /** Glosses held out for evaluation (taken after the training ones: the training data is unchanged). */
  heldOut: 100,
  evalEvery: 10,
  lr: 3e-3,
  rank: 8,
  seed: 1,
  modes: ['encrypted', 'quantized', 'fp32'] as TrainMode[],
};

/** What a demo run may change from the defaults. */
export interface DemoRunSettings {
  model: string;
  steps: number;
  batchTokens: number;
  lr: number;
  rank: number;
  seed: number;
}

/** Longest definition kept (characters): short glosses pack densely and are learnable in a few steps. */
const MAX_DEFINITION_CHARS = 90;

/** Every short gloss, one per word, in the seed's shuffled order. */
function shuffledGlosses(seed: number): Gloss[] {
  const all = readWordnetGlosses().filter((g) => g.definition.length <= MAX_DEFINITION_CHARS && !g.word.includes(' '));
  // One gloss per word (the first sense), so the prompt determines the completion.
  const seen = new Set<string>();
  const unique = all.filter((g) => (seen.has(g.word) ? false : (seen.add(g.word), true)));
  return shuffleInPlace(unique, seed);
}

/** A deterministic sample of short WordNet glosses. */
export function demoGlosses(n: number, seed: number): Gloss[] {
  return shuffledGlosses(seed).slice(0, n);
}

/** The k glosses after the n training ones in the same order: held out (other words), the training sample unchanged. */
export function demoHeldOutGlosses(n: number, k: number, seed: number): Gloss[] {
  return shuffledGlosses(seed).slice(n, n + k);
}

/** The glosses as prompt/completion training records. */
export function glossRecords(glosses: readonly Gloss[]): DataRecord[] {
  return glosses.map((g) => ({ kind: 'pair', ...glossPair(g) }));
}

/** fineTune options of the demo run in one mode (the encrypted mode still needs connectEncrypted). */
export function demoRunOptions(s: DemoRunSettings, mode: TrainMode, records: DataRecord[], out: string, heldOut?: DataRecord[]): FineTuneOptions {
  return {
    ...(heldOut && heldOut.length > 0 ? { evalData: heldOut, evalEvery: DEMO_DEFAULTS.evalEvery } : {}),
    ...TRAIN_DEFAULTS,
    model: s.model, data: records, out, mode, steps: s.steps, batchTokens: s.batchTokens, lr: s.lr, rank: s.rank, alpha: 2 * s.rank,
    warmup: Math.min(3, s.steps - 1), seed: s.seed, resume: false, checkpointEvery: s.steps, label: mode,
  };
}
