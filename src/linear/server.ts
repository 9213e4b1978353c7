// The server's half of an encrypted projection group: public int8 weights, products on ciphertexts.
//
// Forward  (q/k/v, gate/up share one input): the matrices are stacked by rows, so one limb GEMM
//          answers all of them; each output is a contiguous row range of the result.
// Backward (sum_j W_j^T dy_j): the transposed matrices are stacked along K and the inputs dy_j
//          arrive stacked the same way, so the sum is one GEMM too.
// Products whose K exceeds the plaintext headroom are split into K-chunk terms (layout.ts).

import { DEFAULT_PARAMS, expandMask, MASK_STREAM_ALIGN, MaskStream, maskBytes, maskStreamPieces, maxInnerDim, uploadBytes, type RlweParams } from '../crypto/index.js';
import { DEFAULT_ACT_BITS, WEIGHT_BITS } from '../quant/quantize.js';
import { ZqWeights, zqLayout, zqMatmul, type ZqModulus } from '../kernels/zq-matmul.js';
import type { KernelPool } from '../kernels/pool.js';
import { blockCount, featureChunks, type FeatureChunk } from './layout.js';
import type { CipherMatrix, EncryptedInput, EncryptedOutput, Int8Matrix, ProductDirection } from './types.js';

/** Where the limb GEMMs run: this thread, or a worker pool holding the weights. */
export interface ZqBackend {
  register(w: Int8Array, rows: number, cols: number): Promise<number>;
  /** Reused memory that matmul reads without a copy of its own (the pool's shared scratch); absent: ordinary memory. */
  scratch?(bytes: number): { view: Uint8Array; release: () => void };
  matmul(modulus: ZqModulus, handle: number, aBytes: Uint8Array, bBytes: Uint8Array, N: number): Promise<CipherMatrixPair>;
  /** One part alone: 'a' = W·A (a mask table), 'b' = W·B (a public-mask request). */
  matmulPart(modulus: ZqModulus, handle: number, part: 'a' | 'b', bytes: Uint8Array, N: number): Promise<Uint32Array>;
  /**
   * Fills scratch views with AES-128-CTR key stream, the pieces in parallel (`threads` of them at
   * once); absent: the masks are expanded on the calling thread.
   */
  keystreamInto?(key: Uint8Array, pieces: { iv: Uint8Array; dst: Uint8Array }[]): Promise<void>;
  threads?: number;
}
interface CipherMatrixPair {
  aOut: Uint32Array;
  bOut: Uint32Array;
  /** Present when the result lives in memory the backend reuses: call it once the result has been read. */
  release?: () => void;
}

/** Runs the products on the calling thread (tests, small jobs). */
export function localBackend(): ZqBackend {
  const weights: ZqWeights[] = [];
  return {
    async register(w, rows, cols) {
      weights.push(ZqWeights.pack(w, rows, cols));
      return weights.length - 1;
    },
    async matmul(modulus, handle, aBytes, bBytes, N) {
      const w = weights[handle];
      const aOut = new Uint32Array(w.rows * N);
      const bOut = new Uint32Array(w.rows * N);
      zqMatmul(modulus, w, aBytes, bBytes, N, aOut, bOut);
      return { aOut, bOut };
    },
    async matmulPart(modulus, handle, part, bytes, N) {
      // The local kernel computes both parts in one pass: the other part runs on zeros.
      const l = zqLayout(modulus);
      const zeros = new Uint8Array((bytes.length / (part === 'a' ? l.aBytes : l.bBytes)) * (part === 'a' ? l.bBytes : l.aBytes));
      const r = await this.matmul(modulus, handle, part === 'a' ? bytes : zeros, part === 'a' ? zeros : bytes, N);
      return part === 'a' ? r.aOut : r.bOut;
    },
  };
}

/** Runs the products on every core; each worker keeps its row shard of the weights. */
export function poolBackend(pool: KernelPool): ZqBackend {
  return {
    register: (w, rows, cols) => pool.registerZq(w, rows, cols),
    matmul: (modulus, handle, aBytes, bBytes, N) => pool.zqMatmulShared(modulus, handle, aBytes, bBytes, N),
    scratch: (bytes) => pool.sharedScratch(bytes),
    // The masks of a fresh-mask request, expanded on every worker instead of the main thread.
    keystreamInto: (key, pieces) => pool.aesCtrInto(key, pieces),
    threads: pool.threads,
    // Native kernels compute the asked part alone (the WebAssembly one both, on zeros).
    matmulPart: (modulus, handle, part, bytes, N) => pool.zqMatmulPart(modulus, handle, part, bytes, N),
  };
}

/** The a part of a public-mask answer: absent (the client's table holds W·A). */
const NO_A = new Uint32Array(0);

interface ChunkMatrix {
  chunk: FeatureChunk;
  handle: number;
}

interface RegisteredGroup {
  /** Input features of the forward product (shared by every part). */
  inDim: number;
  /** Output rows of each part. */
  partRows: number[];
  forward: ChunkMatrix[];
  backward: ChunkMatrix[];
}

export interface HeServerOptions {
  params?: RlweParams;
  backend?: ZqBackend;
  /** Activation / gradient bit width the clients use: bounds the K of one exact term. */
  actBits?: number;
}

export class HeLinearServer {
  readonly params: RlweParams;
  readonly actBits: number;
  private readonly backend: ZqBackend;
  private readonly groups = new Map<string, RegisteredGroup>();

  constructor(opts: HeServerOptions = {}) {
    this.params = opts.params ?? DEFAULT_PARAMS;
    this.actBits = opts.actBits ?? DEFAULT_ACT_BITS;
    this.backend = opts.backend ?? localBackend();
  }

  /** Largest K of one exact term for the configured bit widths. */
  get maxTermK(): number {
    return maxInnerDim(this.params, this.actBits, WEIGHT_BITS);
  }

  /** Registers the matrices of one group (all with the same input features) under a key. */
  async registerGroup(key: string, parts: Int8Matrix[]): Promise<void> {
    if (this.groups.has(key)) throw new Error(`helora: projection group ${key} is already registered`);
    if (parts.length === 0) throw new Error(`helora: projection group ${key} has no matrices`);
    const inDim = parts[0].cols;
    for (const p of parts) {
      if (p.cols !== inDim) throw new Error(`helora: group ${key} mixes input sizes ${inDim} and ${p.cols}`);
      if (p.values.length !== p.rows * p.cols) throw new Error(`helora: group ${key}: weight length ${p.values.length} != ${p.rows}x${p.cols}`);
    }
    const partRows = parts.map((p) => p.rows);
    const outDim = partRows.reduce((s, r) => s + r, 0);
    const maxK = this.maxTermK;

    // Forward: rows stacked, columns cut into K-chunks.
    const forward: ChunkMatrix[] = [];
    for (const chunk of featureChunks(inDim, maxK)) {
      const kc = chunk.end - chunk.start;
      const w = new Int8Array(outDim * kc);
      let row = 0;
      for (const p of parts) {
        for (let o = 0; o < p.rows; o++, row++) w.set(p.values.subarray(o * inDim + chunk.start, o * inDim + chunk.end), row * kc);
      }
      forward.push({ chunk, handle: await this.backend.register(w, outDim, kc) });
    }
    // Backward: [W_1^T | W_2^T | ...] (inDim x outDim), cut into K-chunks over the stacked outputs.
    const backward: ChunkMatrix[] = [];
    for (const chunk of featureChunks(outDim, maxK)) {
      const kc = chunk.end - chunk.start;
      const w = new Int8Array(inDim * kc);
      for (let k = chunk.start; k < chunk.end; k++) {
        const { part, row } = locateRow(parts, k);
        const src = part.values;
        for (let i = 0; i < inDim; i++) w[i * kc + (k - chunk.start)] = src[row * inDim + i];
      }
      backward.push({ chunk, handle: await this.backend.register(w, inDim, kc) });
    }
    this.groups.set(key, { inDim, partRows, forward, backward });
  }

  /** The shapes a client needs to talk to a group. */
  groupShape(key: string): { inDim: number; partRows: number[] } {
    const g = this.group(key);
    return { inDim: g.inDim, partRows: [...g.partRows] };
  }

  /** tableSeed: the product's public mask seed (transport/mask-tables.ts), needed by a 'table' request. */
  async forward(key: string, input: EncryptedInput, tableSeed?: Uint8Array): Promise<EncryptedOutput> {
    return this.productInPlace(key, 'forward', input, copyEncryptedOutput, tableSeed);
  }

  async backward(key: string, input: EncryptedInput, tableSeed?: Uint8Array): Promise<EncryptedOutput> {
    return this.productInPlace(key, 'backward', input, copyEncryptedOutput, tableSeed);
  }

  /**
   * The public mask table of one product: W·A per K-chunk term (rows x N each, rounded like any
   * answer), A expanded from tableSeed. Public: W and A are.
   */
  async maskTable(key: string, direction: ProductDirection, tableSeed: Uint8Array): Promise<Uint32Array[]> {
    const g = this.group(key);
    const chunks = direction === 'forward' ? g.forward : g.backward;
    const terms: Uint32Array[] = [];
    for (const c of chunks) {
      const mask = await this.chunkMask(tableSeed, 0, c.chunk);
      try {
        terms.push(await this.backend.matmulPart(this.params, c.handle, 'a', mask.view, this.params.ringDegree));
      } finally {
        mask.release();
      }
    }
    return terms;
  }

  /**
   * The product handed to `consume` while its matrices may still be views of the kernels' reused
   * result memory (no copy: the server encodes its answer straight from there); that memory is
   * reused once consume returns, so consume must not keep the views.
   */
  async productInPlace<T>(key: string, direction: ProductDirection, input: EncryptedInput, consume: (out: EncryptedOutput) => T, tableSeed?: Uint8Array): Promise<T> {
    const releases: (() => void)[] = [];
    try {
      const out = await this.product(key, direction, input, releases, tableSeed);
      return consume(out);
    } finally {
      for (const release of releases) release();
    }
  }

  private group(key: string): RegisteredGroup {
    const g = this.groups.get(key);
    if (!g) throw new Error(`helora: unknown projection group ${key}`);
    return g;
  }

  /**
   * The masks a_i of one K-chunk of a column block (expandMask's bytes for features
   * [chunk.start, chunk.end)), written straight into the backend's scratch when it has one.
   */
  private async chunkMask(seed: Uint8Array, blk: number, chunk: FeatureChunk): Promise<{ view: Uint8Array; release: () => void }> {
    const N = this.params.ringDegree, aBytes = maskBytes(this.params);
    const offset = chunk.start * N * aBytes, bytes = (chunk.end - chunk.start) * N * aBytes;
    if (!this.backend.scratch || offset % MASK_STREAM_ALIGN !== 0) {
      return { view: expandMask(this.params, seed, blk, chunk.end).subarray(offset), release: () => undefined };
    }
    const scratch = this.backend.scratch(bytes);
    try {
      if (this.backend.keystreamInto) {
        const pieces = maskStreamPieces(blk, offset, bytes, this.backend.threads ?? 1);
        await this.backend.keystreamInto(seed, pieces.map((p) => ({ iv: p.iv, dst: scratch.view.subarray(p.start, p.start + p.length) })));
      } else {
        new MaskStream(seed, blk, offset).nextInto(scratch.view);
      }
    } catch (e) {
      scratch.release();
      throw e;
    }
    return scratch;
  }

  /** The product; the release of every result held in reused memory is pushed onto `releases`. */
  private async product(key: string, direction: ProductDirection, input: EncryptedInput, releases: (() => void)[], tableSeed?: Uint8Array): Promise<EncryptedOutput> {
    const g = this.group(key);
    const params = this.params;
    const N = params.ringDegree;
    if (input.paramsId !== params.id) throw new Error(`helora: request uses parameter set ${input.paramsId}, this server runs ${params.id}`);
    const table = input.masks === 'table';
    if (table && !tableSeed) throw new Error('helora: a public-mask request needs the product\'s table seed');
    const expectedCols = direction === 'forward' ? [g.inDim] : g.partRows;
    if (input.partCols.length !== expectedCols.length || input.partCols.some((c, i) => c !== expectedCols[i])) {
      throw new Error(`helora: ${direction} input of group ${key} must have parts [${expectedCols.join(', ')}], got [${input.partCols.join(', ')}]`);
    }
    const K = expectedCols.reduce((s, c) => s + c, 0);
    const blocks = blockCount(input.T, N);
    if (input.blocks.length !== blocks) throw new Error(`helora: ${input.T} tokens need ${blocks} column blocks, got ${input.blocks.length}`);
    const upBytes = uploadBytes(params), aBytes = maskBytes(params);
    for (const b of input.blocks) {
      if (b.length !== K * N * upBytes) throw new Error(`helora: column block has ${b.length} bytes, expected ${K * N * upBytes}`);
    }
    const chunks = direction === 'forward' ? g.forward : g.backward;
    const outputRows = direction === 'forward' ? g.partRows : [g.inDim];
    const terms = chunks.length;
    const out: CipherMatrix[][] = [];
    for (let blk = 0; blk < blocks; blk++) {
      // One K-chunk term after the other: each product already runs on every core, and the
      // inputs of one term are given back before the next needs its own.
      const results: CipherMatrixPair[] = [];
      for (const c of chunks) {
        const b = input.blocks[blk].subarray(c.chunk.start * N * upBytes, c.chunk.end * N * upBytes);
        if (table) {
          // W·A is the client's public table: only W·B is computed and returned.
          results.push({ aOut: NO_A, bOut: await this.backend.matmulPart(params, c.handle, 'b', b, N) });
          continue;
        }
        const mask = await this.chunkMask(input.seed, blk, c.chunk);
        try {
          const res = await this.backend.matmul(params, c.handle, mask.view, b, N);
          if (res.release) releases.push(res.release);
          results.push(res);
        } finally {
          mask.release();
        }
      }
      // Order: output-major, then term; outputs are contiguous row ranges of each chunk's result.
      const row: CipherMatrix[] = [];
      let r0 = 0;
      for (const rows of outputRows) {
        for (const res of results) row.push({ a: table ? NO_A : res.aOut.subarray(r0 * N, (r0 + rows) * N), b: res.bOut.subarray(r0 * N, (r0 + rows) * N) });
        r0 += rows;
      }
      out.push(row);
    }
    return { masks: input.masks, paramsId: params.id, T: input.T, outputRows: [...outputRows], terms, blocks: out };
  }
}

/** An output whose matrices are the caller's own (copied out of any reused memory). */
export function copyEncryptedOutput(out: EncryptedOutput): EncryptedOutput {
  return { ...out, outputRows: [...out.outputRows], blocks: out.blocks.map((row) => row.map((m) => ({ a: m.a.slice(), b: m.b.slice() }))) };
}

function locateRow(parts: Int8Matrix[], k: number): { part: Int8Matrix; row: number } {
  let row = k;
  for (const part of parts) {
    if (row < part.rows) return { part, row };
    row -= part.rows;
  }
  throw new Error(`helora: stacked row ${k} out of range`);
}
