/** Plaintext fp32 GEMM: out[M,N] = w[M,K] · x[K,N]. */
import { kernelEngine } from './engine.js';
import { nativeKernels } from './native.js';

export function checkF32Shapes(w: Float32Array, x: Float32Array, M: number, K: number, N: number): void {
  for (const [name, v] of [['M', M], ['K', K], ['N', N]] as const) {
    if (!Number.isInteger(v) || v <= 0) throw new Error(`helora: gemmF32 ${name} must be a positive integer, got ${v}`);
  }
  if (w.length !== M * K) throw new Error(`helora: gemmF32 w has ${w.length} values, expected M*K = ${M * K}`);
  if (x.length !== K * N) throw new Error(`helora: gemmF32 x has ${x.length} values, expected K*N = ${K * N}`);
}

/** Plain-TS reference, accumulating in double precision. */
export function gemmF32Reference(w: Float32Array, x: Float32Array, M: number, K: number, N: number): Float32Array {
  checkF32Shapes(w, x, M, K, N);
  const out = new Float32Array(M * N);
  const acc = new Float64Array(N);
  for (let m = 0; m < M; m++) {
    acc.fill(0);
    for (let k = 0; k < K; k++) {
      const a = w[m * K + k]!;
      const xr = k * N;
      for (let n = 0; n < N; n++) acc[n]! += a * x[xr + n]!;
    }
    out.set(acc, m * N);
  }
  return out;
}

/** fp32 GEMM, native (AVX2/AVX-512 FMA tiles) or WebAssembly SIMD (f32x4, 4x8 register tiles); sums in float32. */
export function gemmF32(w: Float32Array, x: Float32Array, M: number, K: number, N: number): Float32Array {
  checkF32Shapes(w, x, M, K, N);
  const nk = nativeKernels();
  if (nk) {
    const out = new Float32Array(M * N);
    nk.sgemm(M, N, K, { data: w, offset: 0, si: K, sj: 1 }, { data: x, offset: 0, si: N, sj: 1 }, { data: out, offset: 0, si: N, sj: 1 }, false, null);
    return out;
  }
  const e = kernelEngine();
  const ap = e.packF32A({ data: w, offset: 0, si: K, sj: 1 }, M, K, false);
  const bp = e.packF32B({ data: x, offset: 0, si: N, sj: 1 }, K, N, false);
  const out = new Float32Array(M * N);
  e.gemmF32Packed(ap, bp, M, K, N, { data: out, offset: 0, si: N, sj: 1 }, false, null);
  return out;
}
