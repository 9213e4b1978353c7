// The compute provider's model: the projection weights of a Hugging Face folder, quantized per
// output channel once at start, registered as encrypted projection groups, plus the public model
// hash and info that clients check and use.
//
// Model hash (hex sha256) over this canonical byte string, which anyone with the weights can rebuild:
//   "helora-model-hash-v1\n" (ASCII) | numLayers u32
//   for layer 0..L-1, for group in [qkv, o, gate_up, down], for each matrix of the group in HF order
//   (q, k, v | o | gate, up | down):
//     rows u32 | cols u32 | values: rows*cols int8, row-major | scales: rows float32
// All integers and floats little-endian. The quantization is deterministic
// (src/quant/quantize.ts quantizeWeightsPerChannel), so the same folder always gives the same hash.

import { createHash, type Hash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_PARAMS, type RlweParams } from '../crypto/index.js';
import { KernelPool } from '../kernels/pool.js';
import { copyEncryptedOutput, HeLinearServer, localBackend, poolBackend } from '../linear/server.js';
import type { EncryptedInput, EncryptedOutput } from '../linear/types.js';
import type { LlamaConfig } from '../model/config.js';
import { groupWeights, type TensorMap } from '../model/frozen.js';
import { groupShapes, parseProjectionWeightName, PROJECTION_GROUP_SPECS, PROJECTION_GROUPS, type ProjectionGroup } from '../model/projections.js';
import { loadModelFolder } from '../model/loader.js';
import { DEFAULT_ACT_BITS, quantizeWeightsPerChannel, type QuantizedWeights } from '../quant/quantize.js';
import { HOST_LITTLE_ENDIAN } from '../util/bytes.js';
import { shapeOf, type ModelInfo } from './model-info.js';
import {
  layerFileName, layerTableLayout, MASK_TABLE_VERSION, sha256Hex, tableFolder, tableMaskSeed, wordsToBytes, writeFileAtomic, type LayerTableInfo,
} from './mask-tables.js';

export const MODEL_HASH_DOMAIN = 'helora-model-hash-v1\n';
/** Default most tokens per request: two ciphertext column blocks of N = 2048. */
export const DEFAULT_MAX_TOKENS = 4096;

/** Quantized projection weights of every layer: layers[l][group] = matrices in HF order. */
export interface QuantizedModel {
  config: LlamaConfig;
  layers: Record<ProjectionGroup, QuantizedWeights[]>[];
  hash: string;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function f32Bytes(a: Float32Array): Uint8Array {
  if (HOST_LITTLE_ENDIAN) return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const b = Buffer.alloc(a.length * 4);
  for (let i = 0; i < a.length; i++) b.writeFloatLE(a[i], 4 * i);
  return b;
}

/** Feeds one layer's matrices into a model hash (see the encoding above). */
function hashLayer(h: Hash, layer: Record<ProjectionGroup, QuantizedWeights[]>): void {
  for (const g of PROJECTION_GROUPS) {
    for (const w of layer[g]) {
      h.update(u32(w.rows));
      h.update(u32(w.cols));
      h.update(new Uint8Array(w.values.buffer, w.values.byteOffset, w.values.byteLength));
      h.update(f32Bytes(w.scales));
    }
  }
}

/** The model hash of already quantized layers (see the encoding above). */
export function modelHash(layers: Record<ProjectionGroup, QuantizedWeights[]>[]): string {
  const hasher = new ModelHasher(layers.length);
  for (const layer of layers) hasher.add(layer);
  return hasher.digest();
}

/** The model hash fed one layer at a time, in order (so the whole quantized model need not be held). */
class ModelHasher {
  private readonly h = createHash('sha256');
  private added = 0;

  constructor(private readonly numLayers: number) {
    this.h.update(MODEL_HASH_DOMAIN, 'ascii');
    this.h.update(u32(numLayers));
  }

  add(layer: Record<ProjectionGroup, QuantizedWeights[]>): void {
    hashLayer(this.h, layer);
    this.added++;
  }

  digest(): string {
    if (this.added !== this.numLayers) throw new Error(`helora: model hash of ${this.added} layers, expected ${this.numLayers}`);
    return this.h.digest('hex');
  }
}

/** Quantizes the projection groups of one layer from an HF tensor map. */
export function quantizeLayer(config: LlamaConfig, tensors: TensorMap, layer: number): Record<ProjectionGroup, QuantizedWeights[]> {
  const out = {} as Record<ProjectionGroup, QuantizedWeights[]>;
  for (const g of PROJECTION_GROUPS) {
    const shapes = groupShapes(config, g);
    out[g] = groupWeights(config, tensors, layer, g).map((w, j) => quantizeWeightsPerChannel(w, shapes[j][0], shapes[j][1]));
  }
  return out;
}

/** Quantizes every projection of an in-memory tensor map. */
export function quantizeModel(config: LlamaConfig, tensors: TensorMap): QuantizedModel {
  const layers = Array.from({ length: config.numLayers }, (_, l) => quantizeLayer(config, tensors, l));
  return { config, layers, hash: modelHash(layers) };
}

/**
 * Loads and quantizes the projection weights of a model folder one layer at a time, so only one
 * layer's fp32 weights are in memory at once (embeddings, norms and the LM head are never read).
 */
export function loadQuantizedModel(dir: string): QuantizedModel {
  const { config, layers } = quantizedLayersOfFolder(dir);
  const all = [...layers];
  return { config, layers: all, hash: modelHash(all) };
}

/**
 * The config of a model folder and its quantized layers, loaded one at a time as they are
 * iterated (only one layer's fp32 and int8 weights are held here at once).
 */
function quantizedLayersOfFolder(dir: string): { config: LlamaConfig; layers: Iterable<Record<ProjectionGroup, QuantizedWeights[]>> } {
  const { config } = loadModelFolder(dir, () => false); // config.json only (and a header check of the files)
  function* layers(): Generator<Record<ProjectionGroup, QuantizedWeights[]>> {
    for (let l = 0; l < config.numLayers; l++) {
      const { tensors } = loadModelFolder(dir, (name) => parseProjectionWeightName(name)?.layer === l);
      yield quantizeLayer(config, tensors, l);
    }
  }
  return { config, layers: layers() };
}

/** The model hash of a folder, as a client recomputes it to check a server's claim (one layer in memory at a time). */
export function modelHashOfFolder(dir: string): string {
  const { config, layers } = quantizedLayersOfFolder(dir);
  const hasher = new ModelHasher(config.numLayers);
  for (const layer of layers) hasher.add(layer);
  return hasher.digest();
}

/** A request the server refuses because of its content (unknown layer, wrong shapes). */
export class BadRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BadRequestError';
  }
}

export interface ModelServerOptions {
  /** Worker threads for the products (default: every core); 0 runs them on the calling thread. */
  threads?: number;
  /** Use this pool instead of creating one (it is not closed by close()). */
  pool?: KernelPool;
  actBits?: number;
  params?: RlweParams;
  maxTokens?: number;
  /**
   * Folder under which the public mask tables are kept (one subfolder per model hash, parameter
   * set and table version; computed at start when missing). false: offer no tables (clients use
   * fresh masks). Default: helora-mask-tables in the system temp folder.
   */
  maskTables?: string | false;
}

function groupKey(layer: number, group: ProjectionGroup): string {
  return `${layer}.${group}`;
}

/**
 * Every layer's mask table in `folder`: read back when present (they are written atomically),
 * computed from the registered weights otherwise. Returns each layer's size and SHA-256.
 */
async function ensureMaskTables(he: HeLinearServer, config: LlamaConfig, modelHash: string, params: RlweParams, actBits: number, folder: string): Promise<LayerTableInfo[]> {
  const layout = layerTableLayout(config, params, actBits);
  mkdirSync(folder, { recursive: true });
  const out: LayerTableInfo[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const path = join(folder, layerFileName(l));
    if (existsSync(path) && statSync(path).size === layout.bytes) {
      out.push({ bytes: layout.bytes, sha256: sha256Hex(readFileSync(path)) });
      continue;
    }
    const words = new Uint32Array(layout.words);
    for (const e of layout.entries) {
      const terms = await he.maskTable(groupKey(l, e.group), e.direction, tableMaskSeed(params, modelHash, l, e.group, e.direction));
      terms.forEach((t, i) => words.set(t, e.offsetWords + i * t.length));
    }
    const bytes = wordsToBytes(words);
    writeFileAtomic(path, bytes);
    out.push({ bytes: layout.bytes, sha256: sha256Hex(bytes) });
  }
  return out;
}

/** The server side of every projection group of a model. */
export class ModelServer {
  readonly info: ModelInfo;
  private constructor(
    readonly config: LlamaConfig,
    readonly hash: string,
    readonly params: RlweParams,
    private readonly he: HeLinearServer,
    private readonly ownedPool: KernelPool | null,
    info: ModelInfo,
    /** The folder of this model's mask tables, or null when none are offered. */
    readonly maskTableFolder: string | null,
  ) {
    this.info = info;
  }

  /** Registers every group of a quantized model (the weights go to the workers once). */
  static async create(model: QuantizedModel, opts: ModelServerOptions = {}): Promise<ModelServer> {
    return ModelServer.register(model.config, model.layers, () => model.hash, opts);
  }

  /**
   * Registers the layers as they are iterated (a layer's int8 weights can be dropped once the
   * workers hold them); `hash` is asked for after the last layer.
   */
  private static async register(config: LlamaConfig, layers: Iterable<Record<ProjectionGroup, QuantizedWeights[]>>, hash: () => string, opts: ModelServerOptions): Promise<ModelServer> {
    const params = opts.params ?? DEFAULT_PARAMS;
    const actBits = opts.actBits ?? DEFAULT_ACT_BITS;
    const maxTokens = opts.maxTokens ?? DEFAULT_MAX_TOKENS;
    if (!Number.isSafeInteger(maxTokens) || maxTokens < 1) throw new Error(`helora: maxTokens must be a positive integer, got ${maxTokens}`);
    let owned: KernelPool | null = null;
    let pool = opts.pool ?? null;
    if (!pool && opts.threads !== 0) pool = owned = await KernelPool.create(opts.threads);
    try {
      const he = new HeLinearServer({ params, actBits, backend: pool ? poolBackend(pool) : localBackend() });
      const scales: Record<ProjectionGroup, Float32Array[]>[] = [];
      for (const layer of layers) {
        const l = scales.length;
        if (l >= config.numLayers) throw new Error(`helora: more than the ${config.numLayers} layers of the config`);
        for (const g of PROJECTION_GROUPS) {
          await he.registerGroup(groupKey(l, g), layer[g].map((w) => ({ values: w.values, rows: w.rows, cols: w.cols })));
        }
        scales.push(Object.fromEntries(PROJECTION_GROUPS.map((g) => [g, layer[g].map((w) => w.scales)])) as Record<ProjectionGroup, Float32Array[]>);
      }
      if (scales.length !== config.numLayers) throw new Error(`helora: ${scales.length} layers registered, the config has ${config.numLayers}`);
      const modelHash = hash();
      const root = opts.maskTables ?? join(tmpdir(), 'helora-mask-tables');
      const folder = root === false ? null : tableFolder(root, modelHash, params);
      const maskTables = folder ? { version: MASK_TABLE_VERSION, layers: await ensureMaskTables(he, config, modelHash, params, actBits, folder) } : null;
      const info: ModelInfo = { hash: modelHash, paramsId: params.id, actBits, maxTokens, shape: shapeOf(config), scales, maskTables };
      return new ModelServer(config, modelHash, params, he, owned, info, folder);
    } catch (e) {
      await owned?.close();
      throw e;
    }
  }

  /**
   * Loads, quantizes and registers a model folder one layer at a time: the quantized model is never
   * held whole (at Llama-3.2-1B that would be ~1 GB on top of the workers' copies).
   */
  static async fromFolder(dir: string, opts: ModelServerOptions = {}): Promise<ModelServer> {
    const { config, layers } = quantizedLayersOfFolder(dir);
    const hasher = new ModelHasher(config.numLayers);
    function* hashed(): Generator<Record<ProjectionGroup, QuantizedWeights[]>> {
      for (const layer of layers) {
        hasher.add(layer);
        yield layer;
      }
    }
    return ModelServer.register(config, hashed(), () => hasher.digest(), opts);
  }

  get maxTokens(): number {
    return this.info.maxTokens;
  }

  /** Input features of each part of a request for (direction, group). */
  inputCols(direction: 'forward' | 'backward', group: ProjectionGroup): number[] {
    const dims = groupShapes(this.config, group);
    return direction === 'forward' ? [dims[0][1]] : dims.map(([rows]) => rows);
  }

  /** Validates and runs one product. Content errors throw BadRequestError. */
  async product(direction: 'forward' | 'backward', layer: number, group: ProjectionGroup, input: EncryptedInput): Promise<EncryptedOutput> {
    return this.productInPlace(direction, layer, group, input, copyEncryptedOutput);
  }

  /**
   * product() handed to `consume` (e.g. the encoder of the answer) while its matrices are still
   * views of the kernels' reused result memory: no copy of the result; consume must not keep them.
   */
  async productInPlace<T>(direction: 'forward' | 'backward', layer: number, group: ProjectionGroup, input: EncryptedInput, consume: (out: EncryptedOutput) => T): Promise<T> {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.config.numLayers) {
      throw new BadRequestError(`helora: unknown layer ${layer}: this model has layers 0..${this.config.numLayers - 1}`);
    }
    if (!Object.hasOwn(PROJECTION_GROUP_SPECS, group)) throw new BadRequestError(`helora: unknown projection group ${String(group)}`);
    if (input.paramsId !== this.params.id) throw new BadRequestError(`helora: request uses parameter set ${input.paramsId}, this server runs ${this.params.id}`);
    if (input.T > this.maxTokens) throw new BadRequestError(`helora: request has ${input.T} tokens, this server accepts at most ${this.maxTokens} per request`);
    const want = this.inputCols(direction, group);
    if (input.partCols.length !== want.length || input.partCols.some((c, i) => c !== want[i])) {
      throw new BadRequestError(`helora: ${direction} of layer ${layer} ${group} needs input parts of [${want.join(', ')}] features, got [${input.partCols.join(', ')}]`);
    }
    if (input.masks === 'table' && !this.maskTableFolder) throw new BadRequestError('helora: this server offers no mask tables; use fresh masks');
    const key = groupKey(layer, group);
    const seed = input.masks === 'table' ? tableMaskSeed(this.params, this.hash, layer, group, direction) : undefined;
    return this.he.productInPlace(key, direction, input, consume, seed);
  }

  /** The path of one layer's mask table file (the server's own file; null when no tables are offered). */
  maskTablePath(layer: number): string | null {
    if (!this.maskTableFolder || !Number.isInteger(layer) || layer < 0 || layer >= this.config.numLayers) return null;
    return join(this.maskTableFolder, layerFileName(layer));
  }

  async close(): Promise<void> {
    await this.ownedPool?.close();
  }
}
