// The client's half of an encrypted projection group: quantize, encrypt, decrypt, dequantize.
// The secret key never leaves this object (its worker pool holds copies inside the process); what
// it returns for the server holds only a seed, the rounded b parts and shapes.
//
// One production path: encrypt*/decrypt* run the crypto on the worker pool. The *Reference methods
// compute the same on the calling thread with the plain crypto functions, only for the tests to
// compare with. Both paths share every check, the plaintext-width choice, the request bookkeeping
// and the dequantization: they differ only in where the ciphertexts are made and opened.

import {
  choosePlaintextBits, CryptoPool, encodeFeatures, decryptBlock, encryptBlock, DEFAULT_PARAMS, maxInnerDim, randomSeed, SecretKey, type RlweParams,
} from '../crypto/index.js';
import { addTokensInto, maxTokenL1 } from '../crypto/encode.js';
import {
  DEFAULT_ACT_BITS, MIN_BITS, WEIGHT_BITS, dequantizeBackwardRange, dequantizeForwardRange, prepareBackwardInput, quantizePerToken, type QuantizedActivations,
} from '../quant/quantize.js';
import { blockCount, featureChunks } from './layout.js';
import { settleAll } from '../util/settle.js';
import type { EncryptedInput, EncryptedOutput } from './types.js';

/** Per-request state the client keeps to dequantize the answer. Only `request` goes to the server. */
export interface PendingProduct {
  request: EncryptedInput;
  /** Per-token scale of the quantized input. */
  scales: Float32Array;
  /** The quantized input itself (T x K, token-major; client-side only: the result check reads it). */
  values?: Int8Array | Int16Array;
  /**
   * Client-side only: the plaintext width P' used for each column block. Never sent: it would
   * reveal a bound on the inputs' L1 norms (and the server does not need it).
   */
  plaintextBits: number[];
  /** Client-side only, public-mask-table mode: the single-use secret of each column block. */
  blockSecrets?: SecretKey[];
}

/** How one request is encrypted: fresh masks (default), or the public masks of a table seed. */
export interface MaskChoice {
  /** The product's public mask seed (mask-table.ts tableMaskSeed); absent: fresh masks. */
  tableSeed?: Uint8Array;
}

export interface HeClientOptions {
  params?: RlweParams;
  key?: SecretKey;
  /**
   * Activation / gradient bit width the server sized its K-splits and noise for (default 8): the
   * layout of every request and answer follows it.
   */
  actBits?: number;
  /**
   * Bits the client actually quantizes to (default actBits; at most actBits). Fewer bits change
   * only the integers inside the ciphertexts, never a size, count or field on the wire, so the
   * server cannot tell.
   */
  quantBits?: number;
  /**
   * Pick the plaintext width per column block from the inputs (default true): smaller P' when the
   * inputs are small, so the HE error in result units shrinks by 2^(P' - P). false: always P.
   */
  adaptivePlaintext?: boolean;
  /** Worker threads of the pool (default: one per core); the pool starts on first use. */
  threads?: number;
}

/**
 * What a decryption's caller keeps of the integer results: range() for each (output j, tokens
 * [t0, t0 + tn), rows [r0, r0 + nr)) once it is final, then finish().
 */
interface ResultConsumer<R> {
  range(results: IntegerResult[], j: number, t0: number, tn: number, r0: number, nr: number): void;
  /** After the last range; results are still valid here (and no longer afterwards). */
  finish(results: IntegerResult[]): R;
}

/** A checked upload about to be encrypted. */
interface NewRequest {
  K: number;
  blocks: number;
  /** The masks' seed: the request's own ('fresh') or the product's public one ('table'). */
  seed: Uint8Array;
  /** 'table': a single-use secret per column block; 'fresh': none (the client's key). */
  secrets: SecretKey[] | null;
}

/** A checked answer: its layout and the plaintext width of each column block. */
interface CheckedAnswer {
  terms: number;
  blocks: number;
  bits: readonly number[];
}

export class HeLinearClient {
  readonly params: RlweParams;
  readonly actBits: number;
  readonly quantBits: number;
  readonly adaptivePlaintext: boolean;
  private readonly key: SecretKey;
  private readonly threads: number | undefined;
  private pool: Promise<CryptoPool> | null = null;
  /** P' per block of every request this client encrypted (client memory only, see PendingProduct). */
  private readonly requestBits = new WeakMap<EncryptedInput, number[]>();
  /** The single-use secrets of every public-mask request this client encrypted (client memory only). */
  private readonly requestSecrets = new WeakMap<EncryptedInput, SecretKey[]>();
  /**
   * Uploads made on the pool live in its shared memory (see releaseRequest). An upload dropped
   * without releaseRequest gives its memory back once its block view is garbage-collected.
   */
  private readonly uploads = new WeakMap<EncryptedInput, { pool: CryptoPool; blocks: Uint8Array[] }>();
  private readonly dropped = new FinalizationRegistry<{ pool: CryptoPool; buffer: SharedArrayBuffer }>(({ pool, buffer }) => {
    pool.buffers.release(buffer);
  });

  constructor(opts: HeClientOptions = {}) {
    this.params = opts.params ?? DEFAULT_PARAMS;
    this.actBits = opts.actBits ?? DEFAULT_ACT_BITS;
    this.key = opts.key ?? SecretKey.generate(this.params);
    this.adaptivePlaintext = opts.adaptivePlaintext ?? true;
    this.threads = opts.threads;
    maxInnerDim(this.params, this.actBits, WEIGHT_BITS); // validates the bit width early
    this.quantBits = opts.quantBits ?? this.actBits;
    if (!Number.isInteger(this.quantBits) || this.quantBits < MIN_BITS || this.quantBits > this.actBits) {
      throw new Error(`helora: activation bits must be an integer in [${MIN_BITS}, ${this.actBits}] (the server's width), got ${this.quantBits}`);
    }
  }

  get maxTermK(): number {
    return maxInnerDim(this.params, this.actBits, WEIGHT_BITS);
  }

  /** Checks integer inputs (T x sum(partCols), token-major) against their parts and draws the request's seed. */
  private newRequest(values: Int8Array | Int16Array, T: number, partCols: number[], masks: MaskChoice): NewRequest {
    const K = partCols.reduce((s, c) => s + c, 0);
    if (values.length !== T * K) throw new Error(`helora: input has ${values.length} values, expected ${T} x ${K}`);
    const blocks = blockCount(T, this.params.ringDegree);
    if (masks.tableSeed) {
      // Fixed public masks: every block gets a secret of its own, which refuses a second block.
      return { K, blocks, seed: masks.tableSeed, secrets: Array.from({ length: blocks }, () => SecretKey.generateSingleUse(this.params)) };
    }
    // A fresh seed per request; the key itself refuses any (seed, block) pair it has seen before.
    return { K, blocks, seed: randomSeed(), secrets: null };
  }

  /** The key of column block blk and the mask block its masks come from. */
  private blockKey(r: NewRequest, blk: number): { key: SecretKey; maskBlock: number } {
    return r.secrets ? { key: r.secrets[blk]!, maskBlock: 0 } : { key: this.key, maskBlock: blk };
  }

  /**
   * Plaintext width of every column block (see choosePlaintextBits in crypto/noise.ts for the rule
   * and its proof): every result of a block obeys |y[t,o]| <= 127 * ||x_t||_1 (max over the
   * block's tokens; weights |W| <= maxAbsWeight = 127), and every row of every K-chunk term has
   * ||W_o||^2 <= 127^2 * Kc (Kc: the longest K-chunk). Capped at params.plaintextBits, where the
   * shape-based K-chunk split (maxInnerDim) guarantees the capacity as before.
   * maxL1(t0, t1): the largest token L1 norm among tokens [t0, t1).
   */
  private plaintextWidths(T: number, K: number, secrets: SecretKey[] | null, maxL1: (t0: number, t1: number) => number): number[] {
    const N = this.params.ringDegree;
    const blocks = blockCount(T, N);
    if (!this.adaptivePlaintext) return new Array<number>(blocks).fill(this.params.plaintextBits);
    // the server's Z_q kernel refuses weights with |W| > maxAbsWeight (127)
    const wMax = this.params.maxAbsWeight;
    const kc = Math.max(...featureChunks(K, this.maxTermK).map((c) => c.end - c.start));
    return Array.from({ length: blocks }, (_, blk) => {
      const l1 = maxL1(blk * N, Math.min(T, (blk + 1) * N));
      return choosePlaintextBits(this.params, wMax * l1, wMax * wMax * kc, (secrets?.[blk] ?? this.key).hammingWeight);
    });
  }

  /** The request object that goes to the server; its plaintext widths stay here (plaintextBitsOf). */
  private recordRequest(T: number, partCols: number[], r: NewRequest, plaintextBits: number[], blocks: Uint8Array[]): EncryptedInput {
    // A table request names no seed: the server derives the public one itself.
    const request: EncryptedInput = r.secrets
      ? { masks: 'table', paramsId: this.params.id, T, partCols: [...partCols], seed: new Uint8Array(r.seed.length), blocks }
      : { masks: 'fresh', paramsId: this.params.id, T, partCols: [...partCols], seed: r.seed, blocks };
    this.requestBits.set(request, plaintextBits);
    if (r.secrets) this.requestSecrets.set(request, r.secrets);
    return request;
  }

  /**
   * Encrypts integer inputs (T x sum(partCols), token-major) under a fresh seed, on the worker
   * pool. The returned object is what goes to the server; the client remembers its plaintext
   * widths (plaintextBitsOf). Its blocks live in the pool's memory: see releaseRequest.
   */
  async encryptIntegers(values: Int8Array | Int16Array, T: number, partCols: number[], masks: MaskChoice = {}): Promise<EncryptedInput> {
    const r = this.newRequest(values, T, partCols, masks);
    const pool = await this.getPool();
    const fm = await pool.featureMajor(values, T, r.K); // the workers encrypt straight from its feature rows
    let consumed = false;
    try {
      const plaintextBits = this.plaintextWidths(T, r.K, r.secrets, (t0, t1) => fm.tokenL1.subarray(t0, t1).reduce((m, l1) => Math.max(m, l1), 0));
      const settled = await Promise.allSettled(Array.from({ length: r.blocks }, (_, blk) => {
        const { key, maskBlock } = this.blockKey(r, blk);
        return pool.encryptValues(fm, r.seed, blk, plaintextBits[blk], r.secrets ? { secret: key, maskBlock } : undefined);
      }));
      const out = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) {
        for (const u of out) pool.buffers.release(u.buffer as SharedArrayBuffer);
        throw failed.reason;
      }
      consumed = true; // every block read all its values (and zeroed them)
      const request = this.recordRequest(T, partCols, r, plaintextBits, out);
      this.uploads.set(request, { pool, blocks: out });
      for (const u of out) this.dropped.register(u, { pool, buffer: u.buffer as SharedArrayBuffer }, u);
      return request;
    } finally {
      pool.releaseFeatureMajor(fm, consumed);
    }
  }

  /** Reference of encryptIntegers on the calling thread (tests compare the pool with it). */
  encryptIntegersReference(values: Int8Array | Int16Array, T: number, partCols: number[], masks: MaskChoice = {}): EncryptedInput {
    const r = this.newRequest(values, T, partCols, masks);
    const plaintextBits = this.plaintextWidths(T, r.K, r.secrets, (t0, t1) => maxTokenL1(values, r.K, t0, t1));
    const N = this.params.ringDegree;
    const m = new Int32Array(r.K * N);
    const out: Uint8Array[] = [];
    for (let blk = 0; blk < r.blocks; blk++) {
      const { key, maskBlock } = this.blockKey(r, blk);
      out.push(encryptBlock(this.params, key, encodeFeatures(values, T, r.K, N, blk, 0, r.K, m), r.K, r.seed, maskBlock, plaintextBits[blk]));
    }
    m.fill(0);
    return this.recordRequest(T, partCols, r, plaintextBits, out);
  }

  /**
   * Gives the upload memory of a request from encryptIntegers / encryptForward / encryptBackward
   * back for reuse, once the request has been sent (or answered): its blocks are emptied and must
   * not be used afterwards, nor any view taken of them. Without this call the memory returns when
   * the block arrays are garbage-collected (so a view taken of a block must not outlive the block
   * itself); with it, the next request reuses it at once (no fresh allocation, no copy). Other
   * requests: no-op.
   */
  releaseRequest(request: EncryptedInput): void {
    const owned = this.uploads.get(request);
    if (!owned) return;
    this.uploads.delete(request);
    request.blocks = [];
    for (const u of owned.blocks) {
      this.dropped.unregister(u);
      owned.pool.buffers.release(u.buffer as SharedArrayBuffer);
    }
  }

  /** The plaintext widths (one per column block) this client used for `request`. */
  plaintextBitsOf(request: EncryptedInput): number[] {
    const bits = this.requestBits.get(request);
    if (!bits) throw new Error('helora: this request was not encrypted by this client (pass the object encryptIntegers returned, or its plaintextBits)');
    return [...bits];
  }

  /** The single-use block secrets of a public-mask request this client encrypted (undefined for fresh masks). */
  blockSecretsOf(request: EncryptedInput): SecretKey[] | undefined {
    return this.requestSecrets.get(request);
  }

  /** The key that decrypts column block blk of `request`. */
  private decryptionKey(request: EncryptedInput, blk: number, blockSecrets?: readonly SecretKey[]): SecretKey {
    if (request.masks === 'fresh') return this.key;
    const s = (blockSecrets ?? this.requestSecrets.get(request))?.[blk];
    if (!s) throw new Error('helora: a public-mask answer needs the block secrets of its request (PendingProduct.blockSecrets)');
    return s;
  }

  private checkAnswer(request: EncryptedInput, response: EncryptedOutput, expectedRows: number[], plaintextBits?: readonly number[]): CheckedAnswer {
    const N = this.params.ringDegree;
    const K = request.partCols.reduce((s, c) => s + c, 0);
    const terms = featureChunks(K, this.maxTermK).length;
    const blocks = blockCount(request.T, N);
    const bits = plaintextBits ?? this.plaintextBitsOf(request);
    if (bits.length !== blocks) throw new Error(`helora: ${bits.length} plaintext widths for ${blocks} column blocks`);
    if (response.paramsId !== this.params.id) throw new Error(`helora: answer uses parameter set ${response.paramsId}, expected ${this.params.id}`);
    if (response.masks !== request.masks) throw new Error(`helora: answer uses ${response.masks} masks, the request ${request.masks}`);
    if (response.T !== request.T) throw new Error(`helora: answer is for ${response.T} tokens, asked ${request.T}`);
    if (response.terms !== terms) throw new Error(`helora: answer has ${response.terms} terms per output, expected ${terms}`);
    if (response.outputRows.length !== expectedRows.length || response.outputRows.some((r, i) => r !== expectedRows[i])) {
      throw new Error(`helora: answer has outputs [${response.outputRows.join(', ')}], expected [${expectedRows.join(', ')}]`);
    }
    if (response.blocks.length !== blocks) throw new Error(`helora: answer has ${response.blocks.length} column blocks, expected ${blocks}`);
    for (let blk = 0; blk < blocks; blk++) {
      const row = response.blocks[blk];
      if (row.length !== expectedRows.length * terms) throw new Error(`helora: block ${blk} has ${row.length} matrices, expected ${expectedRows.length * terms}`);
      expectedRows.forEach((rows, j) => {
        for (let term = 0; term < terms; term++) {
          const c = row[j * terms + term];
          if (c.a.length !== rows * N || c.b.length !== rows * N) throw new Error(`helora: block ${blk} output ${j} has the wrong size`);
        }
      });
    }
    return { terms, blocks, bits };
  }

  /**
   * Decrypts an answer to `request` on the worker pool into exact integer products (T x rows,
   * token-major, one per output), adding the K-chunk terms. Rejects an answer whose layout does not
   * match the request. plaintextBits: the widths from PendingProduct (default: remembered for
   * `request` by this client).
   */
  async decryptIntegers(request: EncryptedInput, response: EncryptedOutput, expectedRows: number[], plaintextBits?: readonly number[], blockSecrets?: SecretKey[]): Promise<IntegerResult[]> {
    return this.decryptOnPool(request, response, expectedRows, plaintextBits, blockSecrets, {
      range: () => undefined,
      // one copy of each whole result into ordinary memory of its type (slice() makes a plain ArrayBuffer)
      finish: (results) => results.map((r) => r.slice()),
    });
  }

  /** Reference of decryptIntegers on the calling thread (tests compare the pool with it). */
  decryptIntegersReference(request: EncryptedInput, response: EncryptedOutput, expectedRows: number[], plaintextBits?: readonly number[], blockSecrets?: SecretKey[]): IntegerResult[] {
    const N = this.params.ringDegree;
    const { terms, blocks, bits } = this.checkAnswer(request, response, expectedRows, plaintextBits);
    const results = expectedRows.map((rows) => (resultsFitInt32(terms, bits) ? new Int32Array(request.T * rows) : new Float64Array(request.T * rows)));
    for (let blk = 0; blk < blocks; blk++) {
      const row = response.blocks[blk];
      expectedRows.forEach((rows, j) => {
        for (let term = 0; term < terms; term++) {
          const c = row[j * terms + term];
          accumulateBlock(results[j], decryptBlock(this.params, this.decryptionKey(request, blk, blockSecrets), c.a, c.b, rows, bits[blk]), request.T, rows, N, blk);
        }
      });
    }
    return results;
  }

  /**
   * Decrypts on the pool into shared scratch results and lets `consume` take what it keeps, each
   * range as soon as it is final, while the rest is still being decrypted. The scratch memory is
   * reused afterwards, so consume must copy (see util/shared-buffers.ts).
   */
  private async decryptOnPool<R>(request: EncryptedInput, response: EncryptedOutput, expectedRows: number[],
    plaintextBits: readonly number[] | undefined, blockSecrets: SecretKey[] | undefined, consume: ResultConsumer<R>): Promise<R> {
    const N = this.params.ringDegree;
    const { terms, blocks, bits } = this.checkAnswer(request, response, expectedRows, plaintextBits);
    const pool = await this.getPool();
    // Shared results: the workers store their decrypted row ranges in place (one call per block and
    // output, all K-chunk terms inside it, so no two tasks touch the same values).
    const wide = !resultsFitInt32(terms, bits);
    const buffers = expectedRows.map((rows) => pool.buffers.acquireAtLeast(request.T * rows * (wide ? 8 : 4)));
    try {
      const results = buffers.map((b, j) => (wide ? new Float64Array(b, 0, request.T * expectedRows[j]) : new Int32Array(b, 0, request.T * expectedRows[j])));
      const jobs: Promise<void>[] = [];
      for (let blk = 0; blk < blocks; blk++) {
        const row = response.blocks[blk];
        const t0 = blk * N;
        const tn = Math.min(N, request.T - t0);
        const secret = request.masks === 'table' ? this.decryptionKey(request, blk, blockSecrets) : undefined;
        expectedRows.forEach((rows, j) => {
          const cs = row.slice(j * terms, (j + 1) * terms);
          jobs.push(pool.decryptSum(cs.map((c) => c.a), cs.map((c) => c.b), rows, bits[blk], results[j], t0, tn,
            (r0, nr) => consume.range(results, j, t0, tn, r0, nr), secret));
        });
      }
      await settleAll(jobs); // every task done before the buffers go back
      return consume.finish(results);
    } finally {
      for (const b of buffers) pool.buffers.release(b);
    }
  }

  /** decryptIntegersReference handed to `consume` whole: the reference of decryptOnPool. */
  private decryptReference<R>(request: EncryptedInput, response: EncryptedOutput, expectedRows: number[],
    plaintextBits: readonly number[] | undefined, blockSecrets: SecretKey[] | undefined, consume: ResultConsumer<R>): R {
    const results = this.decryptIntegersReference(request, response, expectedRows, plaintextBits, blockSecrets);
    expectedRows.forEach((rows, j) => consume.range(results, j, 0, request.T, 0, rows));
    return consume.finish(results);
  }

  /** Checks a pending product against the outputs about to be decrypted for it (before any decryption). */
  private checkPending(pending: PendingProduct, outputRows: number[]): void {
    const T = pending.request.T;
    if (pending.scales.length !== T) throw new Error(`helora: ${pending.scales.length} token scales for ${T} tokens`);
    if (outputRows.some((r) => r < 1)) throw new Error('helora: every output needs at least one row (weight scale)');
  }

  /** y_j = x W_j^T dequantized range by range (see dequantizeForward); the consumer of both forward decryptions. */
  private forwardDequantizer(pending: PendingProduct, wScales: Float32Array[]): { rows: number[]; consume: ResultConsumer<Float32Array[]> } {
    const rows = wScales.map((s) => s.length);
    this.checkPending(pending, rows);
    const ys = rows.map((r) => new Float32Array(pending.request.T * r));
    return {
      rows,
      consume: {
        range: (acc, j, t0, tn, r0, nr) => dequantizeForwardRange(acc[j], pending.scales, wScales[j], rows[j], ys[j], t0, tn, r0, nr),
        finish: () => ys,
      },
    };
  }

  /** dx = sum_j dy_j W_j dequantized range by range (see dequantizeBackward); the consumer of both backward decryptions. */
  private backwardDequantizer(pending: PendingProduct, C: number): ResultConsumer<Float32Array> {
    this.checkPending(pending, [C]);
    const dx = new Float32Array(pending.request.T * C);
    return {
      range: (acc, _j, t0, tn, r0, nr) => dequantizeBackwardRange(acc[0], pending.scales, C, dx, t0, tn, r0, nr),
      finish: () => dx,
    };
  }

  /** Forward: quantize x (T x C) per token and encrypt it on the pool. */
  async encryptForward(x: Float32Array, T: number, C: number, masks: MaskChoice = {}): Promise<PendingProduct> {
    const q = quantizePerToken(x, T, C, this.quantBits);
    return this.pendingOf(await this.encryptIntegers(q.values, T, [C], masks), q.scales, q.values);
  }

  private pendingOf(request: EncryptedInput, scales: Float32Array, values: Int8Array | Int16Array): PendingProduct {
    const blockSecrets = this.blockSecretsOf(request);
    return { request, scales, values, plaintextBits: this.plaintextBitsOf(request), ...(blockSecrets ? { blockSecrets } : {}) };
  }

  /** y_j (T x rows_j) = x W_j^T from the server's answer, decrypted on the pool; wScales are the public per-row weight scales. */
  async decryptForward(pending: PendingProduct, response: EncryptedOutput, wScales: Float32Array[]): Promise<Float32Array[]> {
    const { rows, consume } = this.forwardDequantizer(pending, wScales);
    return this.decryptOnPool(pending.request, response, rows, pending.plaintextBits, pending.blockSecrets, consume);
  }

  /** Reference of decryptForward on the calling thread (tests compare the pool with it). */
  decryptForwardReference(pending: PendingProduct, response: EncryptedOutput, wScales: Float32Array[]): Float32Array[] {
    const { rows, consume } = this.forwardDequantizer(pending, wScales);
    return this.decryptReference(pending.request, response, rows, pending.plaintextBits, pending.blockSecrets, consume);
  }

  /** Backward: dy_j (T x rows_j) stacked, the weight scales folded in, quantized per token jointly, encrypted on the pool. */
  async encryptBackward(dys: Float32Array[], T: number, wScales: Float32Array[], masks: MaskChoice = {}): Promise<PendingProduct> {
    const { q, cols } = quantizeBackwardInput(dys, T, wScales, this.quantBits);
    return this.pendingOf(await this.encryptIntegers(q.values, T, cols, masks), q.scales, q.values);
  }

  /** dx (T x C) = sum_j dy_j W_j from the server's answer, decrypted on the pool. */
  async decryptBackward(pending: PendingProduct, response: EncryptedOutput, C: number): Promise<Float32Array> {
    return this.decryptOnPool(pending.request, response, [C], pending.plaintextBits, pending.blockSecrets, this.backwardDequantizer(pending, C));
  }

  /** Reference of decryptBackward on the calling thread (tests compare the pool with it). */
  decryptBackwardReference(pending: PendingProduct, response: EncryptedOutput, C: number): Float32Array {
    return this.decryptReference(pending.request, response, [C], pending.plaintextBits, pending.blockSecrets, this.backwardDequantizer(pending, C));
  }

  /** Starts the worker pool now instead of on first use (e.g. before timing); resolves to its thread count. */
  async start(): Promise<number> {
    return (await this.getPool()).threads;
  }

  /** Worker threads of the pool (0 until it has started). */
  async poolThreads(): Promise<number> {
    return this.pool ? (await this.pool).threads : 0;
  }

  private getPool(): Promise<CryptoPool> {
    if (!this.pool) {
      this.pool = CryptoPool.create(this.params, this.key, this.threads);
      this.pool.catch(() => { this.pool = null; });
    }
    return this.pool;
  }

  /** Ends the worker pool (if started; a later call starts a new one). Resolves to exit codes. */
  async close(): Promise<number[]> {
    const p = this.pool;
    this.pool = null;
    return p ? (await p).close() : [];
  }
}

/** Concatenates dy_j along features (T x sum rows_j) and their weight scales in the same order. */
export function stackBackwardInput(dys: Float32Array[], T: number, wScales: Float32Array[]): { stacked: Float32Array; scales: Float32Array; cols: number[] } {
  if (dys.length !== wScales.length || dys.length === 0) throw new Error(`helora: ${dys.length} gradients for ${wScales.length} matrices`);
  const cols = wScales.map((s) => s.length);
  const K = cols.reduce((s, c) => s + c, 0);
  const stacked = new Float32Array(T * K);
  const scales = new Float32Array(K);
  let c0 = 0;
  dys.forEach((dy, j) => {
    const cj = cols[j];
    if (dy.length !== T * cj) throw new Error(`helora: gradient ${j} has ${dy.length} values, expected ${T} x ${cj}`);
    for (let t = 0; t < T; t++) stacked.set(dy.subarray(t * cj, (t + 1) * cj), t * K + c0);
    scales.set(wScales[j], c0);
    c0 += cj;
  });
  return { stacked, scales, cols };
}

/**
 * The backward's integer input: the dy_j stacked, the weight scales folded in, quantized per token
 * jointly. The encrypted and the plaintext path (QuantizedGroup) both use it, so they quantize alike.
 */
export function quantizeBackwardInput(dys: Float32Array[], T: number, wScales: Float32Array[], actBits: number): { q: QuantizedActivations; cols: number[] } {
  const { stacked, scales, cols } = stackBackwardInput(dys, T, wScales);
  return { q: prepareBackwardInput(stacked, T, scales.length, scales, actBits), cols };
}

/**
 * Exact integer products, token-major. Int32 whenever the sum of the K-chunk terms provably fits
 * (each term decrypts to |y| < 2^(P'-1)): half the memory of Float64 and its page faults.
 */
export type IntegerResult = Int32Array | Float64Array;

/** Whether the sum of the K-chunk terms provably fits Int32 (each term decrypts to |y| < 2^(P'-1)). */
function resultsFitInt32(terms: number, bits: readonly number[]): boolean {
  return terms * 2 ** (Math.max(...bits) - 1) <= 2 ** 31 - 1;
}

/** Adds a decrypted block (rows x N, feature-major) into the token-major result acc[T x rows]. */
export function accumulateBlock(acc: IntegerResult, block: Int32Array, T: number, rows: number, N: number, blockIndex: number): void {
  const tn = Math.min(N, T - blockIndex * N);
  if (block.length !== rows * N || acc.length < T * rows) throw new Error('helora: token-major part size mismatch');
  addTokensInto(acc, rows, blockIndex * N, 0, block, rows, N, tn);
}
