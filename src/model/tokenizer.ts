// Tokenizers of Hugging Face model folders (tokenizer.json + optional tokenizer_config.json),
// run offline by @huggingface/tokenizers (a pure-JS port of the Rust tokenizers library).

import { existsSync, statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ChatTemplate, MAX_CHAT_TEMPLATE_CHARS, tokenizeRenderedChat, type ChatMessage } from './chat-template.js';
import { vetTokenizerJsonRegexes } from './regex-vet.js';

export interface TextTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  /** One more than the largest token id (added tokens included). */
  vocabSize: number;
  bosId: number | null;
  eosId: number | null;
  /** The model's chat template; throws a clear error when the folder has none. */
  chatTemplate(): ChatTemplate;
  /** A conversation rendered with the chat template and tokenized, loss on the assistant turns only. */
  encodeChat(messages: readonly ChatMessage[]): { ids: number[]; lossMask: boolean[] };
}

/** tokenizer.json of real models is 2-12 MB; anything far larger is refused before reading. */
const MAX_TOKENIZER_JSON_BYTES = 256 * 1024 * 1024;

function readJson(path: string, what: string): Record<string, unknown> {
  const size = statSync(path).size;
  if (size > MAX_TOKENIZER_JSON_BYTES) throw new Error(`helora: ${what} ${path} is ${size} bytes (cap ${MAX_TOKENIZER_JSON_BYTES})`);
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`helora: ${what} ${path} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`helora: ${what} ${path} must hold a JSON object`);
  return v as Record<string, unknown>;
}

/** tokenizer_config.json writes special tokens as a string or as {"content": "..."}. */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

export function loadTokenizer(dir: string): TextTokenizer {
  const tokPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokPath)) throw new Error(`helora: no tokenizer.json in ${dir}`);
  const tokJson = readJson(tokPath, 'tokenizer.json');
  const cfgPath = join(dir, 'tokenizer_config.json');
  const cfg = existsSync(cfgPath) ? readJson(cfgPath, 'tokenizer_config.json') : {};
  if (!Array.isArray(tokJson.added_tokens)) tokJson.added_tokens = [];
  vetTokenizerJsonRegexes(tokJson, tokPath);
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokJson, cfg);
  } catch (e) {
    throw new Error(`helora: cannot build a tokenizer from ${tokPath}: ${(e as Error).message}`);
  }
  let maxId = -1;
  for (const id of tok.get_vocab(true).values()) if (id > maxId) maxId = id;
  const vocabSize = maxId + 1;
  const idOf = (key: string): number | null => {
    const content = tokenContent(cfg[key]);
    if (content === null) return null;
    const id = tok.token_to_id(content);
    if (id === undefined) throw new Error(`helora: tokenizer_config.json ${key} ${JSON.stringify(content)} is not in the vocabulary`);
    return id;
  };
  let cachedTemplate: ChatTemplate | null = null;
  const specialTokenValues: Record<string, string> = {};
  for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    const content = tokenContent(cfg[key]);
    if (content !== null) specialTokenValues[key] = content;
  }
  const specialTokens = (tokJson.added_tokens as unknown[])
    .filter((t): t is { content: string; special: true } => typeof t === 'object' && t !== null && (t as { special?: unknown }).special === true && typeof (t as { content?: unknown }).content === 'string')
    .map((t) => t.content);
  // transformers >= 4.45 defaults clean_up_tokenization_spaces to false; honour an explicit value.
  const cleanUp = cfg.clean_up_tokenization_spaces === true;
  const encode = (text: string, opts?: { addSpecialTokens?: boolean }): number[] => tok.encode(text, { add_special_tokens: opts?.addSpecialTokens ?? true }).ids;
  const chatTemplate = (): ChatTemplate => {
    if (cachedTemplate !== null) return cachedTemplate;
    // Read on first use: a model trained on other records never depends on its template.
    const source = readChatTemplateSource(dir, cfg);
    if (source === null) {
      throw new Error(`helora: the model in ${dir} has no chat template (no "chat_template" in tokenizer_config.json and no chat_template.jinja): chat records {"messages": [...]} need one; use {"text"} or {"prompt","completion"} records instead, or add the model's template`);
    }
    cachedTemplate = new ChatTemplate(source, { specialTokenValues, specialTokens });
    return cachedTemplate;
  };
  return {
    vocabSize,
    bosId: idOf('bos_token'),
    eosId: idOf('eos_token'),
    encode,
    encodeChat(messages: readonly ChatMessage[]) {
      return tokenizeRenderedChat(chatTemplate().renderForTraining(messages), (text) => encode(text, { addSpecialTokens: false }));
    },
    chatTemplate,
    decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string {
      if (ids.length === 0) return '';
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize || tok.id_to_token(id) === undefined) {
          throw new Error(`helora: token id ${id} is not in the vocabulary (size ${vocabSize})`);
        }
      }
      return tok.decode(ids, { skip_special_tokens: opts?.skipSpecialTokens ?? false, clean_up_tokenization_spaces: cleanUp });
    },
  };
}

/**
 * The chat template source: tokenizer_config.json "chat_template" (a string, or a list of
 * {name, template} of which "default" is used), else a chat_template.jinja file beside it.
 */
function readChatTemplateSource(dir: string, cfg: Record<string, unknown>): string | null {
  const v = cfg.chat_template;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const named = v.find((t): t is { name: string; template: string } => typeof t === 'object' && t !== null && (t as { name?: unknown }).name === 'default' && typeof (t as { template?: unknown }).template === 'string');
    if (named === undefined) throw new Error(`helora: tokenizer_config.json in ${dir} lists chat templates but none named "default"`);
    return named.template;
  }
  if (v !== undefined && v !== null) throw new Error(`helora: tokenizer_config.json in ${dir}: "chat_template" must be a string or a list of {name, template}`);
  const file = join(dir, 'chat_template.jinja');
  if (!existsSync(file)) return null;
  const size = statSync(file).size;
  if (size > MAX_CHAT_TEMPLATE_CHARS) throw new Error(`helora: ${file} is ${size} bytes, more than the limit of ${MAX_CHAT_TEMPLATE_CHARS}`);
  return readFileSync(file, 'utf8');
}
