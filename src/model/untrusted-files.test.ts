// Model files are untrusted input (issue 12, items 14 and 15): config dimensions are capped before
// anything is allocated, tokenizer regular expressions are vetted at load, and safetensors dtype
// names are looked up as own properties only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../util/paths.js';
import { parseConfig } from './config.js';
import { readSafetensorsHeader } from './safetensors.js';
import { loadTokenizer } from './tokenizer.js';

const root = mkdtempSync(join(tmpdir(), 'helora-untrusted-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

const base = { model_type: 'llama', hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 300 };

test('item 14: implausible config dimensions are refused with a clear error before any allocation', () => {
  assert.doesNotThrow(() => parseConfig(base));
  // Llama-3.1-405B's shape is accepted
  assert.doesNotThrow(() => parseConfig({ ...base, hidden_size: 16384, intermediate_size: 53248, num_hidden_layers: 126, num_attention_heads: 128, num_key_value_heads: 8, vocab_size: 128256 }));
  for (const [key, value] of [['num_hidden_layers', 1e6], ['hidden_size', 1 << 20], ['intermediate_size', 1e7], ['vocab_size', 1e9], ['num_attention_heads', 4096], ['head_dim', 65536], ['max_position_embeddings', 2 ** 40]] as const) {
    assert.throws(() => parseConfig({ ...base, num_attention_heads: key === 'num_attention_heads' ? value : 4, num_key_value_heads: key === 'num_attention_heads' ? value : 2, [key]: value }),
      new RegExp(`"${key}" = ${value} exceeds the limit of \\d+`), key);
  }
  assert.throws(() => parseConfig({ ...base, hidden_size: 65536, num_attention_heads: 512, num_key_value_heads: 512, vocab_size: 4_000_000 }), /vocab_size \* hidden_size = \d+ elements exceeds/);
});

test('item 14: tokenizer regular expressions that can backtrack exponentially are refused', async () => {
  const regexVet: Record<string, unknown> = await import('./regex-vet.js').catch(() => ({}));
  const vet = regexVet.vetTokenizerRegex as ((p: string, w: string) => void) | undefined;
  assert.equal(typeof vet, 'function');
  const real = [
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", // GPT-2
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", // Llama-3 / cl100k
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", // o200k
    '(?:ab)+c', '\\p{N}', ' ?\\p{L}+',
  ];
  for (const p of real) assert.doesNotThrow(() => vet!(p, 't'), p);
  for (const p of ['(a+)+$', '(a|a)*b', '(a*b?)*c', '((ab)*)+', '(\\w+\\s?)+$', '(a{1,100})+', '(.)\\1', 'x'.repeat(2000)]) {
    assert.throws(() => vet!(p, 't'), /refused/, p);
  }
  // at load: a tokenizer.json whose pre-tokenizer carries (a+)+$ is refused
  const dir = join(root, 'tok');
  mkdirSync(dir);
  const tokJson = JSON.parse(readFileSync(join(repoRoot(), 'models/helora-tiny/tokenizer.json'), 'utf8')) as Record<string, unknown>;
  copyFileSync(join(repoRoot(), 'models/helora-tiny/tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ ...tokJson, pre_tokenizer: { type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated', invert: false } }));
  assert.throws(() => loadTokenizer(dir), /regular expression "\(a\+\)\+\$" refused: a repeated group holds a repetition/);
  assert.doesNotThrow(() => loadTokenizer(join(repoRoot(), 'models/helora-tiny')));
});

test('item 15: a safetensors dtype must be one of the format\'s own names, never an inherited property', () => {
  for (const dtype of ['toString', 'constructor', '__proto__', 'hasOwnProperty']) {
    const header = Buffer.from(JSON.stringify({ x: { dtype, shape: [1], data_offsets: [0, 4] } }));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    const path = join(root, `${dtype}.safetensors`);
    writeFileSync(path, Buffer.concat([len, header, Buffer.alloc(4)]));
    assert.throws(() => readSafetensorsHeader(path), new RegExp(`unknown dtype "${dtype}"`), dtype);
  }
});
