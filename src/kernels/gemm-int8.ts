/** Plaintext int8 GEMM: out[M,N] = w[M,K] · x[K,N] with exact int32 results. */
import { kernelEngine } from './engine.js';
import { nativeKernels } from './native.js';

export function checkInt8Shapes(w: Int8Array, x: Int8Array, M: number, K: number, N: number): void {
  for (const [name, v] of [['M', M], ['K', K], ['N', N]] as const) {
    if (!Number.isInteger(v) || v <= 0) throw new Error(`helora: gemmInt8 ${name} must be a positive integer, got ${v}`);
  }
  if (w.length !== M * K) throw new Error(`helora: gemmInt8 w has ${w.length} values, expected M*K = ${M * K}`);
  if (x.length !== K * N) throw new Error(`helora: gemmInt8 x has ${x.length} values, expected K*N = ${K * N}`);
}

/** Plain-TS reference (exact: |sum| <= 128*128*K stays far below 2^53). */
export function gemmInt8Reference(w: Int8Array, x: Int8Array, M: number, K: number, N: number): Int32Array {
  checkInt8Shapes(w, x, M, K, N);
  const out = new Int32Array(M * N);
  for (let m = 0; m < M; m++) {
    const row = m * N;
    for (let k = 0; k < K; k++) {
      const a = w[m * K + k]!;
      if (a === 0) continue;
      const xr = k * N;
      for (let n = 0; n < N; n++) out[row + n] = (out[row + n]! + a * x[xr + n]!) | 0;
    }
  }
  return out;
}

/** Exact int8 GEMM (native kernels, else WebAssembly SIMD; see gemmInt8Reference for the plain version). */
export function gemmInt8(w: Int8Array, x: Int8Array, M: number, K: number, N: number): Int32Array {
  checkInt8Shapes(w, x, M, K, N);
  // Exactness of the int32 sums: |sum| <= 128 * 128 * K must stay below 2^31.
  if (K > 131072) throw new Error(`helora: gemmInt8 K = ${K} exceeds 131072 (int32 sums could overflow)`);
  const nk = nativeKernels();
  if (nk) return nk.gemmI8(nk.packI8(w, M, K), M, K, x, N);
  const e = kernelEngine();
  const wp = e.packInt8(w, M, K, false);
  return e.gemmInt8Packed(wp, M, K, x, N);
}
