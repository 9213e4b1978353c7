// Small model folders for the CLI tests and quick manual runs: random Llama weights in HF format
// plus a byte-level BPE tokenizer trained on a few WordNet glosses (no pretrained weights exist here).

import { writeModelFolder } from '../model/loader.js';
import { trainBpe, writeTokenizerFolder } from '../model/bpe-train.js';
import type { RandomLlamaShape } from '../train/random-init.js';
import { TINY_SHAPE, tinyModel } from '../train/test-fixtures.js';
import { glossPair, readWordnetGlosses } from '../train/wordnet.js';

export { TINY_SHAPE };

/** Writes a random-weight model folder with a tokenizer; returns the glosses used for the tokenizer. */
export function writeTinyModelFolder(dir: string, shape: RandomLlamaShape = TINY_SHAPE, seed = 7): { prompt: string; completion: string }[] {
  const pairs = readWordnetGlosses(['verb']).slice(0, 400).map(glossPair);
  const corpus = pairs.map((p) => p.prompt + p.completion);
  const tok = trainBpe(corpus, { vocabSize: shape.vocabSize, specialTokens: ['<|endoftext|>'], eosToken: '<|endoftext|>' });
  writeTokenizerFolder(dir, tok);
  const { configJson, tensors } = tinyModel(shape, seed);
  configJson.eos_token_id = tok.specialIds.get('<|endoftext|>');
  writeModelFolder(dir, configJson, tensors);
  return pairs;
}
