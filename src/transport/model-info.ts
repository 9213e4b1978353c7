// Public model information a server publishes at GET /v1/model-info (JSON), and the client's strict
// parser for it. Everything here is public: the model hash, the RLWE parameter set, the shapes and
// the per-output-channel weight scales (the client needs them to dequantize W x).
//
// JSON layout (format "helora-model-info", version 1):
//   { format, version, hash: 64 hex chars, params_id, act_bits, max_tokens,
//     config: { architecture, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim, vocab_size },
//     scales: [ per layer: { qkv: [b64, b64, b64], o: [b64], gate_up: [b64, b64], down: [b64] } ] }
// where each b64 is the base64 of the matrix's row scales as little-endian float32, each finite and in
// [MIN_WEIGHT_SCALE, MAX_WEIGHT_SCALE] = [2^-40, 2^20] (src/quant/quantize.ts).

import type { LlamaConfig } from '../model/config.js';
import { groupShapes, PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import { MAX_WEIGHT_SCALE, MIN_WEIGHT_SCALE } from '../quant/quantize.js';
import { HOST_LITTLE_ENDIAN } from '../util/bytes.js';
import type { LayerTableInfo } from './mask-tables.js';

export const MODEL_INFO_FORMAT = 'helora-model-info';
export const MODEL_INFO_VERSION = 1;
/** A model-info document larger than this is refused before parsing (Llama-3-8B needs ~8 MB). */
export const MAX_MODEL_INFO_BYTES = 64 * 1024 * 1024;
/** Sanity bounds on the shapes a server may announce (validated before anything is allocated). */
const MAX_DIM = 1 << 20;
const MAX_LAYERS = 4096;

/** The shape-relevant part of a LlamaConfig (the architecture as announced, checked by the client). */
export type ModelShape = Pick<LlamaConfig, 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'vocabSize'>
  & { architecture: string };

export interface ModelInfo {
  /** sha256 (hex) of the canonical encoding of every quantized projection weight and scale (model-server.ts modelHash). */
  hash: string;
  paramsId: number;
  /** Activation / gradient bit width the server's term split assumes; the client must use the same. */
  actBits: number;
  /** Most tokens per request the server accepts. */
  maxTokens: number;
  shape: ModelShape;
  /** scales[layer][group][matrix]: one float per output row. */
  scales: Record<ProjectionGroup, Float32Array[]>[];
  /** The public mask tables the server offers (mask-tables.ts), one file per layer; null: none. */
  maskTables: { version: number; layers: LayerTableInfo[] } | null;
}

export function shapeOf(config: LlamaConfig): ModelShape {
  return {
    architecture: config.architecture, hiddenSize: config.hiddenSize, intermediateSize: config.intermediateSize,
    numLayers: config.numLayers, numHeads: config.numHeads, numKvHeads: config.numKvHeads, headDim: config.headDim, vocabSize: config.vocabSize,
  };
}


function f32ToBase64(a: Float32Array): string {
  if (HOST_LITTLE_ENDIAN) return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
  const b = Buffer.alloc(a.length * 4);
  for (let i = 0; i < a.length; i++) b.writeFloatLE(a[i], i * 4);
  return b.toString('base64');
}

export function modelInfoToJson(info: ModelInfo): string {
  const s = info.shape;
  return JSON.stringify({
    format: MODEL_INFO_FORMAT,
    version: MODEL_INFO_VERSION,
    hash: info.hash,
    params_id: info.paramsId,
    act_bits: info.actBits,
    max_tokens: info.maxTokens,
    config: {
      architecture: s.architecture, hidden_size: s.hiddenSize, intermediate_size: s.intermediateSize, num_layers: s.numLayers,
      num_heads: s.numHeads, num_kv_heads: s.numKvHeads, head_dim: s.headDim, vocab_size: s.vocabSize,
    },
    scales: info.scales.map((layer) => Object.fromEntries(PROJECTION_GROUPS.map((g) => [g, layer[g].map(f32ToBase64)]))),
    ...(info.maskTables ? { mask_tables: { version: info.maskTables.version, layers: info.maskTables.layers.map((t) => ({ bytes: t.bytes, sha256: t.sha256 })) } } : {}),
  });
}

function bad(msg: string): never {
  throw new Error(`helora: model info from the server is invalid: ${msg}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function intField(o: Record<string, unknown>, key: string, min: number, max: number): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) bad(`"${key}" must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return v;
}

const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeScales(v: unknown, rows: number, where: string): Float32Array {
  if (typeof v !== 'string') bad(`${where} must be a base64 string`);
  // Length is checked before decoding: base64 of rows * 4 bytes has exactly this many characters.
  if (v.length !== Math.ceil((rows * 4) / 3) * 4 || !B64_RE.test(v)) bad(`${where} must be base64 of ${rows} float32 values`);
  const bytes = Buffer.from(v, 'base64');
  if (bytes.length !== rows * 4) bad(`${where} decodes to ${bytes.length} bytes, expected ${rows * 4}`);
  const out = new Float32Array(rows);
  for (let i = 0; i < rows; i++) {
    const s = bytes.readFloatLE(i * 4);
    if (!(Number.isFinite(s) && s >= MIN_WEIGHT_SCALE && s <= MAX_WEIGHT_SCALE)) bad(`${where}[${i}] = ${s} is not a positive finite scale in [2^-40, 2^20]`);
    out[i] = s;
  }
  return out;
}

/** Parses and validates a model-info document (untrusted bytes from the network). */
export function parseModelInfo(text: string): ModelInfo {
  if (text.length > MAX_MODEL_INFO_BYTES) bad(`document of ${text.length} characters exceeds ${MAX_MODEL_INFO_BYTES}`);
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    bad(`not JSON (${(e as Error).message})`);
  }
  if (!isObject(j)) bad('expected a JSON object');
  if (j.format !== MODEL_INFO_FORMAT) bad(`format ${JSON.stringify(j.format)}, expected "${MODEL_INFO_FORMAT}"`);
  if (j.version !== MODEL_INFO_VERSION) bad(`version ${JSON.stringify(j.version)}, expected ${MODEL_INFO_VERSION}`);
  if (typeof j.hash !== 'string' || !/^[0-9a-f]{64}$/.test(j.hash)) bad('"hash" must be 64 lowercase hex characters');
  const paramsId = intField(j, 'params_id', 1, 255);
  const actBits = intField(j, 'act_bits', 2, 16);
  const maxTokens = intField(j, 'max_tokens', 1, 1 << 24);
  if (!isObject(j.config)) bad('"config" must be an object');
  const c = j.config;
  if (typeof c.architecture !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(c.architecture)) bad('"config.architecture" must be a short name ([A-Za-z0-9_.-], at most 64 characters)');
  const shape: ModelShape = {
    architecture: c.architecture,
    hiddenSize: intField(c, 'hidden_size', 1, MAX_DIM),
    intermediateSize: intField(c, 'intermediate_size', 1, MAX_DIM),
    numLayers: intField(c, 'num_layers', 1, MAX_LAYERS),
    numHeads: intField(c, 'num_heads', 1, MAX_DIM),
    numKvHeads: intField(c, 'num_kv_heads', 1, MAX_DIM),
    headDim: intField(c, 'head_dim', 1, MAX_DIM),
    vocabSize: intField(c, 'vocab_size', 1, 1 << 24),
  };
  if (shape.numHeads * shape.headDim > MAX_DIM) bad('num_heads * head_dim is too large');
  if (!Array.isArray(j.scales) || j.scales.length !== shape.numLayers) bad(`"scales" must be an array of ${shape.numLayers} layers`);
  const scales = j.scales.map((layer: unknown, l: number) => {
    if (!isObject(layer)) bad(`scales[${l}] must be an object`);
    const out = {} as Record<ProjectionGroup, Float32Array[]>;
    for (const g of PROJECTION_GROUPS) {
      const dims = groupShapes(shape, g);
      const arr = layer[g];
      if (!Array.isArray(arr) || arr.length !== dims.length) bad(`scales[${l}].${g} must list ${dims.length} matrices`);
      out[g] = dims.map(([rows], m) => decodeScales(arr[m], rows, `scales[${l}].${g}[${m}]`));
    }
    return out;
  });
  return { hash: j.hash, paramsId, actBits, maxTokens, shape, scales, maskTables: parseMaskTables(j.mask_tables, shape.numLayers) };
}

/** The optional mask-table listing: one { bytes, sha256 } per layer (sizes are checked against the layout by the client). */
function parseMaskTables(v: unknown, numLayers: number): ModelInfo['maskTables'] {
  if (v === undefined || v === null) return null;
  if (!isObject(v)) bad('"mask_tables" must be an object');
  const version = intField(v, 'version', 1, 255);
  if (!Array.isArray(v.layers) || v.layers.length !== numLayers) bad(`"mask_tables.layers" must list ${numLayers} layers`);
  const layers = v.layers.map((t: unknown, l: number) => {
    if (!isObject(t)) bad(`mask_tables.layers[${l}] must be an object`);
    if (typeof t.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(t.sha256)) bad(`mask_tables.layers[${l}].sha256 must be 64 lowercase hex characters`);
    return { bytes: intField(t, 'bytes', 1, 2 ** 40), sha256: t.sha256 };
  });
  return { version, layers };
}

/** Throws unless a local config.json describes the same shapes as the server's model. */
export function checkShapeMatches(info: ModelInfo, config: LlamaConfig): void {
  checkShapesEqual(info.shape, shapeOf(config));
}

/** Throws unless the server's shapes equal the local ones (the architecture name aside). */
export function checkShapesEqual(server: ModelShape, local: ModelShape): void {
  for (const k of Object.keys(local) as (keyof ModelShape)[]) {
    if (k === 'architecture') continue;
    if (local[k] !== server[k]) throw new Error(`helora: the server's model has ${k} = ${server[k]}, the local config.json says ${local[k]}`);
  }
}
