/**
 * Reading training data: JSONL with a "text" field, JSONL with "prompt"/"completion" pairs (loss
 * on the completion only), or plain text split into documents on blank lines. Files are
 * untrusted input: sizes are checked before reading, every line is validated, and errors name
 * the file and line.
 */

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { basename, extname } from 'node:path';
import type { Example } from './packing.js';

export type DataFormat = 'auto' | 'text-jsonl' | 'prompt-completion-jsonl' | 'plain';

export type DataRecord = { kind: 'text'; text: string } | { kind: 'pair'; prompt: string; completion: string };

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
    let off = 0;
    while (off < st.size) {
      const n = readSync(fd, buf, off, st.size - off, off);
      if (n === 0) break;
      off += n;
    }
    if (off !== st.size) throw new Error(`helora: training data ${path} changed while reading`);
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
  if (format !== 'auto' && format !== 'text-jsonl' && format !== 'prompt-completion-jsonl') {
    throw new Error(`helora: unknown data format ${String(format)} (auto, text-jsonl, prompt-completion-jsonl, plain)`);
  }
  const maxLine = opts.maxLineChars ?? MAX_LINE_CHARS;
  let kind: 'text' | 'pair' | null = format === 'text-jsonl' ? 'text' : format === 'prompt-completion-jsonl' ? 'pair' : null;
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
      else throw new Error(`helora: ${where}: expected a "text" field or "prompt" and "completion" fields`);
    }
    const field = (name: string): string => {
      const v = o[name];
      if (v === undefined) {
        const hint = kind === 'text' && ('prompt' in o || 'completion' in o) ? ' (earlier lines use "text"; do not mix formats)' : kind === 'pair' && 'text' in o ? ' (earlier lines use "prompt"/"completion"; do not mix formats)' : '';
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
    } else {
      const prompt = field('prompt');
      const completion = field('completion');
      if (completion.length === 0) skippedEmpty++;
      else records.push({ kind: 'pair', prompt, completion });
    }
  }
  if (records.length === 0) throw new Error(`helora: ${src} holds no usable records`);
  return { format: kind === 'text' ? 'text-jsonl' : 'prompt-completion-jsonl', records, skippedEmpty };
}

/** Encodes text to token ids WITHOUT adding special tokens (those come from TokenizeOptions). */
export type EncodeFn = (text: string) => number[];

export interface TokenizeOptions {
  /** Prepended to every example, never a loss target. */
  bosId?: number;
  /** Appended to every example and trained on, so the model learns to stop. */
  eosId?: number;
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
    const p = [...bos, ...encode(r.prompt)];
    const c = [...encode(r.completion), ...eos];
    return { ids: [...p, ...c], lossMask: [...p.map(() => false), ...c.map(() => true)] };
  });
}
