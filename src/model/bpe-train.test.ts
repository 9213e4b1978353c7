import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tiktoken } from 'js-tiktoken/lite';
import { bytesToUnicode, trainBpe, writeTokenizerFolder } from './bpe-train.js';
import { loadTokenizer } from './tokenizer.js';

const root = mkdtempSync(join(tmpdir(), 'helora-bpe-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

// Real text nobody here wrote; GPL-2 is held out for testing.
const LICENSES = '/usr/share/common-licenses/';
const corpus = readFileSync(LICENSES + 'GPL-3', 'utf8') + '\n<|endoftext|>\n' + readFileSync(LICENSES + 'Apache-2.0', 'utf8');
const heldOut = readFileSync(LICENSES + 'GPL-2', 'utf8');

const VOCAB = 2000;
const trained = trainBpe(corpus, { vocabSize: VOCAB, specialTokens: ['<|endoftext|>', '<s>'], bosToken: '<s>', eosToken: '<|endoftext|>' });
const dir = join(root, 'tok');
writeTokenizerFolder(dir, trained);
const tok = loadTokenizer(dir);

/** The same vocabulary as a tiktoken encoding: rank = id, same split pattern. */
function asTiktoken(): Tiktoken {
  const b64 = trained.tokenBytes.map((b) => Buffer.from(b).toString('base64'));
  return new Tiktoken({ pat_str: trained.pattern, special_tokens: Object.fromEntries(trained.specialIds), bpe_ranks: `! 0 ${b64.join(' ')}` });
}

const SAMPLES = [
  'Hello world',
  'The GNU General Public License is a free, copyleft license for software and other kinds of works.',
  "I'm sure you'RE right; they'll say it's what we'd've DONE.",
  'naïve café résumé Ünïcödé — “quotes” … ½ ß',
  '日本語のテキストと中文字符',
  'emoji 🎉🎉 👩‍👩‍👧‍👦 🇩🇪!',
  'numbers 1234567890 3.14159 -42 1,000,000 2024-01-01',
  'whitespace   runs\t\ttabs\n\n\nnewlines \r\n crlf   ',
  '    leading spaces and trailing    ',
  '',
  ' ',
  '\n',
  'x'.repeat(300),
  'quantum chromodynamics zyxwvut qwertyuiop', // words absent from the training text
  'a\u0000b\u0007c\u007f\u00a0d',
  heldOut.slice(0, 3000),
];

test('tokenizer ids equal those of an independent implementation (tiktoken)', () => {
  const tk = asTiktoken();
  const samples = [...SAMPLES, ...heldOut.split('\n')];
  let compared = 0;
  for (const s of samples) {
    const ours = tok.encode(s, { addSpecialTokens: false });
    assert.deepEqual(ours, tk.encode(s), `ids differ for ${JSON.stringify(s.slice(0, 80))}`);
    if (s.length > 0) assert.equal(tok.decode(ours), s, 'decode(encode(s)) must give s back');
    compared++;
  }
  assert.ok(compared > 300);
  // Special tokens inside text become their single id in both.
  const withSpecial = 'end of one<|endoftext|>start of two';
  assert.deepEqual(tok.encode(withSpecial, { addSpecialTokens: false }), tk.encode(withSpecial, 'all'));
  assert.ok(tok.encode(withSpecial, { addSpecialTokens: false }).includes(trained.specialIds.get('<|endoftext|>')!));
});

test('trained vocabulary: size, ids, specials, compression', () => {
  assert.equal(tok.vocabSize, VOCAB);
  assert.equal(trained.tokenBytes.length, VOCAB - 2);
  assert.equal(tok.bosId, VOCAB - 1);
  assert.equal(tok.eosId, VOCAB - 2);
  const b2u = bytesToUnicode();
  assert.equal(new Set(b2u).size, 256);
  const model = (trained.tokenizer.model as { vocab: Record<string, number>; merges: string[][] });
  assert.equal(model.vocab[b2u[0x41]], 0x41); // 'A'
  assert.equal(model.vocab['Ġ'], 0x20); // space byte
  // Every merge creates the token with the next id: merge order is tiktoken rank order.
  model.merges.forEach(([a, b], i) => assert.equal(model.vocab[a + b], 256 + i));
  // Frequent words of the training text are single tokens.
  for (const w of [' the', ' License', ' software', ' Program']) assert.equal(tok.encode(w, { addSpecialTokens: false }).length, 1, w);
  // The special token never leaks into learned tokens.
  assert.ok(!trained.tokenBytes.some((b) => Buffer.from(b).toString('latin1').includes('endoftext')));
  // Held-out English compresses well (bytes per token); a broken trainer lands near 1.
  const ids = tok.encode(heldOut, { addSpecialTokens: false });
  assert.ok(Buffer.byteLength(heldOut) / ids.length > 3, `compression ${Buffer.byteLength(heldOut) / ids.length}`);
  // BOS is added on request only.
  assert.deepEqual(tok.encode('hi'), [tok.bosId!, ...tok.encode('hi', { addSpecialTokens: false })]);
});

test('training is deterministic and validates options', () => {
  const small = corpus.slice(0, 20000);
  const a = trainBpe(small, { vocabSize: 400 });
  const b = trainBpe(small, { vocabSize: 400 });
  assert.deepEqual(a.tokenizer, b.tokenizer);
  assert.throws(() => trainBpe(small, { vocabSize: 100 }), /vocabSize must be an integer/);
  assert.throws(() => trainBpe(small, { vocabSize: 400, specialTokens: ['<a>', '<a>'] }), /distinct/);
  assert.throws(() => trainBpe(small, { vocabSize: 400, bosToken: '<bos>' }), /must be one of the special tokens/);
  // A tiny corpus stops early rather than merging pairs seen once.
  const tiny = trainBpe('abc abd', { vocabSize: 1000 });
  assert.ok(tiny.tokenBytes.length < 270);
});
