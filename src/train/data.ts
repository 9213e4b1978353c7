/**
 * Reading training data: JSONL with a "text" field, JSONL with "prompt"/"completion" pairs (loss
 * on the completion only), JSONL chat records {"messages": [{"role", "content"}, ...]} (rendered
 * with the model's chat template, loss on the assistant turns only), or plain text split into
 * documents on blank lines. Files are
 * untrusted input: sizes are checked before reading, every line is validated, and errors name
 * the file and line.
 */

import { closeSync, fstatSync, openSync } from 'node:fs';
import { readAt } from '../util/files.js';
import { basename, extname } from 'node:path';
import type { ChatMessage } from '../model/chat-template.js';
import type { Example } from './packing.js';

export type DataFormat = 'auto' | 'text-jsonl' | 'prompt-completion-jsonl' | 'chat-jsonl' | 'plain';

export type DataRecord =
  | { kind: 'text'; text: string }
  | { kind: 'pair'; prompt: string; completion: string }
  | { kind: 'chat'; messages: ChatMessage[] };

/** Default cap on the messages of one chat record. */
export const MAX_CHAT_MESSAGES = 10_000;

/** Default cap on a training file (well below V8's ~512 MiB string limit). */
export const MAX_DATA_FILE_BYTES = 256 * 1024 * 1024;
/** Default cap on one JSONL line. */
export const MAX_LINE_CHARS = 16 * 1024 * 1024;
/** Default cap on the number of records. */
export const MAX_RECORDS = 10_000_000;

export interface ReadDataOptions {
  format?: DataFormat;
  maxBytes?: number;
  maxLineChars?: number;
  maxRecords?: number;
  maxChatMessages?: number;
}

export interface DataSet {
  format: Exclude<DataFormat, 'auto'>;
  records: DataRecord[];
  /** Records skipped because their text (or completion) was empty. */
  skippedEmpty: number;
}

/** Read and parse a training file; the format is guessed from the extension and first line when 'auto'. */
export function readTrainingFile(path: string, opts: ReadDataOptions = {}): DataSet {
  const maxBytes = opts.maxBytes ?? MAX_DATA_FILE_BYTES;
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new Error(`helora: cannot open training data ${path}: ${(e as Error).message}`);
  }
  let buf: Buffer;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`helora: training data ${path} is not a regular file`);
    if (st.size > maxBytes) throw new Error(`helora: training data ${path} is ${st.size} bytes, more than the limit of ${maxBytes}`);
    buf = Buffer.alloc(st.size);
    if (readAt(fd, buf) !== st.size) throw new Error(`helora: training data ${path} changed while reading`);
  } finally {
    closeSync(fd);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new Error(`helora: training data ${path} is not valid UTF-8 text`);
  }
  let format = opts.format ?? 'auto';
  if (format === 'auto') {
    const ext = extname(path).toLowerCase();
    format = ext === '.jsonl' || ext === '.json' || ext === '.ndjson' ? 'auto' : 'plain';
  }
  return parseTrainingData(text, { ...opts, format, sourceName: basename(path) });
}

function stripBom(s: string): string {
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

/**
 * Parse training data held in memory. 'auto' here means JSONL whose kind (text or pairs) is
 * taken from its first record.
 */
export function parseTrainingData(content: string, opts: ReadDataOptions & { sourceName?: string } = {}): DataSet {
  const src = opts.sourceName ?? 'data';
  const maxRecords = opts.maxRecords ?? MAX_RECORDS;
  const format = opts.format ?? 'auto';
  content = stripBom(content).replace(/\r\n?/g, '\n');
  if (format === 'plain') {
    const records: DataRecord[] = [];
    for (const doc of content.split(/\n[ \t\f\v]*\n/)) {
      const t = doc.trim();
      if (t.length === 0) continue;
      if (records.length >= maxRecords) throw new Error(`helora: ${src} holds more than ${maxRecords} documents`);
      records.push({ kind: 'text', text: t });
    }
    if (records.length === 0) throw new Error(`helora: ${src} holds no text`);
    return { format: 'plain', records, skippedEmpty: 0 };
  }
  if (format !== 'auto' && format !== 'text-jsonl' && format !== 'prompt-completion-jsonl' && format !== 'chat-jsonl') {
    throw new Error(`helora: unknown data format ${String(format)} (auto, text-jsonl, prompt-completion-jsonl, chat-jsonl, plain)`);
  }
  const maxLine = opts.maxLineChars ?? MAX_LINE_CHARS;
  const kindOfFormat = { 'text-jsonl': 'text', 'prompt-completion-jsonl': 'pair', 'chat-jsonl': 'chat', auto: null } as const;
  let kind: 'text' | 'pair' | 'chat' | null = kindOfFormat[format];
  const records: DataRecord[] = [];
  let skippedEmpty = 0;
  let lineNo = 0;
  let start = 0;
  while (start <= content.length) {
    let end = content.indexOf('\n', start);
    if (end < 0) end = content.length;
    lineNo++;
    const line = content.slice(start, end);
    start = end + 1;
    if (line.trim().length === 0) continue;
    const where = `${src} line ${lineNo}`;
    if (line.length > maxLine) throw new Error(`helora: ${where} is ${line.length} characters, more than the limit of ${maxLine}`);
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new Error(`helora: ${where}: invalid JSON (${(e as Error).message})`);
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new Error(`helora: ${where}: expected a JSON object`);
    const o = obj as Record<string, unknown>;
    if (kind === null) {
      if ('text' in o) kind = 'text';
      else if ('prompt' in o || 'completion' in o) kind = 'pair';
      else if ('messages' in o) kind = 'chat';
      else throw new Error(`helora: ${where}: expected a "text" field, "prompt" and "completion" fields, or a "messages" list`);
    }
    const field = (name: string): string => {
      const v = o[name];
      if (v === undefined) {
        const earlier = { text: '"text"', pair: '"prompt"/"completion"', chat: '"messages"' }[kind!];
        const keysOf = { text: ['text'], pair: ['prompt', 'completion'], chat: ['messages'] };
        const mixed = Object.entries(keysOf).some(([k, keys]) => k !== kind && keys.some((key) => key in o));
        const hint = mixed ? ` (earlier lines use ${earlier}; do not mix formats)` : '';
        throw new Error(`helora: ${where}: missing "${name}" field${hint}`);
      }
      if (typeof v !== 'string') throw new Error(`helora: ${where}: "${name}" must be a string, got ${Array.isArray(v) ? 'array' : typeof v}`);
      return v;
    };
    if (records.length >= maxRecords) throw new Error(`helora: ${src} holds more than ${maxRecords} records`);
    if (kind === 'text') {
      const text = field('text');
      if (text.length === 0) skippedEmpty++;
      else records.push({ kind: 'text', text });
    } else if (kind === 'pair') {
      const prompt = field('prompt');
      const completion = field('completion');
      if (completion.length === 0) skippedEmpty++;
      else records.push({ kind: 'pair', prompt, completion });
    } else {
      if (o.messages === undefined) field('messages');
      const messages = parseChatMessages(o.messages, where, opts.maxChatMessages ?? MAX_CHAT_MESSAGES);
      if (!messages.some((m) => m.role === 'assistant' && m.content.length > 0)) skippedEmpty++;
      else records.push({ kind: 'chat', messages });
    }
  }
  if (records.length === 0) throw new Error(`helora: ${src} holds no usable records`);
  const formatOfKind = { text: 'text-jsonl', pair: 'prompt-completion-jsonl', chat: 'chat-jsonl' } as const;
  return { format: formatOfKind[kind ?? 'text'], records, skippedEmpty };
}

function parseChatMessages(v: unknown, where: string, maxMessages: number): ChatMessage[] {
  if (!Array.isArray(v)) throw new Error(`helora: ${where}: "messages" must be a list of {"role", "content"} objects`);
  if (v.length > maxMessages) throw new Error(`helora: ${where}: ${v.length} messages, more than the limit of ${maxMessages}`);
  return v.map((m: unknown, i): ChatMessage => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new Error(`helora: ${where}: message ${i + 1} must be a {"role", "content"} object`);
    const { role, content } = m as { role?: unknown; content?: unknown };
    if (typeof role !== 'string' || role.length === 0) throw new Error(`helora: ${where}: message ${i + 1} needs a non-empty string "role"`);
    if (typeof content !== 'string') throw new Error(`helora: ${where}: message ${i + 1} needs a string "content"`);
    return { role, content };
  });
}

/** Encodes text to token ids WITHOUT adding special tokens (those come from TokenizeOptions). */
export type EncodeFn = (text: string) => number[];

export interface TokenizeOptions {
  /** Prepended to every text or pair example, never a loss target (a chat template writes its own). */
  bosId?: number;
  /** Appended to every text or pair example and trained on, so the model learns to stop. */
  eosId?: number;
  /**
   * Renders and tokenizes a chat record with the model's chat template, the loss on the assistant
   * turns only; called only for chat records (a model without a chat template throws there).
   */
  encodeChat?: (messages: readonly ChatMessage[]) => { ids: number[]; lossMask: boolean[] };
}

/**
 * Turn records into examples for packing. A pair is encoded as prompt and completion separately
 * and concatenated, so the loss mask boundary is exact (a merge across the boundary is lost;
 * put a separator at the end of the prompt if that matters).
 */
export function tokenizeRecords(records: readonly DataRecord[], encode: EncodeFn, opts: TokenizeOptions = {}): Example[] {
  const bos = opts.bosId === undefined ? [] : [opts.bosId];
  const eos = opts.eosId === undefined ? [] : [opts.eosId];
  return records.map((r) => {
    if (r.kind === 'text') return { ids: [...bos, ...encode(r.text), ...eos] };
    if (r.kind === 'chat') {
      if (opts.encodeChat === undefined) throw new Error('helora: chat records {"messages"} need a chat template to render them');
      return opts.encodeChat(r.messages);
    }
    const p = [...bos, ...encode(r.prompt)];
    const c = [...encode(r.completion), ...eos];
    return { ids: [...p, ...c], lossMask: [...p.map(() => false), ...c.map(() => true)] };
  });
}
