/**
 * Plain-TypeScript reference of the server's product on ciphertexts (for tests and for checking
 * the WASM server kernels): for every output row o,
 *   aOut[o] = round_{logQ -> downloadBits}( sum_i W[o,i] a_i  mod q )
 *   bOut[o] = round_{logQ -> downloadBits}( sum_i W[o,i] (b'_i << (logQ - uploadBits))  mod q )
 * with round-half-up (x + D/2) >> log2 D, D = 2^(logQ - downloadBits), results mod 2^downloadBits.
 * Exact: 44-bit operands are split into two 22-bit halves so every partial sum stays an exact
 * double (|sum| <= 127 * 2^22 * cols < 2^53 for cols < 2^24).
 */
import { MASK_BYTES, uploadBytes, type RlweParams } from './params.js';

const HALF = 2 ** 22;

export function serverProductReference(params: RlweParams, w: Int8Array, rows: number, cols: number,
  aBytes: Uint8Array, bBytes: Uint8Array): { aOut: Uint32Array; bOut: Uint32Array } {
  const n = params.ringDegree;
  const ub = uploadBytes(params);
  if (params.logQ > 44) throw new Error('helora: serverProductReference supports logQ <= 44');
  if (!(rows >= 1 && cols >= 1 && cols < 2 ** 24) || w.length !== rows * cols) throw new Error(`helora: weight must be rows*cols = ${rows * cols} int8 values`);
  if (aBytes.length !== cols * n * MASK_BYTES) throw new Error(`helora: mask must be ${cols * n * MASK_BYTES} bytes, got ${aBytes.length}`);
  if (bBytes.length !== cols * n * ub) throw new Error(`helora: upload must be ${cols * n * ub} bytes, got ${bBytes.length}`);
  const q = 2 ** params.logQ;
  const upShift = 2 ** (params.logQ - params.uploadBits);
  // [part][row][t]: low and high 22-bit half sums
  const acc = [0, 1].map(() => ({ lo: new Float64Array(rows * n), hi: new Float64Array(rows * n) }));
  const lo = new Float64Array(n), hi = new Float64Array(n);
  for (let i = 0; i < cols; i++) {
    for (let part = 0; part < 2; part++) {
      for (let t = 0; t < n; t++) {
        let x: number;
        if (part === 0) {
          const o = (i * n + t) * MASK_BYTES;
          x = (aBytes[o] + aBytes[o + 1] * 2 ** 8 + aBytes[o + 2] * 2 ** 16 + aBytes[o + 3] * 2 ** 24 +
            aBytes[o + 4] * 2 ** 32 + aBytes[o + 5] * 2 ** 40) % q;
        } else {
          const o = (i * n + t) * ub;
          let v = 0;
          for (let k = ub - 1; k >= 0; k--) v = v * 256 + bBytes[o + k];
          x = (v * upShift) % q;
        }
        lo[t] = x % HALF;
        hi[t] = Math.floor(x / HALF);
      }
      const { lo: alo, hi: ahi } = acc[part];
      for (let r = 0; r < rows; r++) {
        const wv = w[r * cols + i];
        if (wv === 0) continue;
        const base = r * n;
        for (let t = 0; t < n; t++) {
          alo[base + t] += wv * lo[t];
          ahi[base + t] += wv * hi[t];
        }
      }
    }
  }
  const D = 2 ** (params.logQ - params.downloadBits);
  const outMod = 2 ** params.downloadBits;
  const finish = (p: { lo: Float64Array; hi: Float64Array }): Uint32Array => {
    const out = new Uint32Array(rows * n);
    for (let k = 0; k < rows * n; k++) {
      const h = ((p.hi[k] % HALF) + HALF) % HALF;
      const x = (((h * HALF + p.lo[k]) % q) + q) % q;
      out[k] = Math.floor((x + D / 2) / D) % outMod;
    }
    return out;
  };
  return { aOut: finish(acc[0]), bOut: finish(acc[1]) };
}
