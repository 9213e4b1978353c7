// The tiny random Llama model the tests of every layer above share (CLI, transport): one shape and
// one seeded weight generator, so all of them test the same model.

import { writeModelFolder } from '../model/loader.js';
import { trainBpe, writeTokenizerFolder } from '../model/bpe-train.js';
import { glossPair, readWordnetGlosses } from './wordnet.js';
import { llamaConfigJson, randomLlamaTensors, type RandomLlamaShape } from './random-init.js';

export const TINY_SHAPE: RandomLlamaShape = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 300 };

/** config.json and tensors of a seeded random model of this shape (embeddings larger than 0.02, like trained ones). */
export function tinyModel(shape: RandomLlamaShape = TINY_SHAPE, seed = 7): { configJson: Record<string, unknown>; tensors: ReturnType<typeof randomLlamaTensors> } {
  return { configJson: llamaConfigJson(shape), tensors: randomLlamaTensors(shape, seed, { embedStd: 0.1 }) };
}

/** Writes the tiny model as a HF folder with a BPE tokenizer trained on a few WordNet glosses; returns those glosses. */
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
