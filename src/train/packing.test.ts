import { IGNORE_INDEX as IG } from '../model/layers.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { countLossTokens, epochBatchSource, epochSeed, packExamples, type Example, type PackedBatch } from './packing.js';

const PAD = 0;

/** Split a batch into its sequences (runs of equal seq id), checking ids are contiguous runs. */
function sequencesOf(b: PackedBatch): { tokens: number[]; targets: number[]; positions: number[] }[] {
  const out: { tokens: number[]; targets: number[]; positions: number[] }[] = [];
  const seen = new Set<number>();
  for (let i = 0; i < b.T; i++) {
    if (i === 0 || b.seqIds[i] !== b.seqIds[i - 1]) {
      assert.ok(!seen.has(b.seqIds[i]!), 'a sequence id appears in two separate runs');
      seen.add(b.seqIds[i]!);
      out.push({ tokens: [], targets: [], positions: [] });
    }
    const s = out[out.length - 1]!;
    s.tokens.push(b.tokens[i]!);
    s.targets.push(b.targets[i]!);
    s.positions.push(b.positions[i]!);
  }
  return out;
}

test('two short examples share one batch; padding gets its own sequence id', () => {
  const { batches, stats } = packExamples([{ ids: [5, 6, 7] }, { ids: [8, 9] }], { T: 8, padId: PAD });
  assert.equal(batches.length, 1);
  const b = batches[0]!;
  assert.deepEqual(Array.from(b.tokens), [5, 6, 7, 8, 9, PAD, PAD, PAD]);
  assert.deepEqual(Array.from(b.targets), [6, 7, IG, 9, IG, IG, IG, IG]);
  assert.deepEqual(Array.from(b.positions), [0, 1, 2, 0, 1, 0, 1, 2]);
  const ids = Array.from(b.seqIds);
  assert.equal(ids[0], ids[2]);
  assert.equal(ids[3], ids[4]);
  assert.notEqual(ids[0], ids[3]);
  assert.equal(new Set(ids.slice(5)).size, 1);
  assert.ok(!ids.slice(0, 5).includes(ids[5]!), 'padding shares a sequence id with real tokens');
  assert.deepEqual(stats, { batches: 1, sequences: 2, splitExamples: 0, droppedNoTarget: 0, tokens: 5, lossTokens: 3, padTokens: 3 });
  assert.equal(countLossTokens(b), 3);
});

test('prompt/completion masking: loss only on completion tokens', () => {
  // prompt = [11, 12, 13], completion = [21, 22]
  const ex: Example = { ids: [11, 12, 13, 21, 22], lossMask: [false, false, false, true, true] };
  const b = packExamples([ex], { T: 5, padId: PAD }).batches[0]!;
  // The last prompt token predicts the first completion token; prompt tokens are never targets.
  assert.deepEqual(Array.from(b.targets), [IG, IG, 21, 22, IG]);
  assert.deepEqual(Array.from(b.positions), [0, 1, 2, 3, 4]);
  // A mask with a hole in the middle: only the unmasked token is a target.
  const b2 = packExamples([{ ids: [1, 2, 3, 4], lossMask: [true, true, false, true] }], { T: 4, padId: PAD }).batches[0]!;
  assert.deepEqual(Array.from(b2.targets), [2, IG, 4, IG]);
});

test('long examples are split into chunks of <= T that keep the next token as target', () => {
  const ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const { batches, stats } = packExamples([{ ids }], { T: 4, padId: PAD });
  assert.equal(stats.splitExamples, 1);
  const seqs = batches.flatMap(sequencesOf).filter((s) => s.tokens.some((t) => t !== PAD));
  assert.deepEqual(seqs.map((s) => s.tokens), [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]);
  assert.deepEqual(seqs.map((s) => s.targets), [[2, 3, 4, 5], [6, 7, 8, 9], [10, IG]]);
  for (const s of seqs) assert.deepEqual(s.positions, s.tokens.map((_, i) => i));
  // A final chunk holding only the last token has nothing to predict and is dropped.
  const r = packExamples([{ ids: ids.slice(0, 9) }], { T: 4, padId: PAD });
  assert.equal(r.stats.droppedNoTarget, 1);
  assert.equal(r.stats.tokens, 8);
  assert.equal(r.stats.lossTokens, 8);
  // An example without any target (fully masked) is dropped too.
  assert.equal(packExamples([{ ids: [1, 2, 3], lossMask: [true, false, false] }], { T: 4, padId: PAD }).batches.length, 0);
});

function randomExamples(n: number, maxLen: number): Example[] {
  return Array.from({ length: n }, (_, k) => {
    const len = 1 + Math.floor(Math.random() * maxLen);
    const ids = Array.from({ length: len }, () => 1 + Math.floor(Math.random() * 500));
    ids[0] = 1000 + k; // make every example recognisable
    const promptLen = Math.floor(Math.random() * len);
    return Math.random() < 0.5 ? { ids } : { ids, lossMask: ids.map((_, i) => i >= promptLen) };
  });
}

test('random examples: every chunk appears exactly once, intact, with correct targets and positions', () => {
  const T = 32;
  const examples = randomExamples(200, 80);
  const { batches, stats } = packExamples(examples, { T, padId: PAD, seed: 7 });
  // Expected chunks, computed directly from the definition.
  const expected: string[] = [];
  for (const ex of examples) {
    const tg = ex.ids.map((_, i) => (i + 1 < ex.ids.length && (!ex.lossMask || ex.lossMask[i + 1]) ? ex.ids[i + 1]! : IG));
    for (let s = 0; s < ex.ids.length; s += T) {
      const t = tg.slice(s, s + T);
      if (t.some((x) => x !== IG)) expected.push(JSON.stringify([ex.ids.slice(s, s + T), t]));
    }
  }
  const got: string[] = [];
  let pad = 0;
  for (const b of batches) {
    assert.equal(b.T, T);
    for (const arr of [b.tokens, b.targets, b.positions, b.seqIds]) assert.equal(arr.length, T);
    for (const s of sequencesOf(b)) {
      assert.deepEqual(s.positions, s.tokens.map((_, i) => i));
      if (s.targets.every((x) => x === IG) && s.tokens.every((x) => x === PAD)) pad += s.tokens.length;
      else got.push(JSON.stringify([s.tokens, s.targets]));
    }
  }
  assert.deepEqual(got.slice().sort(), expected.slice().sort());
  assert.equal(pad, stats.padTokens);
  assert.equal(stats.tokens + stats.padTokens, batches.length * T);
  // First-fit keeps padding low with these lengths.
  assert.ok(stats.padTokens < 0.1 * batches.length * T, `too much padding: ${stats.padTokens} of ${batches.length * T}`);
});

test('shuffling is deterministic in the seed and changes with it', () => {
  const examples = randomExamples(60, 20);
  examples[0] = { ids: [1000, 1, 2, 3, 4] }; // long enough to have a target: a 1-token example would be dropped
  const key = (bs: PackedBatch[]): string => JSON.stringify(bs.map((b) => Array.from(b.tokens)));
  const a = packExamples(examples, { T: 64, padId: PAD, seed: 1 }).batches;
  const b = packExamples(examples, { T: 64, padId: PAD, seed: 1 }).batches;
  const c = packExamples(examples, { T: 64, padId: PAD, seed: 2 }).batches;
  const unshuffled = packExamples(examples, { T: 64, padId: PAD }).batches;
  assert.equal(key(a), key(b));
  assert.notEqual(key(a), key(c));
  assert.notEqual(key(a), key(unshuffled));
  // Without a seed the input order is kept: the first example opens the first batch.
  assert.equal(unshuffled[0]!.tokens[0], examples[0]!.ids[0]);
});

test('epochBatchSource cycles epochs with fresh shuffles and seeks back exactly', () => {
  const examples = randomExamples(40, 20);
  const opts = { T: 64, padId: PAD, seed: 3 };
  const toks = (b: PackedBatch): string => Array.from(b.tokens).join(',');
  const perEpoch = [0, 1].map((e) => packExamples(examples, { ...opts, seed: epochSeed(opts.seed, e) }).batches.map(toks));
  const src = epochBatchSource(examples, opts);
  const n0 = perEpoch[0]!.length;
  const n1 = perEpoch[1]!.length;
  const seen: string[] = [];
  for (let i = 0; i < n0 + n1 + 3; i++) seen.push(toks(src.next()));
  assert.deepEqual(src.position(), { epoch: 2, index: 3 });
  assert.deepEqual(seen.slice(0, n0), perEpoch[0]);
  assert.deepEqual(seen.slice(n0, n0 + n1), perEpoch[1]);
  assert.notDeepEqual(perEpoch[0], perEpoch[1], 'epochs should be shuffled differently');
  // Every epoch holds all the data: the same multiset of real tokens.
  const multiset = (bs: string[]): string => bs.flatMap((b) => b.split(',').filter((t) => t !== String(PAD))).sort().join(',');
  assert.equal(multiset(perEpoch[0]!), multiset(perEpoch[1]!));
  const again = epochBatchSource(examples, opts);
  again.seek({ epoch: 1, index: 2 });
  assert.equal(toks(again.next()), perEpoch[1]![2]);
  assert.throws(() => again.seek({ epoch: 0, index: n0 + 1 }), /past the/);
  assert.throws(() => epochBatchSource([{ ids: [1] }], opts), /no training examples/);
});

test('invalid input is rejected with clear errors', () => {
  assert.throws(() => packExamples([{ ids: [1, 2], lossMask: [true] }], { T: 4, padId: PAD }), /example 0 has 2 tokens but a loss mask of 1/);
  assert.throws(() => packExamples([{ ids: [1, 2] }, { ids: [1, -3] }], { T: 4, padId: PAD }), /example 1 token 1 is -3/);
  assert.throws(() => packExamples([{ ids: [1, 99] }], { T: 4, padId: PAD, vocabSize: 50 }), /token 1 is 99/);
  assert.throws(() => packExamples([], { T: 1, padId: PAD }), /T must be an integer >= 2/);
  assert.throws(() => packExamples([], { T: 4, padId: 60, vocabSize: 50 }), /pad id 60 is outside/);
});
