// A small byte-level BPE trainer (GPT-2 / Llama-3 style) that emits a Hugging Face
// tokenizer.json. Ids: 0..255 are the single bytes (id = byte value), then one id per merge in
// merge order (so id = tiktoken rank), then the special tokens.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Llama-3 / cl100k pre-tokenizer split pattern, with the case-insensitive contractions spelled out
 * so that JavaScript RegExp, Oniguruma (Rust tokenizers) and tokenizers.js all read it the same way. */
export const LLAMA3_SPLIT_PATTERN =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Ids are packed two to a pair key (a * PAIR_BASE + b), so the vocabulary must stay below this. */
const PAIR_BASE = 1 << 17;

export interface BpeTrainOptions {
  /** Total vocabulary size, specials included. */
  vocabSize: number;
  /** Added as special tokens after the learned tokens. Default ['<|endoftext|>']. */
  specialTokens?: string[];
  /** Pre-tokenizer regex (JavaScript syntax with the u flag). Default LLAMA3_SPLIT_PATTERN. */
  pattern?: string;
  /** Pairs seen fewer times than this are not merged (default 2). */
  minFrequency?: number;
  /** Special token prepended by encode() when special tokens are requested (null: none). */
  bosToken?: string | null;
  /** Special token recorded as eos in tokenizer_config.json (default: the first special token). */
  eosToken?: string | null;
}

export interface TrainedTokenizer {
  /** tokenizer.json content */
  tokenizer: Record<string, unknown>;
  /** tokenizer_config.json content */
  config: Record<string, unknown>;
  /** Byte strings of the learned tokens: index = id = tiktoken rank (specials excluded). */
  tokenBytes: Uint8Array[];
  /** Special token -> id. */
  specialIds: Map<string, number>;
  pattern: string;
}

/** GPT-2's reversible byte -> printable character map used by ByteLevel pre-tokenizers. */
export function bytesToUnicode(): string[] {
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    map[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return map;
}

// Max-heap of (count, pair key); ties go to the smaller pair key so training is deterministic.
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];
  get size(): number { return this.keys.length; }
  private above(i: number, j: number): boolean {
    return this.counts[i] > this.counts[j] || (this.counts[i] === this.counts[j] && this.keys[i] < this.keys[j]);
  }
  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j], this.counts[i]];
    [this.keys[i], this.keys[j]] = [this.keys[j], this.keys[i]];
  }
  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.keys.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): [number, number] {
    const top: [number, number] = [this.counts[0], this.keys[0]];
    const lastC = this.counts.pop()!;
    const lastK = this.keys.pop()!;
    if (this.keys.length > 0) {
      this.counts[0] = lastC;
      this.keys[0] = lastK;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < this.keys.length && this.above(l, best)) best = l;
        if (r < this.keys.length && this.above(r, best)) best = r;
        if (best === i) break;
        this.swap(i, best);
        i = best;
      }
    }
    return top;
  }
}

/** Train byte-level BPE on `corpus` (one string or many documents). */
export function trainBpe(corpus: string | string[], opts: BpeTrainOptions): TrainedTokenizer {
  const specials = opts.specialTokens ?? ['<|endoftext|>'];
  const pattern = opts.pattern ?? LLAMA3_SPLIT_PATTERN;
  const minFrequency = opts.minFrequency ?? 2;
  if (new Set(specials).size !== specials.length || specials.some((s) => s.length === 0)) throw new Error('helora: special tokens must be distinct non-empty strings');
  if (!Number.isSafeInteger(opts.vocabSize) || opts.vocabSize < 256 + specials.length || opts.vocabSize > PAIR_BASE) {
    throw new Error(`helora: vocabSize must be an integer in [${256 + specials.length}, ${PAIR_BASE}], got ${opts.vocabSize}`);
  }
  const bos = opts.bosToken ?? null;
  const eos = opts.eosToken === undefined ? (specials[0] ?? null) : opts.eosToken;
  for (const t of [bos, eos]) if (t !== null && !specials.includes(t)) throw new Error(`helora: ${JSON.stringify(t)} must be one of the special tokens`);
  const numLearned = opts.vocabSize - specials.length;

  // 1. Pre-tokenize and count distinct words.
  const re = new RegExp(pattern, 'gu');
  const wordCounts = new Map<string, number>();
  const docs = typeof corpus === 'string' ? [corpus] : corpus;
  for (const doc of docs) {
    // Special tokens in the corpus are document separators, never learned from.
    const pieces = specials.length > 0 ? doc.split(new RegExp(specials.map(escapeRegex).join('|'), 'g')) : [doc];
    for (const piece of pieces) {
      for (const m of piece.matchAll(re)) wordCounts.set(m[0], (wordCounts.get(m[0]) ?? 0) + 1);
    }
  }
  const enc = new TextEncoder();
  const words: number[][] = [];
  const counts: number[] = [];
  for (const [w, c] of wordCounts) {
    words.push(Array.from(enc.encode(w)));
    counts.push(c);
  }

  // 2. Pair statistics: total count and the words that (may) contain each pair.
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPairs = (wi: number, sign: number): void => {
    const w = words[wi];
    const c = counts[wi] * sign;
    for (let i = 0; i + 1 < w.length; i++) {
      const key = w[i] * PAIR_BASE + w[i + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + c);
      if (sign > 0) {
        let s = pairWords.get(key);
        if (!s) pairWords.set(key, (s = new Set()));
        s.add(wi);
      }
    }
  };
  for (let wi = 0; wi < words.length; wi++) addPairs(wi, 1);
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push(c, key);

  // 3. Merge the most frequent pair until the vocabulary is full.
  const tokenBytes: Uint8Array[] = [];
  for (let b = 0; b < 256; b++) tokenBytes.push(Uint8Array.of(b));
  const idOfBytes = new Map<string, number>();
  for (let b = 0; b < 256; b++) idOfBytes.set(String(b), b);
  const merges: Array<[number, number]> = [];
  while (tokenBytes.length < numLearned && heap.size > 0) {
    const [c, key] = heap.pop();
    const actual = pairCount.get(key) ?? 0;
    if (c !== actual) {
      // Stale entry: counts of existing pairs only go down, so re-queue with the true count.
      if (actual > 0) heap.push(actual, key);
      continue;
    }
    if (actual < minFrequency) break;
    const a = Math.floor(key / PAIR_BASE);
    const b = key % PAIR_BASE;
    const bytes = concat(tokenBytes[a], tokenBytes[b]);
    const bytesKey = bytes.join(',');
    let id = idOfBytes.get(bytesKey);
    if (id === undefined) {
      id = tokenBytes.length;
      tokenBytes.push(bytes);
      idOfBytes.set(bytesKey, id);
    }
    merges.push([a, b]);
    const affected = pairWords.get(key);
    pairWords.delete(key);
    if (!affected) continue;
    const touched = new Set<number>();
    for (const wi of affected) {
      const w = words[wi];
      let found = false;
      for (let i = 0; i + 1 < w.length; i++) if (w[i] === a && w[i + 1] === b) { found = true; break; }
      if (!found) continue;
      addPairs(wi, -1);
      const out: number[] = [];
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === a && w[i + 1] === b) { out.push(id); i++; } else out.push(w[i]);
      }
      words[wi] = out;
      addPairs(wi, 1);
      for (let i = 0; i + 1 < out.length; i++) if (out[i] === id || out[i + 1] === id) touched.add(out[i] * PAIR_BASE + out[i + 1]);
    }
    pairCount.delete(key);
    for (const k of touched) {
      const n = pairCount.get(k) ?? 0;
      if (n > 0) heap.push(n, k);
    }
  }

  // 4. Hugging Face tokenizer.json.
  const b2u = bytesToUnicode();
  const tokStr = (bytes: Uint8Array): string => Array.from(bytes, (x) => b2u[x]).join('');
  const vocab: Record<string, number> = {};
  tokenBytes.forEach((bytes, id) => { vocab[tokStr(bytes)] = id; });
  const specialIds = new Map<string, number>();
  specials.forEach((s, i) => specialIds.set(s, tokenBytes.length + i));
  const addedTokens = specials.map((s) => ({ id: specialIds.get(s)!, content: s, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  let postProcessor: unknown = null;
  if (bos !== null) {
    const bosId = specialIds.get(bos)!;
    postProcessor = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
    };
  }
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: postProcessor,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      // A whole pre-token that is in the vocabulary is emitted as is (as tiktoken and Llama 3 do).
      ignore_merges: true,
      vocab,
      merges: merges.map(([a, b]) => [tokStr(tokenBytes[a]), tokStr(tokenBytes[b])]),
    },
  };
  const config: Record<string, unknown> = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    model_max_length: 1_000_000_000,
    clean_up_tokenization_spaces: false,
    bos_token: bos,
    eos_token: eos,
    add_bos_token: bos !== null,
  };
  return { tokenizer, config, tokenBytes, specialIds, pattern };
}

/** Write tokenizer.json and tokenizer_config.json into `dir`. */
export function writeTokenizerFolder(dir: string, trained: TrainedTokenizer): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(trained.tokenizer));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(trained.config, null, 2) + '\n');
}

function concat(x: Uint8Array, y: Uint8Array): Uint8Array {
  const out = new Uint8Array(x.length + y.length);
  out.set(x, 0);
  out.set(y, x.length);
  return out;
}

function escapeRegex(s: string): string {
  return s.replace(/[\\^$*+?.()|[\]{}]/g, '\\$&');
}
