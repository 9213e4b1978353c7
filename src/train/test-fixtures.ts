// The tiny random Llama model the tests of every layer above share (CLI, transport): one shape and
// one seeded weight generator, so all of them test the same model.

import { llamaConfigJson, randomLlamaTensors, type RandomLlamaShape } from './random-init.js';

export const TINY_SHAPE: RandomLlamaShape = { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, numKvHeads: 2, vocabSize: 300 };

/** config.json and tensors of a seeded random model of this shape (embeddings larger than 0.02, like trained ones). */
export function tinyModel(shape: RandomLlamaShape = TINY_SHAPE, seed = 7): { configJson: Record<string, unknown>; tensors: ReturnType<typeof randomLlamaTensors> } {
  return { configJson: llamaConfigJson(shape), tensors: randomLlamaTensors(shape, seed, { embedStd: 0.1 }) };
}
