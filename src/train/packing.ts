/**
 * Packing tokenized examples into fixed-size micro-batches of T tokens.
 *
 * Several examples share one micro-batch; each keeps its own sequence id (attention stays inside
 * it) and its own positions (restarting at 0), so packing changes no example's loss. This is
 * also what fills the N token slots of one RLWE ciphertext on the encrypted path.
 */

import { IGNORE_INDEX } from '../model/layers.js';
import { seededRandom } from '../util/random.js';

export { seededRandom };

/** Same shape as `Batch` in src/model/llama.ts (structurally compatible). */
export interface PackedBatch {
  T: number;
  tokens: Int32Array;
  /** Next-token id to predict at each position, or IGNORE_INDEX. */
  targets: Int32Array;
  /** Position inside its own sequence (0 at the first token of every sequence). */
  positions: Int32Array;
  /** Attention only between tokens with equal seq id; distinct per packed sequence and for padding. */
  seqIds: Int32Array;
}

export interface Example {
  ids: number[];
  /**
   * Per token: false = the model is not trained to predict this token (e.g. prompt tokens).
   * Absent = every token after the first is predicted.
   */
  lossMask?: boolean[];
}

export interface PackOptions {
  /** Tokens per micro-batch. */
  T: number;
  /** Token id written into padding slots (never predicted, never attended to by real tokens). */
  padId: number;
  /** Shuffle seed; the same seed gives the same batches. Omit to keep the input order. */
  seed?: number;
  /** Vocabulary size, to reject out-of-range ids early (optional). */
  vocabSize?: number;
}

export interface PackStats {
  batches: number;
  /** Sequences placed (examples, or chunks of split examples). */
  sequences: number;
  /** Examples that were longer than T and split into chunks. */
  splitExamples: number;
  /** Examples (or chunks) dropped because they carry no loss target at all. */
  droppedNoTarget: number;
  /** Real (non-padding) tokens and tokens with a loss target. */
  tokens: number;
  lossTokens: number;
  /** Padding slots over all batches. */
  padTokens: number;
}

/** Open batches that first-fit tries before it starts a new one (bounds the work per sequence). */
export const FIRST_FIT_WINDOW = 64;

/** One sequence ready to place: tokens and their targets (already masked). */
interface Seq {
  tokens: number[];
  targets: number[];
}


/** Fisher-Yates shuffle in place with a seeded PRNG. */
export function shuffleInPlace<X>(arr: X[], seed: number): X[] {
  const rnd = seededRandom(seed);
  for (let i = arr.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    const tmp = arr[i]!;
    arr[i] = arr[j]!;
    arr[j] = tmp;
  }
  return arr;
}

function checkOptions(o: PackOptions): void {
  if (!Number.isInteger(o.T) || o.T < 2) throw new Error(`helora: micro-batch size T must be an integer >= 2, got ${o.T}`);
  if (!Number.isInteger(o.padId) || o.padId < 0) throw new Error(`helora: pad id must be a non-negative integer, got ${o.padId}`);
  if (o.vocabSize !== undefined && o.padId >= o.vocabSize) throw new Error(`helora: pad id ${o.padId} is outside the vocabulary (${o.vocabSize})`);
  if (o.seed !== undefined && !Number.isInteger(o.seed)) throw new Error(`helora: shuffle seed must be an integer, got ${o.seed}`);
}

/**
 * Targets of one example: target[i] = ids[i+1] when token i+1 is trained on, else IGNORE_INDEX.
 * The last token has nothing to predict.
 */
export function exampleTargets(ex: Example, index = 0, vocabSize?: number): number[] {
  const { ids, lossMask } = ex;
  if (lossMask && lossMask.length !== ids.length) {
    throw new Error(`helora: example ${index} has ${ids.length} tokens but a loss mask of ${lossMask.length}`);
  }
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || (vocabSize !== undefined && id >= vocabSize)) {
      throw new Error(`helora: example ${index} token ${i} is ${id}, expected an integer id in [0, ${vocabSize ?? '2^31'})`);
    }
  }
  const targets = new Array<number>(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const next = i + 1;
    targets[i] = next < ids.length && (!lossMask || lossMask[next]) ? ids[next]! : IGNORE_INDEX;
  }
  return targets;
}

/**
 * Split an example into sequences of at most T tokens. A chunk's last token keeps the true next
 * token (the first of the next chunk) as its target, so no prediction is lost; the context does
 * not cross chunks. Chunks without any target are dropped.
 */
function toSequences(ex: Example, index: number, o: PackOptions, stats: PackStats): Seq[] {
  const targets = exampleTargets(ex, index, o.vocabSize);
  const out: Seq[] = [];
  if (ex.ids.length > o.T) stats.splitExamples++;
  for (let start = 0; start < ex.ids.length; start += o.T) {
    const end = Math.min(ex.ids.length, start + o.T);
    const t = targets.slice(start, end);
    if (!t.some((x) => x !== IGNORE_INDEX)) {
      stats.droppedNoTarget++;
      continue;
    }
    out.push({ tokens: ex.ids.slice(start, end), targets: t });
  }
  return out;
}

/**
 * Pack examples into micro-batches of exactly T tokens. Order: split into sequences, shuffle
 * them (when a seed is given), then first-fit over the most recent open batches. Leftover space
 * is padding: pad id, target IGNORE_INDEX, its own sequence id.
 */
export function packExamples(examples: readonly Example[], o: PackOptions): { batches: PackedBatch[]; stats: PackStats } {
  checkOptions(o);
  const stats: PackStats = { batches: 0, sequences: 0, splitExamples: 0, droppedNoTarget: 0, tokens: 0, lossTokens: 0, padTokens: 0 };
  const seqs: Seq[] = [];
  examples.forEach((ex, i) => {
    for (const s of toSequences(ex, i, o, stats)) seqs.push(s);
  });
  if (o.seed !== undefined) shuffleInPlace(seqs, o.seed);

  // Each open batch: its sequences and how many slots are used.
  const bins: { seqs: Seq[]; used: number }[] = [];
  let firstOpen = 0;
  for (const s of seqs) {
    let placed = false;
    for (let b = Math.max(firstOpen, bins.length - FIRST_FIT_WINDOW); b < bins.length; b++) {
      const bin = bins[b]!;
      if (bin.used + s.tokens.length <= o.T) {
        bin.seqs.push(s);
        bin.used += s.tokens.length;
        placed = true;
        break;
      }
    }
    if (!placed) bins.push({ seqs: [s], used: s.tokens.length });
    while (firstOpen < bins.length && bins[firstOpen]!.used === o.T) firstOpen++;
  }

  const batches = bins.map((bin) => {
    const tokens = new Int32Array(o.T);
    const targets = new Int32Array(o.T);
    const positions = new Int32Array(o.T);
    const seqIds = new Int32Array(o.T);
    let off = 0;
    bin.seqs.forEach((s, k) => {
      for (let i = 0; i < s.tokens.length; i++) {
        tokens[off + i] = s.tokens[i]!;
        targets[off + i] = s.targets[i]!;
        positions[off + i] = i;
        seqIds[off + i] = k;
        if (s.targets[i] !== IGNORE_INDEX) stats.lossTokens++;
      }
      off += s.tokens.length;
      stats.sequences++;
      stats.tokens += s.tokens.length;
    });
    const padSeq = bin.seqs.length;
    for (let i = off; i < o.T; i++) {
      tokens[i] = o.padId;
      targets[i] = IGNORE_INDEX;
      positions[i] = i - off;
      seqIds[i] = padSeq;
    }
    stats.padTokens += o.T - off;
    return { T: o.T, tokens, targets, positions, seqIds };
  });
  stats.batches = batches.length;
  return { batches, stats };
}

/** Number of positions with a loss target in a batch. */
export function countLossTokens(b: PackedBatch): number {
  let n = 0;
  for (let i = 0; i < b.T; i++) if (b.targets[i] !== IGNORE_INDEX) n++;
  return n;
}

/** Supplies micro-batches to the trainer, one after another, without end. */
export interface BatchSource {
  next(): PackedBatch;
  /** Where the source stands (for checkpoints). */
  position(): { epoch: number; index: number };
  /** Jump to a saved position. */
  seek(pos: { epoch: number; index: number }): void;
}

/** Derive the shuffle seed of an epoch from the base seed (odd multiplier, wraps to 32 bits). */
export function epochSeed(seed: number, epoch: number): number {
  return (Math.imul(epoch + 1, 0x9e3779b1) ^ seed) >>> 0;
}

/**
 * Cycle over the examples forever, repacking with a fresh seeded shuffle every epoch, so epoch
 * e always yields the same batches for the same seed.
 */
export function epochBatchSource(examples: readonly Example[], o: PackOptions & { seed: number }): BatchSource {
  let epoch = 0;
  let index = 0;
  let cur = packExamples(examples, { ...o, seed: epochSeed(o.seed, 0) }).batches;
  if (cur.length === 0) throw new Error('helora: no training examples with a loss target left after packing');
  const load = (e: number): void => {
    epoch = e;
    cur = packExamples(examples, { ...o, seed: epochSeed(o.seed, e) }).batches;
  };
  return {
    next(): PackedBatch {
      if (index >= cur.length) {
        load(epoch + 1);
        index = 0;
      }
      return cur[index++]!;
    },
    position: () => ({ epoch, index }),
    seek(pos): void {
      if (!Number.isInteger(pos.epoch) || pos.epoch < 0 || !Number.isInteger(pos.index) || pos.index < 0) {
        throw new Error(`helora: bad data position ${JSON.stringify(pos)}`);
      }
      if (pos.epoch !== epoch) load(pos.epoch);
      if (pos.index > cur.length) throw new Error(`helora: data position ${pos.index} is past the ${cur.length} batches of epoch ${pos.epoch}`);
      index = pos.index;
    },
  };
}
