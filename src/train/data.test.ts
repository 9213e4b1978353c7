import { IGNORE_INDEX } from '../model/layers.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTrainingData, readTrainingFile, tokenizeRecords } from './data.js';
import { packExamples } from './packing.js';

test('JSONL with "text": records in order, blank lines ignored, CRLF and BOM tolerated', () => {
  const d = parseTrainingData('\ufeff{"text":"hello"}\r\n\r\n{"text":"wor\\nld","meta":1}\n{"text":""}\n');
  assert.equal(d.format, 'text-jsonl');
  assert.deepEqual(d.records, [{ kind: 'text', text: 'hello' }, { kind: 'text', text: 'wor\nld' }]);
  assert.equal(d.skippedEmpty, 1);
});

test('JSONL prompt/completion pairs', () => {
  const d = parseTrainingData('{"prompt":"Q: 2+2?","completion":" 4"}\n{"prompt":"","completion":"x"}');
  assert.equal(d.format, 'prompt-completion-jsonl');
  assert.deepEqual(d.records, [{ kind: 'pair', prompt: 'Q: 2+2?', completion: ' 4' }, { kind: 'pair', prompt: '', completion: 'x' }]);
});

test('plain text splits into documents on blank lines', () => {
  const d = parseTrainingData('First para\nline two.\n\n  \n\nSecond.\r\n \r\nThird\n', { format: 'plain' });
  assert.deepEqual(d.records.map((r) => (r.kind === 'text' ? r.text : '')), ['First para\nline two.', 'Second.', 'Third']);
});

test('errors name the line and the problem', () => {
  assert.throws(() => parseTrainingData('{"text":"a"}\n\n{"text": oops}', { sourceName: 'x.jsonl' }), /x\.jsonl line 3: invalid JSON/);
  assert.throws(() => parseTrainingData('{"text":"a"}\n[1,2]'), /line 2: expected a JSON object/);
  assert.throws(() => parseTrainingData('{"text":"a"}\n{"prompt":"p","completion":"c"}'), /line 2: missing "text" field \(earlier lines use "text"; do not mix formats\)/);
  assert.throws(() => parseTrainingData('{"prompt":"p"}'), /line 1: missing "completion" field/);
  assert.throws(() => parseTrainingData('{"text":5}'), /line 1: "text" must be a string, got number/);
  assert.throws(() => parseTrainingData('{"foo":"bar"}'), /line 1: expected a "text" field, "prompt" and "completion" fields, or a "messages" list/);
  assert.throws(() => parseTrainingData('{"prompt":"p","completion":"c"}', { format: 'text-jsonl' }), /line 1: missing "text"/);
  assert.throws(() => parseTrainingData('\n\n'), /no usable records/);
  assert.throws(() => parseTrainingData('{"text":"a"}\n{"text":"' + 'z'.repeat(100) + '"}', { maxLineChars: 50 }), /line 2 is 111 characters, more than the limit of 50/);
  assert.throws(() => parseTrainingData('{"text":"a"}\n{"text":"b"}\n{"text":"c"}', { maxRecords: 2 }), /more than 2 records/);
  assert.throws(() => parseTrainingData('a\n\nb\n\nc', { format: 'plain', maxRecords: 2 }), /more than 2 documents/);
});

test('readTrainingFile: format from the extension, size cap before reading, UTF-8 check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'helora-data-'));
  try {
    const j = join(dir, 'train.jsonl');
    writeFileSync(j, '{"prompt":"a","completion":"b"}\n');
    assert.equal(readTrainingFile(j).format, 'prompt-completion-jsonl');
    const t = join(dir, 'notes.txt');
    writeFileSync(t, '{"text":"looks like json"}\n\nbut is plain');
    const d = readTrainingFile(t);
    assert.equal(d.format, 'plain');
    assert.equal(d.records.length, 2);
    assert.throws(() => readTrainingFile(t, { maxBytes: 10 }), /more than the limit of 10/);
    const bad = join(dir, 'bad.txt');
    writeFileSync(bad, Buffer.from([0x61, 0xff, 0xfe, 0x62]));
    assert.throws(() => readTrainingFile(bad), /not valid UTF-8/);
    assert.throws(() => readTrainingFile(join(dir, 'missing.jsonl')), /cannot open training data/);
    assert.throws(() => readTrainingFile(dir), /not a regular file/);
    const e = join(dir, 'e.jsonl');
    writeFileSync(e, '{"text":"ok"}\n{"text":1}\n');
    assert.throws(() => readTrainingFile(e), /e\.jsonl line 2/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tokenizeRecords: bos/eos and a prompt mask that packs into completion-only targets', () => {
  // A toy encoder: one id per character code.
  const enc = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));
  const ex = tokenizeRecords(
    [
      { kind: 'pair', prompt: 'ab', completion: 'cd' },
      { kind: 'text', text: 'xy' },
    ],
    enc,
    { bosId: 1, eosId: 2 },
  );
  assert.deepEqual(ex[0], { ids: [1, 97, 98, 99, 100, 2], lossMask: [false, false, false, true, true, true] });
  assert.deepEqual(ex[1], { ids: [1, 120, 121, 2] });
  const b = packExamples([ex[0]!], { T: 6, padId: 0 }).batches[0]!;
  assert.deepEqual(Array.from(b.targets), [IGNORE_INDEX, IGNORE_INDEX, 99, 100, 2, IGNORE_INDEX]);
  const noSpecial = tokenizeRecords([{ kind: 'pair', prompt: 'a', completion: 'b' }], enc);
  assert.deepEqual(noSpecial[0], { ids: [97, 98], lossMask: [false, true] });
});

test('JSONL chat records: messages validated, records without an assistant answer skipped, errors name the line', () => {
  const d = parseTrainingData([
    '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"},{"role":"assistant","content":"hello","extra":1}]}',
    '{"messages":[{"role":"user","content":"no answer"}]}',
  ].join('\n'));
  assert.equal(d.format, 'chat-jsonl');
  assert.deepEqual(d.records, [{ kind: 'chat', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }] }]);
  assert.equal(d.skippedEmpty, 1);
  assert.throws(() => parseTrainingData('{"messages":"hi"}'), /line 1: "messages" must be a list/);
  assert.throws(() => parseTrainingData('{"messages":[{"role":"user"}]}'), /line 1: message 1 needs a string "content"/);
  assert.throws(() => parseTrainingData('{"messages":[{"role":"","content":"x"}]}'), /message 1 needs a non-empty string "role"/);
  assert.throws(() => parseTrainingData('{"messages":[5]}'), /message 1 must be a \{"role", "content"\} object/);
  assert.throws(() => parseTrainingData('{"messages":[{"role":"assistant","content":"a"}]}\n{"text":"t"}'), /line 2: missing "messages" field \(earlier lines use "messages"; do not mix formats\)/);
  assert.throws(() => parseTrainingData('{"text":"t"}', { format: 'chat-jsonl' }), /line 1: missing "messages"/);
  assert.throws(() => parseTrainingData(`{"messages":[${Array(3).fill('{"role":"user","content":"x"}').join(',')}]}`, { maxChatMessages: 2 }), /3 messages, more than the limit of 2/);
});

test('tokenizeRecords: chat records go through encodeChat (no bos/eos added), and fail clearly without it', () => {
  const enc = (s: string): number[] => Array.from(s, (c) => c.charCodeAt(0));
  const messages = [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }];
  const encodeChat = (m: readonly { role: string; content: string }[]) => ({ ids: [5, ...enc(m[1]!.content)], lossMask: [false, true] });
  assert.deepEqual(tokenizeRecords([{ kind: 'chat', messages }], enc, { bosId: 1, eosId: 2, encodeChat }), [{ ids: [5, 97], lossMask: [false, true] }]);
  assert.throws(() => tokenizeRecords([{ kind: 'chat', messages }], enc), /need a chat template/);
});
