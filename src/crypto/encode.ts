/**
 * Batch packing of token-major matrices into feature polynomials and back (see linear/layout.ts
 * for the layout): feature i of the N tokens of column block `block` is polynomial i, token t
 * at coefficient t. Cache-blocked transposes: the plain loops stride through memory by N values
 * per access and cost as much as the encryption itself at 2048 features. These serve the
 * single-thread path; the worker pool packs in WebAssembly (kernels/client-crypto.ts featureMajor,
 * and the decryption's transposes in the kernel).
 */

import { endianness } from 'node:os';

/** Square tile of the transposes (2 x 32 x 32 values stay in L1). */
const TILE = 32;

/** Token tile of the word-wise encoder (measured: 16 is ~3x faster than the 32 x 32 tiles). */
const ENCODE_TILE_TOKENS = 16;

/** Int8 values can be read four at a time through an Int32Array view (little-endian lanes). */
const LITTLE_ENDIAN = endianness() === 'LE';

/** An Int32Array view of 8-bit values when they can be read as aligned words: 4 | offset, 4 | C. */
function words(values: Int8Array | Int16Array, C: number): Int32Array | null {
  if (!LITTLE_ENDIAN || !(values instanceof Int8Array) || values.byteOffset % 4 !== 0 || C % 4 !== 0) return null;
  return new Int32Array(values.buffer, values.byteOffset, Math.floor(values.length / 4));
}

/**
 * Polynomials i0 .. i0 + d - 1 of column block `block`: out[(i - i0)*N + t] = values[(block*N + t)*C + i]
 * (padding tokens zero). Equal to linear/layout.ts blockMessage for i0 = 0, d = C.
 */
export function encodeFeatures(values: Int8Array | Int16Array, T: number, C: number, N: number, block: number,
  i0 = 0, d = C, out?: Int32Array): Int32Array {
  const m = out ?? new Int32Array(d * N);
  if (m.length !== d * N) throw new Error(`helora: message buffer has ${m.length} coefficients, expected ${d * N}`);
  if (values.length < T * C) throw new Error(`helora: input has ${values.length} values, expected ${T} x ${C}`);
  if (!(i0 >= 0 && d >= 1 && i0 + d <= C)) throw new Error(`helora: feature range [${i0}, ${i0 + d}) outside [0, ${C})`);
  const t0 = block * N;
  const tn = Math.min(N, T - t0);
  if (tn < N) m.fill(0);
  const w = i0 % 4 === 0 && d % 4 === 0 ? words(values, C) : null;
  if (w) {
    // Four features per load; tokens in tiles of ENCODE_TILE_TOKENS so each output line (16
    // coefficients) is written whole before the next, while the tile's input lines stay in L1.
    for (let ta = 0; ta < tn; ta += ENCODE_TILE_TOKENS) {
      const tb = Math.min(tn, ta + ENCODE_TILE_TOKENS);
      for (let q = i0 >> 2, qe = (i0 + d) >> 2; q < qe; q++) {
        const dst = ((q << 2) - i0) * N;
        for (let t = ta; t < tb; t++) {
          const x = w[(t0 + t) * (C >> 2) + q];
          m[dst + t] = (x << 24) >> 24;
          m[dst + N + t] = (x << 16) >> 24;
          m[dst + 2 * N + t] = (x << 8) >> 24;
          m[dst + 3 * N + t] = x >> 24;
        }
      }
    }
    return m;
  }
  for (let ta = 0; ta < tn; ta += TILE) {
    const tb = Math.min(tn, ta + TILE);
    for (let ia = i0; ia < i0 + d; ia += TILE) {
      const ib = Math.min(i0 + d, ia + TILE);
      for (let t = ta; t < tb; t++) {
        const row = (t0 + t) * C;
        for (let i = ia; i < ib; i++) m[(i - i0) * N + t] = values[row + i];
      }
    }
  }
  return m;
}

/**
 * Adds rows polynomials of y (rows x N, feature-major, y[o*N + t]) into columns r0 .. r0 + rows - 1
 * of the token-major acc (accRows values per token) at tokens t0 .. t0 + tn - 1:
 * acc[(t0 + t)*accRows + r0 + o] += y[o*N + t]: a transpose and add without an intermediate copy
 * (the single-thread path; the pool workers transpose and sum in the kernel, rlwe.ts decryptAccumulate).
 */
export function addTokensInto(acc: Int32Array | Float64Array, accRows: number, t0: number, r0: number, y: Int32Array, rows: number, N: number, tn: number): void {
  if (y.length < rows * N || !(tn >= 1 && tn <= N) || r0 < 0 || r0 + rows > accRows || acc.length < (t0 + tn) * accRows) {
    throw new Error('helora: addTokensInto size mismatch');
  }
  // Token tiles outside: each result page (one token's row range) is visited once per call, not
  // once per row tile (TLB misses on the 4 KB pages dominated the old order).
  for (let ta = 0; ta < tn; ta += TILE) {
    const tb = Math.min(tn, ta + TILE);
    for (let oa = 0; oa < rows; oa += TILE) {
      const ob = Math.min(rows, oa + TILE);
      for (let t = ta; t < tb; t++) {
        const dst = (t0 + t) * accRows + r0;
        for (let o = oa; o < ob; o++) acc[dst + o] += y[o * N + t];
      }
    }
  }
}

/** max over tokens t0 .. t1 - 1 of sum_i |values[t*K + i]| (token-major values, K per token). */
export function maxTokenL1(values: Int8Array | Int16Array, K: number, t0: number, t1: number): number {
  if (!(t0 >= 0 && t1 >= t0 && t1 * K <= values.length)) throw new Error('helora: maxTokenL1 range outside the values');
  let maxL1 = 0;
  const w = words(values, K);
  if (w) {
    for (let t = t0; t < t1; t++) {
      let l1 = 0;
      for (let q = t * (K >> 2), e = q + (K >> 2); q < e; q++) {
        const x = w[q];
        // branch-free |v| = (v ^ s) - s, s = v >> 31 (random signs mispredict a branch half the time)
        const a = (x << 24) >> 24, b = (x << 16) >> 24, c = (x << 8) >> 24, d = x >> 24;
        const sa = a >> 31, sb = b >> 31, sc = c >> 31, sd = d >> 31;
        l1 += ((a ^ sa) - sa) + ((b ^ sb) - sb) + ((c ^ sc) - sc) + ((d ^ sd) - sd);
      }
      if (l1 > maxL1) maxL1 = l1;
    }
    return maxL1;
  }
  for (let t = t0; t < t1; t++) {
    let l1 = 0;
    for (let i = t * K, e = i + K; i < e; i++) {
      const v = values[i];
      const sv = v >> 31;
      l1 += (v ^ sv) - sv;
    }
    if (l1 > maxL1) maxL1 = l1;
  }
  return maxL1;
}
