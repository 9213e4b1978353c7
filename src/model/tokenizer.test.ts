import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { trainBpe, writeTokenizerFolder } from './bpe-train.js';
import { loadTokenizer } from './tokenizer.js';

const root = mkdtempSync(join(tmpdir(), 'helora-tok-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const text = readFileSync('/usr/share/common-licenses/Apache-2.0', 'utf8');

test('tokenizer_config variants: object-form special tokens, no config file, cleanup flag', () => {
  const trained = trainBpe(text, { vocabSize: 600, specialTokens: ['<|endoftext|>', '<|begin|>'] });
  const dir = join(root, 'a');
  writeTokenizerFolder(dir, trained);
  // transformers also writes {"content": ...} objects for special tokens.
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: { content: '<|begin|>', lstrip: false }, eos_token: '<|endoftext|>' }));
  const tok = loadTokenizer(dir);
  assert.equal(tok.bosId, 599);
  assert.equal(tok.eosId, 598);
  // No post-processor was configured, so no BOS is added even when special tokens are requested.
  assert.deepEqual(tok.encode('License'), tok.encode('License', { addSpecialTokens: false }));
  // Decoding keeps spaces before punctuation unless the config asks for cleanup.
  const s = 'a , b . c';
  assert.equal(tok.decode(tok.encode(s)), s);
  assert.equal(tok.decode([]), '');
  assert.equal(tok.decode([598, ...tok.encode('x')]), '<|endoftext|>x');
  assert.equal(tok.decode([598, ...tok.encode('x')], { skipSpecialTokens: true }), 'x');
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ clean_up_tokenization_spaces: true }));
  assert.equal(loadTokenizer(dir).decode(tok.encode(s)), 'a, b. c');

  rmSync(join(dir, 'tokenizer_config.json'));
  const bare = loadTokenizer(dir);
  assert.equal(bare.bosId, null);
  assert.equal(bare.eosId, null);
  assert.equal(bare.vocabSize, 600);
});

test('bad folders and ids give clear errors', () => {
  const trained = trainBpe(text, { vocabSize: 400 });
  const dir = join(root, 'b');
  writeTokenizerFolder(dir, trained);
  const tok = loadTokenizer(dir);
  assert.throws(() => tok.decode([400]), /token id 400 is not in the vocabulary/);
  assert.throws(() => tok.decode([1.5]), /token id 1.5/);
  assert.throws(() => tok.decode([-1]), /token id -1/);
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<nope>' }));
  assert.throws(() => loadTokenizer(dir), /eos_token "<nope>" is not in the vocabulary/);
  writeFileSync(join(dir, 'tokenizer_config.json'), '[');
  assert.throws(() => loadTokenizer(dir), /tokenizer_config\.json .* is not valid JSON/);
  writeFileSync(join(dir, 'tokenizer.json'), '"just a string"');
  assert.throws(() => loadTokenizer(dir), /must hold a JSON object/);
  mkdirSync(join(root, 'none'), { recursive: true });
  assert.throws(() => loadTokenizer(join(root, 'none')), /no tokenizer\.json in/);
});
