// Small model folders for the CLI tests and quick manual runs: random Llama weights in HF format
// plus a byte-level BPE tokenizer trained on a few WordNet glosses (no pretrained weights exist here).

import { writeModelFolder } from '../model/loader.js';
import { trainBpe, writeTokenizerFolder } from '../model/bpe-train.js';
import { llamaConfigJson, randomLlamaTensors, type RandomLlamaShape } from '../train/random-init.js';
import { glossPair, readWordnetGlosses } from '../train/wordnet.js';

export const TINY_SHAPE: RandomLlamaShape = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 300 };

/** Writes a random-weight model folder with a tokenizer; returns the glosses used for the tokenizer. */
export function writeTinyModelFolder(dir: string, shape: RandomLlamaShape = TINY_SHAPE, seed = 7): { prompt: string; completion: string }[] {
  const pairs = readWordnetGlosses(['verb']).slice(0, 400).map(glossPair);
  const corpus = pairs.map((p) => p.prompt + p.completion);
  const tok = trainBpe(corpus, { vocabSize: shape.vocabSize, specialTokens: ['<|endoftext|>'], eosToken: '<|endoftext|>' });
  writeTokenizerFolder(dir, tok);
  const cfg = llamaConfigJson(shape);
  cfg.eos_token_id = tok.specialIds.get('<|endoftext|>');
  writeModelFolder(dir, cfg, randomLlamaTensors(shape, seed, { embedStd: 0.1 }));
  return pairs;
}
