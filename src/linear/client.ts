// The client's half of an encrypted projection group: quantize, encrypt, decrypt, dequantize.
// The secret key never leaves this object; what it returns for the server holds only a seed,
// the rounded b parts and shapes.

import { decryptBlock, encryptBlock, paramsById, maxInnerDim, randomSeed, SecretKey, type RlweParams } from '../crypto/index.js';
import { DEFAULT_ACT_BITS, dequantizeBackward, dequantizeForward, prepareBackwardInput, quantizePerToken } from '../quant/quantize.js';
import { accumulateBlock, blockCount, blockMessage, featureChunks } from './layout.js';
import type { EncryptedInput, EncryptedOutput } from './types.js';

/** Per-request state the client keeps to dequantize the answer. */
export interface PendingProduct {
  request: EncryptedInput;
  /** Per-token scale of the quantized input. */
  scales: Float32Array;
}

export interface HeClientOptions {
  params?: RlweParams;
  key?: SecretKey;
  /** Activation / gradient bit width (default 8). */
  actBits?: number;
}

export class HeLinearClient {
  readonly params: RlweParams;
  readonly actBits: number;
  private readonly key: SecretKey;

  constructor(opts: HeClientOptions = {}) {
    this.params = opts.params ?? paramsById(1);
    this.actBits = opts.actBits ?? DEFAULT_ACT_BITS;
    this.key = opts.key ?? SecretKey.generate(this.params);
    maxInnerDim(this.params, this.actBits, 8); // validates the bit width early
  }

  get maxTermK(): number {
    return maxInnerDim(this.params, this.actBits, 8);
  }

  /** Encrypts integer inputs (T x sum(partCols), token-major) under a fresh seed. */
  encryptIntegers(values: Int8Array | Int16Array, T: number, partCols: number[]): EncryptedInput {
    const K = partCols.reduce((s, c) => s + c, 0);
    if (values.length !== T * K) throw new Error(`helora: input has ${values.length} values, expected ${T} x ${K}`);
    const N = this.params.ringDegree;
    const blocks = blockCount(T, N);
    // A fresh seed per request; the key itself refuses any (seed, block) pair it has seen before.
    const seed = randomSeed();
    const m = new Int32Array(K * N);
    const out: Uint8Array[] = [];
    for (let blk = 0; blk < blocks; blk++) out.push(encryptBlock(this.params, this.key, blockMessage(values, T, K, N, blk, m), K, seed, blk));
    return { paramsId: this.params.id, T, partCols: [...partCols], seed, blocks: out };
  }

  /**
   * Decrypts an answer to `request` into exact integer products (T x rows, token-major, one per
   * output), adding the K-chunk terms. Rejects an answer whose layout does not match the request.
   */
  decryptIntegers(request: EncryptedInput, response: EncryptedOutput, expectedRows: number[]): Float64Array[] {
    const N = this.params.ringDegree;
    const K = request.partCols.reduce((s, c) => s + c, 0);
    const terms = featureChunks(K, this.maxTermK).length;
    const blocks = blockCount(request.T, N);
    if (response.paramsId !== this.params.id) throw new Error(`helora: answer uses parameter set ${response.paramsId}, expected ${this.params.id}`);
    if (response.T !== request.T) throw new Error(`helora: answer is for ${response.T} tokens, asked ${request.T}`);
    if (response.terms !== terms) throw new Error(`helora: answer has ${response.terms} terms per output, expected ${terms}`);
    if (response.outputRows.length !== expectedRows.length || response.outputRows.some((r, i) => r !== expectedRows[i])) {
      throw new Error(`helora: answer has outputs [${response.outputRows.join(', ')}], expected [${expectedRows.join(', ')}]`);
    }
    if (response.blocks.length !== blocks) throw new Error(`helora: answer has ${response.blocks.length} column blocks, expected ${blocks}`);
    const results = expectedRows.map((rows) => new Float64Array(request.T * rows));
    for (let blk = 0; blk < blocks; blk++) {
      const row = response.blocks[blk];
      if (row.length !== expectedRows.length * terms) throw new Error(`helora: block ${blk} has ${row.length} matrices, expected ${expectedRows.length * terms}`);
      expectedRows.forEach((rows, j) => {
        for (let term = 0; term < terms; term++) {
          const c = row[j * terms + term];
          if (c.a.length !== rows * N || c.b.length !== rows * N) throw new Error(`helora: block ${blk} output ${j} has the wrong size`);
          accumulateBlock(results[j], decryptBlock(this.params, this.key, c.a, c.b, rows), request.T, rows, N, blk);
        }
      });
    }
    return results;
  }

  /** Forward: quantize x (T x C) per token and encrypt it. */
  encryptForward(x: Float32Array, T: number, C: number): PendingProduct {
    const q = quantizePerToken(x, T, C, this.actBits);
    return { request: this.encryptIntegers(q.values, T, [C]), scales: q.scales };
  }

  /** y_j (T x rows_j) = x W_j^T from the server's answer; wScales are the public per-row weight scales. */
  decryptForward(pending: PendingProduct, response: EncryptedOutput, wScales: Float32Array[]): Float32Array[] {
    const rows = wScales.map((s) => s.length);
    const acc = this.decryptIntegers(pending.request, response, rows);
    return acc.map((a, j) => dequantizeForward(a, pending.scales, wScales[j], pending.request.T, rows[j]));
  }

  /** Backward: dy_j (T x rows_j) stacked, the weight scales folded in, quantized per token jointly. */
  encryptBackward(dys: Float32Array[], T: number, wScales: Float32Array[]): PendingProduct {
    const { stacked, scales, cols } = stackBackwardInput(dys, T, wScales);
    const q = prepareBackwardInput(stacked, T, cols.reduce((s, c) => s + c, 0), scales, this.actBits);
    return { request: this.encryptIntegers(q.values, T, cols), scales: q.scales };
  }

  /** dx (T x C) = sum_j dy_j W_j from the server's answer. */
  decryptBackward(pending: PendingProduct, response: EncryptedOutput, C: number): Float32Array {
    const [acc] = this.decryptIntegers(pending.request, response, [C]);
    return dequantizeBackward(acc, pending.scales, pending.request.T, C);
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
