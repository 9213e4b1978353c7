// Small model folders for the CLI tests and quick manual runs: random Llama weights in HF format
// plus a byte-level BPE tokenizer trained on a few WordNet glosses (no pretrained weights exist here).
// The folder writer lives with the train layer's fixtures, whose tests use it too.

export { TINY_SHAPE, writeTinyModelFolder } from '../train/test-fixtures.js';
