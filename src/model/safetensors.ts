// safetensors reader and writer (https://github.com/huggingface/safetensors, format section):
//   [u64 little-endian N][N bytes of UTF-8 JSON header][data buffer]
// header: { "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, "__metadata__"?: {str: str} }
// with offsets relative to the start of the data buffer. Files are untrusted: every size and
// offset is validated before anything is allocated, and big files are read tensor by tensor.

import { closeSync, fstatSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { readAt } from '../util/files.js';
import { endianness } from 'node:os';

/** Header JSON larger than this is rejected (real checkpoints have headers of a few hundred KB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Largest single read() call; Node rejects reads of 2 GiB or more. */
/** Largest single write (one writeSync call is limited to 2 GiB). */
const WRITE_CHUNK_BYTES = 1 << 30;

/** Bytes per element of every dtype the format defines (we decode only F32, F16 and BF16). */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1,
  U16: 2, I16: 2, F16: 2, BF16: 2,
  U32: 4, I32: 4, F32: 4,
  U64: 8, I64: 8, F64: 8,
};

export interface TensorInfo { dtype: string; shape: number[]; offset: number; byteLength: number }
export interface Tensor { shape: number[]; data: Float32Array }
export type NamedTensors = Map<string, Tensor> | Array<{ name: string } & Tensor>;

if (endianness() !== 'LE') throw new Error('helora: safetensors I/O assumes a little-endian host');

function fail(path: string, msg: string): never {
  throw new Error(`helora: safetensors ${path}: ${msg}`);
}

/** Product of dims with overflow checks; returns the element count. */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new Error(`helora: bad tensor dimension ${JSON.stringify(d)}`);
    n *= d;
    if (!Number.isSafeInteger(n)) throw new Error(`helora: tensor shape [${shape.join(', ')}] overflows`);
  }
  return n;
}

function readExact(fd: number, buf: Uint8Array, position: number, path: string): void {
  const got = readAt(fd, buf, position);
  if (got < buf.length) fail(path, `unexpected end of file at byte ${position + got}`);
}

interface ParsedHeader { dataStart: number; tensors: Map<string, TensorInfo>; metadata: Record<string, string> | null }

function parseHeader(fd: number, path: string): ParsedHeader {
  const fileSize = fstatSync(fd).size;
  if (fileSize < 8) fail(path, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const lenBuf = new Uint8Array(8);
  readExact(fd, lenBuf, 0, path);
  const headerLen = new DataView(lenBuf.buffer).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(path, `header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte cap`);
  const n = Number(headerLen);
  if (n < 2) fail(path, `header length ${n} is too small for a JSON object`);
  if (8 + n > fileSize) fail(path, `header length ${n} runs past the end of the ${fileSize}-byte file`);
  const headerBytes = new Uint8Array(n);
  readExact(fd, headerBytes, 8, path);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    fail(path, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) fail(path, 'header must be a JSON object');

  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> | null = null;
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(path, '__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(entry)) if (typeof v !== 'string') fail(path, `__metadata__.${k} must be a string`);
      metadata = entry as Record<string, string>;
      continue;
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(path, `tensor "${name}": entry must be an object`);
    const { dtype, shape, data_offsets: offs } = entry as Record<string, unknown>;
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype)) fail(path, `tensor "${name}": unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0)) {
      fail(path, `tensor "${name}": shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || offs.some((o) => typeof o !== 'number' || !Number.isSafeInteger(o) || o < 0)) {
      fail(path, `tensor "${name}": data_offsets must be two non-negative integers, got ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as number[];
    if (end < begin) fail(path, `tensor "${name}": data_offsets [${begin}, ${end}] are reversed`);
    if (end > dataSize) fail(path, `tensor "${name}": data_offsets end ${end} is beyond the ${dataSize}-byte data buffer (file truncated?)`);
    let count: number;
    try {
      count = shapeSize(shape as number[]);
    } catch {
      fail(path, `tensor "${name}": shape ${JSON.stringify(shape)} overflows`);
    }
    const expected = count * DTYPE_BYTES[dtype];
    if (!Number.isSafeInteger(expected) || expected !== end - begin) {
      fail(path, `tensor "${name}": ${dtype} [${(shape as number[]).join(', ')}] needs ${expected} bytes but data_offsets span ${end - begin}`);
    }
    tensors.set(name, { dtype, shape: [...(shape as number[])], offset: dataStart + begin, byteLength: end - begin });
  }
  // Non-overlap: sort by start and check each range ends before the next begins.
  const ranges = [...tensors.entries()].filter(([, t]) => t.byteLength > 0).sort((a, b) => a[1].offset - b[1].offset);
  for (let i = 1; i < ranges.length; i++) {
    const [prevName, prev] = ranges[i - 1];
    const [name, cur] = ranges[i];
    if (prev.offset + prev.byteLength > cur.offset) fail(path, `tensors "${prevName}" and "${name}" have overlapping data_offsets`);
  }
  return { dataStart, tensors, metadata };
}

function withFile<T>(path: string, fn: (fd: number) => T): T {
  const fd = openSync(path, 'r');
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** Tensor table of a safetensors file (offsets are absolute file positions). Reads only the header. */
export function readSafetensorsHeader(path: string): Map<string, TensorInfo> {
  return withFile(path, (fd) => parseHeader(fd, path).tensors);
}

/** The optional __metadata__ map of a safetensors file. */
export function readSafetensorsMetadata(path: string): Record<string, string> | null {
  return withFile(path, (fd) => parseHeader(fd, path).metadata);
}

// Half-precision bit patterns -> float32, through a 64K-entry table built on first use.
let f16Table: Float32Array | null = null;
function halfToFloatTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24; // subnormal (and zero)
    else if (exp === 31) t[h] = mant === 0 ? sign * Infinity : NaN;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  f16Table = t;
  return t;
}

function readOne(fd: number, path: string, name: string, info: TensorInfo): Tensor {
  const count = info.byteLength / DTYPE_BYTES[info.dtype];
  const out = new Float32Array(count);
  const bytes = new Uint8Array(out.buffer);
  if (info.dtype === 'F32') {
    readExact(fd, bytes, info.offset, path);
  } else if (info.dtype === 'BF16' || info.dtype === 'F16') {
    // Read the 16-bit values into the upper half of the output buffer, then widen in place
    // front to back: writing element i (bytes 4i..4i+3) never reaches an unread source
    // (bytes >= 2*count + 2i + 2), so no second buffer is needed.
    readExact(fd, bytes.subarray(2 * count), info.offset, path);
    const src = new Uint16Array(out.buffer, 2 * count, count);
    if (info.dtype === 'BF16') {
      const dst = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) dst[i] = src[i] << 16;
    } else {
      const table = halfToFloatTable();
      for (let i = 0; i < count; i++) out[i] = table[src[i]];
    }
  } else {
    fail(path, `tensor "${name}" has dtype ${info.dtype}; only F32, F16 and BF16 can be loaded`);
  }
  return { shape: [...info.shape], data: out };
}

/** Read the tensors (all, or those whose name passes `names`) as Float32Arrays. */
export function readTensors(path: string, names?: (name: string) => boolean): Map<string, Tensor> {
  return withFile(path, (fd) => {
    const { tensors } = parseHeader(fd, path);
    const out = new Map<string, Tensor>();
    for (const [name, info] of tensors) {
      if (names && !names(name)) continue;
      out.set(name, readOne(fd, path, name, info));
    }
    return out;
  });
}

/** float32 -> bfloat16 bits with round-to-nearest-even (as torch does); NaN stays NaN. */
export function floatToBf16Bits(f32bits: number): number {
  if ((f32bits & 0x7fffffff) > 0x7f800000) return ((f32bits >>> 16) | 0x40) & 0xffff;
  const rounded = (f32bits + 0x7fff + ((f32bits >>> 16) & 1)) >>> 0;
  return rounded >>> 16;
}

function entriesOf(tensors: NamedTensors): Array<[string, Tensor]> {
  return tensors instanceof Map ? [...tensors.entries()] : tensors.map((t) => [t.name, { shape: t.shape, data: t.data }]);
}

/** Write tensors as F32 (default) or BF16. Written to a temporary name and renamed, so readers never see half a file. */
export function writeSafetensors(
  path: string,
  tensors: NamedTensors,
  opts: { dtype?: 'F32' | 'BF16'; metadata?: Record<string, string> } = {},
): void {
  writeSafetensorsLazily(path, entriesOf(tensors).map(([name, t]) => ({ name, shape: t.shape, data: () => t.data })), opts);
}

/** A tensor whose values are made only when the writer reaches it (and may be dropped after). */
export interface LazyTensor { name: string; shape: number[]; data: () => Float32Array }

/**
 * writeSafetensors for tensors produced one at a time, so a file larger than memory can be written
 * (e.g. a random checkpoint of a billion-parameter shape): only one tensor's values are held at once.
 */
export function writeSafetensorsLazily(
  path: string,
  lazyTensors: LazyTensor[],
  opts: { dtype?: 'F32' | 'BF16'; metadata?: Record<string, string> } = {},
): void {
  const dtype = opts.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'BF16') throw new Error(`helora: cannot write safetensors dtype ${String(dtype)} (F32 or BF16)`);
  const elemBytes = DTYPE_BYTES[dtype];
  const entries = lazyTensors.map((t): [string, LazyTensor] => [t.name, t]);
  const header: Record<string, unknown> = {};
  if (opts.metadata) {
    for (const [k, v] of Object.entries(opts.metadata)) if (typeof v !== 'string') throw new Error(`helora: safetensors metadata "${k}" must be a string`);
    header.__metadata__ = opts.metadata;
  }
  let offset = 0;
  const seen = new Set<string>();
  for (const [name, t] of entries) {
    if (name === '' || name === '__metadata__') throw new Error(`helora: invalid tensor name ${JSON.stringify(name)}`);
    if (seen.has(name)) throw new Error(`helora: duplicate tensor name "${name}"`);
    seen.add(name);
    const count = shapeSize(t.shape);
    const bytes = count * elemBytes;
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  // Pad the header with spaces to a multiple of 8 so the data buffer stays aligned (as the reference writer does).
  let headerText = JSON.stringify(header);
  const headerBytesRaw = new TextEncoder().encode(headerText);
  const pad = (8 - (headerBytesRaw.length % 8)) % 8;
  headerText += ' '.repeat(pad);
  const headerBytes = new TextEncoder().encode(headerText);
  const prefix = new Uint8Array(8 + headerBytes.length);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  prefix.set(headerBytes, 8);

  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeAll(fd, prefix);
    const CHUNK = 1 << 20; // elements converted per BF16 chunk
    let scratch: Uint16Array | null = null;
    for (const [name, lazy] of entries) {
      const data = lazy.data();
      const count = shapeSize(lazy.shape);
      if (count !== data.length) throw new Error(`helora: tensor "${name}" has ${data.length} values but shape [${lazy.shape.join(', ')}] needs ${count}`);
      if (dtype === 'F32') {
        writeAll(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      } else {
        const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
        scratch ??= new Uint16Array(Math.min(CHUNK, Math.max(1, bits.length)));
        if (scratch.length < Math.min(CHUNK, bits.length)) scratch = new Uint16Array(Math.min(CHUNK, bits.length));
        for (let s = 0; s < bits.length; s += CHUNK) {
          const n = Math.min(CHUNK, bits.length - s);
          for (let i = 0; i < n; i++) scratch[i] = floatToBf16Bits(bits[s + i]);
          writeAll(fd, new Uint8Array(scratch.buffer, 0, 2 * n));
        }
      }
    }
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
}

function writeAll(fd: number, buf: Uint8Array): void {
  let done = 0;
  while (done < buf.length) {
    const len = Math.min(WRITE_CHUNK_BYTES, buf.length - done);
    done += writeSync(fd, buf, done, len);
  }
}
