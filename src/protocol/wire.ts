// Versioned binary wire messages between client and server, with strict validation.
//
// Every byte from the network is hostile: each length is checked against the configured limits and
// against the bytes actually present BEFORE anything is allocated, every field is range-checked, and
// every failure is a WireError with a machine-readable code. Decoding is O(header) plus, at most,
// one copy of an output payload (only when its offset is not 4-byte aligned).
//
// Layout (all integers little-endian):
//   header (16 bytes)  magic "HLRA" | version u16 | type u8 | params id u8 | request id u64
//   ENCRYPTED_INPUT  (1) op u8 | layer u16 | group u8 | parts u8 | reserved 2 x u8 (zero) | masks u8
//                        | cols u32 x parts | tokens u32 | seed 16 bytes (all zero when masks = 1)
//                        | payload: for block in ceil(T/N), for part: cols*N values of uploadBytes each
//   ENCRYPTED_OUTPUT (2) op u8 | layer u16 | group u8 | parts u8 | terms u8 (1..64) | reserved u8 (zero) | masks u8
//                        | rows u32 x parts | tokens u32
//                        | payload: for block, for part, for term: a (rows*N u32, absent when masks = 1) then b (rows*N u32)
// masks: 0 = fresh masks expanded from the request's seed; 1 = the product's public masks (the
// client holds W·A from the server's mask table, src/transport/mask-tables.ts), so only b travels back.
//   ERROR            (3) code u16 | length u16 (<= 1024) | message utf8
// "terms": a product whose inner dimension exceeds the plaintext headroom is returned as K-chunk
// terms that the client adds after decryption (src/linear/layout.ts featureChunks), so an output
// carries parts * terms ciphertext matrices. In an ENCRYPTED_INPUT that byte is reserved (zero).
// The 3 bytes after "parts" keep every u32 field and both payloads 4-byte aligned relative to the message
// start, so a decoded output payload is a zero-copy Uint32Array view whenever the received buffer is
// itself aligned. Types >= 4 are reserved for later messages and rejected by this version.
// Assumption: typed-array views are little-endian (HOST_LITTLE_ENDIAN); on a big-endian host the
// output payload is converted by copying.

import { ByteReader, HOST_LITTLE_ENDIAN } from '../util/bytes.js';
import { downloadBytes, PARAMETER_SETS, uploadBytes, type RlweParams } from '../crypto/params.js';
import { SEED_BYTES } from '../crypto/sampling.js';
import type { MaskMode } from '../linear/types.js';
import { groupByWireId, groupMembers, PROJECTION_GROUP_SPECS, PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';

export const WIRE_MAGIC = new Uint8Array([0x48, 0x4c, 0x52, 0x41]); // "HLRA"
/** 3: the masks byte (public mask tables); 2: 16-byte mask seeds (AES-128-CTR); version 1 carried 32 (AES-256-CTR). */
export const WIRE_VERSION = 3;
export const HEADER_BYTES = 16;
/** op, layer, group, parts, 3 reserved bytes. */
const FIXED_PRODUCT_FIELDS_BYTES = 8;
export { SEED_BYTES };
export const MIN_PARTS = 1;
export const MAX_PARTS = 8;
/** K-chunk terms per output part of an ENCRYPTED_OUTPUT (e.g. 2 for Llama-3.2-1B gate_up backward). */
export const MIN_TERMS = 1;
export const MAX_TERMS = 64;
export const MAX_ERROR_MESSAGE_BYTES = 1024;
/** An ERROR message may carry params id 0 when the request's own id was unusable. */
export const NO_PARAMS_ID = 0;

export const MessageType = { EncryptedInput: 1, EncryptedOutput: 2, Error: 3 } as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export const Op = { Forward: 1, Backward: 2 } as const;
export type Op = (typeof Op)[keyof typeof Op];

/** Parts an ENCRYPTED_INPUT carries: forward uploads x once; backward uploads one dy per matrix. */
export function inputParts(op: Op, group: ProjectionGroup): number {
  return op === Op.Forward ? 1 : groupMembers(group).length;
}

/** Parts an ENCRYPTED_OUTPUT carries: forward returns one y per matrix; backward returns the summed dx. */
export function outputParts(op: Op, group: ProjectionGroup): number {
  return op === Op.Forward ? groupMembers(group).length : 1;
}

const KNOWN_GROUP_IDS = PROJECTION_GROUPS.map((g) => `${PROJECTION_GROUP_SPECS[g].wireId} (${g})`).join(', ');

function groupFromWire(id: number): ProjectionGroup {
  const g = groupByWireId(id);
  if (g === undefined) throw new WireError('bad_field', `unknown projection group ${id}, expected one of ${KNOWN_GROUP_IDS}`);
  return g;
}

/** Per-parameter-set sizes the wire format needs, derived from the crypto parameter set. */
export interface WireParams {
  id: number;
  /** N: tokens per ciphertext block. */
  ringDegree: number;
  /** Bytes per uploaded (seeded, mod-switched) b coefficient. */
  uploadBytes: number;
  /** Bytes per downloaded coefficient, for each of a and b (the payload is u32 views: must be 4). */
  downloadBytes: number;
}

export function wireParams(params: RlweParams): Readonly<WireParams> {
  const down = downloadBytes(params);
  if (down !== 4) throw new Error(`helora: wire: parameter set ${params.name} downloads ${down}-byte values; output payloads are u32 views`);
  return Object.freeze({ id: params.id, ringDegree: params.ringDegree, uploadBytes: uploadBytes(params), downloadBytes: down });
}

/** Every parameter set this build knows, by wire id. */
export const WIRE_PARAMS: ReadonlyMap<number, Readonly<WireParams>> = new Map(PARAMETER_SETS.map((p) => [p.id, wireParams(p)]));

export interface WireLimits {
  maxTokens: number;
  maxCols: number;
  /** Largest whole message accepted, in bytes. */
  maxBytes: number;
}

export const DEFAULT_WIRE_LIMITS: Readonly<WireLimits> = Object.freeze({
  maxTokens: 65536,
  maxCols: 65536,
  maxBytes: 1024 * 1024 * 1024,
});

export type WireErrorCode =
  | 'truncated' // fewer bytes than the fields or payload need
  | 'bad_magic'
  | 'bad_version'
  | 'bad_type' // unknown message type, or not the type the caller asked for
  | 'unknown_params'
  | 'bad_field' // an enum value out of range, non-zero reserved bytes, invalid UTF-8
  | 'bad_shape' // zero sizes, part counts that do not fit the op/group, payloads of the wrong size (encode)
  | 'too_large' // over WireLimits
  | 'trailing_bytes';

export class WireError extends Error {
  constructor(readonly code: WireErrorCode, message: string) {
    super(`helora: wire: ${message}`);
    this.name = 'WireError';
  }
}

export interface WireHeader {
  version: number;
  type: MessageType;
  paramsId: number;
  requestId: bigint;
}

export interface EncryptedInputMessage {
  masks: MaskMode;
  paramsId: number;
  requestId: bigint;
  op: Op;
  layer: number;
  group: ProjectionGroup;
  /** Features of each stacked input (parts = cols.length). */
  cols: number[];
  tokens: number;
  /** Seed of the a-parts (SEED_BYTES bytes). */
  seed: Uint8Array;
  /** blocks[block][part]: cols[part] * N * uploadBytes bytes; decoded ones are views into the message. */
  blocks: Uint8Array[][];
}

export interface OutputPart {
  a: Uint32Array;
  b: Uint32Array;
}

export interface EncryptedOutputMessage {
  masks: MaskMode;
  paramsId: number;
  requestId: bigint;
  op: Op;
  layer: number;
  group: ProjectionGroup;
  /** Output features of each part (parts = rows.length). */
  rows: number[];
  tokens: number;
  /** K-chunk terms per part (1..64); the client adds them after decryption. */
  terms: number;
  /** blocks[block][part * terms + term]: a and b, rows[part] * N values each; views into the message when aligned. */
  blocks: OutputPart[][];
}

export interface ErrorMessage {
  paramsId: number;
  requestId: bigint;
  code: number;
  message: string;
}

/** Numeric codes the server puts in ERROR messages. */
export const ServerErrorCode = {
  Malformed: 1,
  UnsupportedVersion: 2,
  UnknownParams: 3,
  TooLarge: 4,
  BadRequest: 5,
  Busy: 6,
  Internal: 7,
  /** The connection sent more requests per second than the server allows; retry later. */
  RateLimited: 8,
} as const;

/** The ERROR code a server answers a decode failure with. */
export function serverCodeFor(e: WireError): number {
  switch (e.code) {
    case 'bad_version': return ServerErrorCode.UnsupportedVersion;
    case 'unknown_params': return ServerErrorCode.UnknownParams;
    case 'too_large': return ServerErrorCode.TooLarge;
    default: return ServerErrorCode.Malformed;
  }
}

const MASK_CODES: Record<MaskMode, number> = { fresh: 0, table: 1 };

function masksFromWire(code: number): MaskMode {
  if (code === 0) return 'fresh';
  if (code === 1) return 'table';
  throw new WireError('bad_field', `unknown masks byte ${code}, expected 0 (fresh) or 1 (table)`);
}

export type DecodedMessage =
  | { type: typeof MessageType.EncryptedInput; message: EncryptedInputMessage }
  | { type: typeof MessageType.EncryptedOutput; message: EncryptedOutputMessage }
  | { type: typeof MessageType.Error; message: ErrorMessage };

// ---------------------------------------------------------------------------------------------
// helpers

const short = (what: string, need: number, have: number, offset: number): WireError =>
  new WireError('truncated', `message ends inside ${what}: need ${need} bytes at offset ${offset}, ${have} left`);

function resolveLimits(limits?: Partial<WireLimits>): WireLimits {
  const l = { ...DEFAULT_WIRE_LIMITS, ...limits };
  for (const k of ['maxTokens', 'maxCols', 'maxBytes'] as const) {
    if (!Number.isSafeInteger(l[k]) || l[k] < 1) throw new Error(`helora: wire limit ${k} must be a positive integer, got ${l[k]}`);
  }
  return l;
}

function checkBytesArg(bytes: Uint8Array): void {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('helora: wire: expected the message as a Uint8Array');
}

function knownParams(id: number): Readonly<WireParams> {
  const p = WIRE_PARAMS.get(id);
  if (p === undefined) {
    throw new WireError('unknown_params', `unknown parameter set id ${id} (known: ${[...WIRE_PARAMS.keys()].join(', ')})`);
  }
  return p;
}

function readHeader(r: ByteReader): WireHeader {
  r.need(WIRE_MAGIC.length, 'magic');
  for (let i = 0; i < WIRE_MAGIC.length; i++) {
    const b = r.u8('magic');
    if (b !== WIRE_MAGIC[i]) throw new WireError('bad_magic', `bad magic byte ${i}: 0x${b.toString(16)}, expected "HLRA"`);
  }
  const version = r.u16('version');
  if (version !== WIRE_VERSION) throw new WireError('bad_version', `unsupported version ${version}, expected ${WIRE_VERSION}`);
  const type = r.u8('message type');
  if (type !== MessageType.EncryptedInput && type !== MessageType.EncryptedOutput && type !== MessageType.Error) {
    throw new WireError('bad_type', `unknown message type ${type}, expected 1 (input), 2 (output) or 3 (error)`);
  }
  const paramsId = r.u8('params id');
  if (!(type === MessageType.Error && paramsId === NO_PARAMS_ID)) knownParams(paramsId);
  const requestId = r.u64('request id');
  return { version, type, paramsId, requestId };
}

/** Reads and validates the header only, for dispatch. */
export function peekHeader(bytes: Uint8Array): WireHeader {
  checkBytesArg(bytes);
  return readHeader(new ByteReader(bytes, short));
}

function expectType(h: WireHeader, want: MessageType, name: string): void {
  if (h.type !== want) throw new WireError('bad_type', `message type ${h.type}, expected ${want} (${name})`);
}

function checkMaxBytes(n: number, limits: WireLimits): void {
  if (n > limits.maxBytes) throw new WireError('too_large', `message of ${n} bytes exceeds the limit of ${limits.maxBytes} bytes`);
}

interface ProductFields {
  op: Op;
  layer: number;
  group: ProjectionGroup;
  dims: number[];
  tokens: number;
  /** Output messages only (1 for inputs). */
  terms: number;
  masks: MaskMode;
}

/** The shared op/layer/group/parts/dims/tokens fields of input and output messages. */
function readProductFields(r: ByteReader, limits: WireLimits, dir: 'input' | 'output'): ProductFields {
  const op = r.u8('op');
  if (op !== Op.Forward && op !== Op.Backward) throw new WireError('bad_field', `unknown op ${op}, expected 1 (forward) or 2 (backward)`);
  const layer = r.u16('layer');
  const group = groupFromWire(r.u8('group'));
  const parts = r.u8('parts');
  if (parts < MIN_PARTS || parts > MAX_PARTS) throw new WireError('bad_shape', `${parts} parts, expected ${MIN_PARTS}..${MAX_PARTS}`);
  const want = dir === 'input' ? inputParts(op as Op, group) : outputParts(op as Op, group);
  if (parts !== want) {
    throw new WireError('bad_shape', `${dir} of op ${op} group ${group} has ${parts} parts, expected ${want}`);
  }
  let terms = 1;
  let reserved = 2;
  if (dir === 'output') {
    terms = r.u8('terms');
    if (terms < MIN_TERMS || terms > MAX_TERMS) throw new WireError('bad_shape', `${terms} terms per part, expected ${MIN_TERMS}..${MAX_TERMS}`);
    reserved = 1;
  }
  for (let i = 0; i < reserved; i++) {
    const z = r.u8('reserved');
    if (z !== 0) throw new WireError('bad_field', `reserved byte ${i} is ${z}, expected 0`);
  }
  const masks = masksFromWire(r.u8('masks'));
  const dimName = dir === 'input' ? 'cols' : 'rows';
  const dims: number[] = [];
  for (let p = 0; p < parts; p++) {
    const d = r.u32(`${dimName}[${p}]`);
    if (d === 0) throw new WireError('bad_shape', `${dimName}[${p}] is 0, expected at least 1`);
    if (d > limits.maxCols) throw new WireError('too_large', `${dimName}[${p}] = ${d} exceeds the limit of ${limits.maxCols}`);
    dims.push(d);
  }
  const tokens = r.u32('tokens');
  if (tokens === 0) throw new WireError('bad_shape', 'tokens is 0, expected at least 1');
  if (tokens > limits.maxTokens) throw new WireError('too_large', `tokens = ${tokens} exceeds the limit of ${limits.maxTokens}`);
  return { op: op as Op, layer, group, dims, tokens, terms, masks };
}

/** Checks the payload length that the fields imply against the limits and the bytes present. */
function checkPayload(r: ByteReader, total: number, headerEnd: number, limits: WireLimits): void {
  // All factors are bounded by the limits (<= 2^53 in total), so this product is exact or, when
  // huge, still far above maxBytes.
  checkMaxBytes(total, limits);
  const payload = total - headerEnd;
  if (r.remaining < payload) throw new WireError('truncated', `payload needs ${payload} bytes, only ${r.remaining} present`);
  if (r.remaining > payload) throw new WireError('trailing_bytes', `${r.remaining - payload} bytes after the ${payload}-byte payload`);
}

function blockCount(tokens: number, n: number): number {
  return Math.ceil(tokens / n);
}

function sum(a: number[]): number {
  let s = 0;
  for (const v of a) s += v;
  return s;
}

class Writer {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  pos = 0;
  constructor(n: number) {
    this.bytes = new Uint8Array(n);
    this.view = new DataView(this.bytes.buffer);
  }
  u8(v: number): void { this.view.setUint8(this.pos, v); this.pos += 1; }
  u16(v: number): void { this.view.setUint16(this.pos, v, true); this.pos += 2; }
  u32(v: number): void { this.view.setUint32(this.pos, v, true); this.pos += 4; }
  u64(v: bigint): void { this.view.setBigUint64(this.pos, v, true); this.pos += 8; }
  raw(b: Uint8Array): void { this.bytes.set(b, this.pos); this.pos += b.length; }
}

function writeHeader(w: Writer, type: MessageType, paramsId: number, requestId: bigint): void {
  w.raw(WIRE_MAGIC);
  w.u16(WIRE_VERSION);
  w.u8(type);
  w.u8(paramsId);
  w.u64(requestId);
}

function checkRequestId(id: bigint): void {
  if (typeof id !== 'bigint' || id < 0n || id > 0xffffffffffffffffn) {
    throw new WireError('bad_field', `request id must be a bigint in [0, 2^64), got ${String(id)}`);
  }
}

function checkEncodeFields(m: { op: number; layer: number; group: ProjectionGroup; tokens: number }, dims: number[], dir: 'input' | 'output'): void {
  if (m.op !== Op.Forward && m.op !== Op.Backward) throw new WireError('bad_field', `unknown op ${m.op}`);
  if (!Object.hasOwn(PROJECTION_GROUP_SPECS, m.group)) throw new WireError('bad_field', `unknown group ${String(m.group)}`);
  if (!Number.isInteger(m.layer) || m.layer < 0 || m.layer > 0xffff) throw new WireError('bad_field', `layer ${m.layer} is not a u16`);
  const want = dir === 'input' ? inputParts(m.op as Op, m.group) : outputParts(m.op as Op, m.group);
  if (dims.length !== want) throw new WireError('bad_shape', `${dir} of op ${m.op} group ${m.group} needs ${want} parts, got ${dims.length}`);
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 1 || d > 0xffffffff) throw new WireError('bad_shape', `feature count ${d} is not in 1..2^32-1`);
  }
  if (!Number.isInteger(m.tokens) || m.tokens < 1 || m.tokens > 0xffffffff) throw new WireError('bad_shape', `tokens ${m.tokens} is not in 1..2^32-1`);
}

function checkBlocksShape(blocks: unknown[][], nBlocks: number, parts: number): void {
  if (blocks.length !== nBlocks) throw new WireError('bad_shape', `${blocks.length} payload blocks, expected ${nBlocks}`);
  for (const b of blocks) if (b.length !== parts) throw new WireError('bad_shape', `a payload block has ${b.length} parts, expected ${parts}`);
}

// ---------------------------------------------------------------------------------------------
// ENCRYPTED_INPUT

function inputHeaderBytes(parts: number): number {
  return HEADER_BYTES + FIXED_PRODUCT_FIELDS_BYTES + 4 * parts + 4 + SEED_BYTES;
}

/** Total encoded size of an ENCRYPTED_INPUT message. */
export function encryptedInputBytes(paramsId: number, cols: number[], tokens: number): number {
  const p = knownParams(paramsId);
  return inputHeaderBytes(cols.length) + blockCount(tokens, p.ringDegree) * sum(cols) * p.ringDegree * p.uploadBytes;
}

export function encodeEncryptedInput(msg: EncryptedInputMessage): Uint8Array {
  const p = knownParams(msg.paramsId);
  checkRequestId(msg.requestId);
  checkEncodeFields(msg, msg.cols, 'input');
  if (!(msg.seed instanceof Uint8Array) || msg.seed.length !== SEED_BYTES) {
    throw new WireError('bad_shape', `seed must be ${SEED_BYTES} bytes`);
  }
  if (!Object.hasOwn(MASK_CODES, msg.masks)) throw new WireError('bad_field', `unknown masks ${String(msg.masks)}`);
  if (msg.masks === 'table' && msg.seed.some((b) => b !== 0)) throw new WireError('bad_field', 'a public-mask request carries an all-zero seed');
  const nBlocks = blockCount(msg.tokens, p.ringDegree);
  checkBlocksShape(msg.blocks, nBlocks, msg.cols.length);
  for (const b of msg.blocks) {
    b.forEach((part, j) => {
      const want = msg.cols[j] * p.ringDegree * p.uploadBytes;
      if (!(part instanceof Uint8Array) || part.length !== want) {
        throw new WireError('bad_shape', `input part ${j} has ${part?.length} bytes, expected ${want}`);
      }
    });
  }
  const w = new Writer(encryptedInputBytes(msg.paramsId, msg.cols, msg.tokens));
  writeHeader(w, MessageType.EncryptedInput, msg.paramsId, msg.requestId);
  w.u8(msg.op); w.u16(msg.layer); w.u8(PROJECTION_GROUP_SPECS[msg.group].wireId); w.u8(msg.cols.length);
  w.u8(0); w.u8(0); w.u8(MASK_CODES[msg.masks]);
  for (const c of msg.cols) w.u32(c);
  w.u32(msg.tokens);
  w.raw(msg.seed);
  for (const b of msg.blocks) for (const part of b) w.raw(part);
  return w.bytes;
}

/** Decodes an ENCRYPTED_INPUT; payload parts and seed are zero-copy views into `bytes`. */
export function decodeEncryptedInput(bytes: Uint8Array, limits?: Partial<WireLimits>): EncryptedInputMessage {
  checkBytesArg(bytes);
  const lim = resolveLimits(limits);
  checkMaxBytes(bytes.length, lim);
  const r = new ByteReader(bytes, short);
  const h = readHeader(r);
  expectType(h, MessageType.EncryptedInput, 'encrypted input');
  return readInputBody(r, h, lim);
}

function readInputBody(r: ByteReader, h: WireHeader, lim: WireLimits): EncryptedInputMessage {
  const p = knownParams(h.paramsId);
  const f = readProductFields(r, lim, 'input');
  const seed = r.bytesView(SEED_BYTES, 'seed');
  if (f.masks === 'table' && seed.some((b) => b !== 0)) throw new WireError('bad_field', 'a public-mask request must carry an all-zero seed');
  const nBlocks = blockCount(f.tokens, p.ringDegree);
  const partBytes = f.dims.map((c) => c * p.ringDegree * p.uploadBytes);
  const headerEnd = r.offset;
  checkPayload(r, headerEnd + nBlocks * sum(partBytes), headerEnd, lim);
  const blocks: Uint8Array[][] = [];
  for (let b = 0; b < nBlocks; b++) blocks.push(partBytes.map((n, j) => r.bytesView(n, `block ${b} part ${j}`)));
  return { masks: f.masks, paramsId: h.paramsId, requestId: h.requestId, op: f.op, layer: f.layer, group: f.group, cols: f.dims, tokens: f.tokens, seed, blocks };
}

// ---------------------------------------------------------------------------------------------
// ENCRYPTED_OUTPUT

function outputHeaderBytes(parts: number): number {
  return HEADER_BYTES + FIXED_PRODUCT_FIELDS_BYTES + 4 * parts + 4;
}

/** Total encoded size of an ENCRYPTED_OUTPUT message. */
export function encryptedOutputBytes(paramsId: number, rows: number[], tokens: number, terms = 1, masks: MaskMode = 'fresh'): number {
  const p = knownParams(paramsId);
  return outputHeaderBytes(rows.length) + blockCount(tokens, p.ringDegree) * terms * sum(rows) * p.ringDegree * partsPerMatrix(masks) * p.downloadBytes;
}

/** Result parts per ciphertext matrix in an answer: a and b, or b alone under public masks. */
function partsPerMatrix(masks: MaskMode): number {
  return masks === 'table' ? 1 : 2;
}

function checkTerms(terms: number): void {
  if (!Number.isInteger(terms) || terms < MIN_TERMS || terms > MAX_TERMS) throw new WireError('bad_shape', `terms ${terms} is not in ${MIN_TERMS}..${MAX_TERMS}`);
}

function writeU32s(w: Writer, a: Uint32Array): void {
  if (HOST_LITTLE_ENDIAN) {
    w.raw(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  } else {
    for (let i = 0; i < a.length; i++) w.u32(a[i]);
  }
}

export function encodeEncryptedOutput(msg: EncryptedOutputMessage): Uint8Array {
  const p = knownParams(msg.paramsId);
  if (p.downloadBytes !== 4) throw new WireError('unknown_params', `parameter set ${p.id} downloads ${p.downloadBytes}-byte values; this version carries 4`);
  checkRequestId(msg.requestId);
  checkEncodeFields(msg, msg.rows, 'output');
  checkTerms(msg.terms);
  if (!Object.hasOwn(MASK_CODES, msg.masks)) throw new WireError('bad_field', `unknown masks ${String(msg.masks)}`);
  const withA = msg.masks === 'fresh';
  const nBlocks = blockCount(msg.tokens, p.ringDegree);
  checkBlocksShape(msg.blocks, nBlocks, msg.rows.length * msg.terms);
  for (const b of msg.blocks) {
    b.forEach((part, j) => {
      const want = msg.rows[Math.floor(j / msg.terms)] * p.ringDegree;
      if (!(part?.b instanceof Uint32Array) || part.b.length !== want || (withA && (!(part.a instanceof Uint32Array) || part.a.length !== want))) {
        throw new WireError('bad_shape', `output matrix ${j} must hold ${withA ? 'a and b' : 'b'} as Uint32Array of ${want} values`);
      }
    });
  }
  const w = new Writer(encryptedOutputBytes(msg.paramsId, msg.rows, msg.tokens, msg.terms, msg.masks));
  writeHeader(w, MessageType.EncryptedOutput, msg.paramsId, msg.requestId);
  w.u8(msg.op); w.u16(msg.layer); w.u8(PROJECTION_GROUP_SPECS[msg.group].wireId); w.u8(msg.rows.length);
  w.u8(msg.terms); w.u8(0); w.u8(MASK_CODES[msg.masks]);
  for (const c of msg.rows) w.u32(c);
  w.u32(msg.tokens);
  for (const b of msg.blocks) {
    for (const part of b) {
      if (withA) writeU32s(w, part.a);
      writeU32s(w, part.b);
    }
  }
  return w.bytes;
}

/**
 * Decodes an ENCRYPTED_OUTPUT. The a/b arrays are zero-copy views into `bytes` when the payload is
 * 4-byte aligned in memory (always for buffers this module encoded); otherwise the payload is copied
 * once into a fresh aligned buffer.
 */
export function decodeEncryptedOutput(bytes: Uint8Array, limits?: Partial<WireLimits>): EncryptedOutputMessage {
  checkBytesArg(bytes);
  const lim = resolveLimits(limits);
  checkMaxBytes(bytes.length, lim);
  const r = new ByteReader(bytes, short);
  const h = readHeader(r);
  expectType(h, MessageType.EncryptedOutput, 'encrypted output');
  return readOutputBody(bytes, r, h, lim);
}

function readOutputBody(bytes: Uint8Array, r: ByteReader, h: WireHeader, lim: WireLimits): EncryptedOutputMessage {
  const p = knownParams(h.paramsId);
  if (p.downloadBytes !== 4) throw new WireError('unknown_params', `parameter set ${p.id} downloads ${p.downloadBytes}-byte values; this version carries 4`);
  const f = readProductFields(r, lim, 'output');
  const nBlocks = blockCount(f.tokens, p.ringDegree);
  // One entry per (part, term), in payload order.
  const partValues: number[] = [];
  for (const rows of f.dims) for (let t = 0; t < f.terms; t++) partValues.push(rows * p.ringDegree);
  const headerEnd = r.offset;
  const perMatrix = partsPerMatrix(f.masks);
  const payloadValues = nBlocks * perMatrix * sum(partValues);
  checkPayload(r, headerEnd + payloadValues * 4, headerEnd, lim);
  const payloadBytes = r.bytesView(payloadValues * 4, 'payload');
  let words: Uint32Array;
  if (HOST_LITTLE_ENDIAN && payloadBytes.byteOffset % 4 === 0) {
    words = new Uint32Array(payloadBytes.buffer, payloadBytes.byteOffset, payloadValues);
  } else if (HOST_LITTLE_ENDIAN) {
    words = new Uint32Array(payloadBytes.slice().buffer); // size already validated against the bytes present
  } else {
    words = new Uint32Array(payloadValues);
    const dv = new DataView(bytes.buffer, payloadBytes.byteOffset, payloadBytes.byteLength);
    for (let i = 0; i < payloadValues; i++) words[i] = dv.getUint32(4 * i, true);
  }
  const blocks: OutputPart[][] = [];
  let off = 0;
  for (let b = 0; b < nBlocks; b++) {
    const parts: OutputPart[] = [];
    for (const n of partValues) {
      // public masks: no a (the client's table holds it)
      const a = perMatrix === 2 ? words.subarray(off, off + n) : words.subarray(off, off);
      off += (perMatrix - 1) * n;
      parts.push({ a, b: words.subarray(off, off + n) });
      off += n;
    }
    blocks.push(parts);
  }
  return { masks: f.masks, paramsId: h.paramsId, requestId: h.requestId, op: f.op, layer: f.layer, group: f.group, rows: f.dims, tokens: f.tokens, terms: f.terms, blocks };
}

// ---------------------------------------------------------------------------------------------
// ERROR

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** UTF-8 of s, cut to at most max bytes on a code point boundary. */
function utf8Truncated(s: string, max: number): Uint8Array {
  const all = utf8Encoder.encode(s);
  if (all.length <= max) return all;
  let end = max;
  while (end > 0 && (all[end] & 0xc0) === 0x80) end--; // do not split a multi-byte sequence
  return all.subarray(0, end);
}

/** Encodes an ERROR message; a message longer than 1024 UTF-8 bytes is truncated (on a character boundary). */
export function encodeError(msg: ErrorMessage): Uint8Array {
  if (msg.paramsId !== NO_PARAMS_ID) knownParams(msg.paramsId);
  checkRequestId(msg.requestId);
  if (!Number.isInteger(msg.code) || msg.code < 0 || msg.code > 0xffff) throw new WireError('bad_field', `error code ${msg.code} is not a u16`);
  const text = utf8Truncated(String(msg.message), MAX_ERROR_MESSAGE_BYTES);
  const w = new Writer(HEADER_BYTES + 4 + text.length);
  writeHeader(w, MessageType.Error, msg.paramsId, msg.requestId);
  w.u16(msg.code);
  w.u16(text.length);
  w.raw(text);
  return w.bytes;
}

export function decodeError(bytes: Uint8Array, limits?: Partial<WireLimits>): ErrorMessage {
  checkBytesArg(bytes);
  const lim = resolveLimits(limits);
  checkMaxBytes(bytes.length, lim);
  const r = new ByteReader(bytes, short);
  const h = readHeader(r);
  expectType(h, MessageType.Error, 'error');
  return readErrorBody(r, h, lim);
}

function readErrorBody(r: ByteReader, h: WireHeader, lim: WireLimits): ErrorMessage {
  const code = r.u16('error code');
  const len = r.u16('error message length');
  if (len > MAX_ERROR_MESSAGE_BYTES) throw new WireError('too_large', `error message of ${len} bytes, expected at most ${MAX_ERROR_MESSAGE_BYTES}`);
  checkPayload(r, r.offset + len, r.offset, lim);
  const raw = r.bytesView(len, 'error message');
  let message: string;
  try {
    message = utf8Decoder.decode(raw);
  } catch {
    throw new WireError('bad_field', 'error message is not valid UTF-8');
  }
  return { paramsId: h.paramsId, requestId: h.requestId, code, message };
}

// ---------------------------------------------------------------------------------------------

/** Decodes any known message, dispatching on its header. */
export function decodeMessage(bytes: Uint8Array, limits?: Partial<WireLimits>): DecodedMessage {
  checkBytesArg(bytes);
  const lim = resolveLimits(limits);
  checkMaxBytes(bytes.length, lim);
  const r = new ByteReader(bytes, short);
  const h = readHeader(r);
  switch (h.type) {
    case MessageType.EncryptedInput: return { type: h.type, message: readInputBody(r, h, lim) };
    case MessageType.EncryptedOutput: return { type: h.type, message: readOutputBody(bytes, r, h, lim) };
    case MessageType.Error: return { type: h.type, message: readErrorBody(r, h, lim) };
  }
}
