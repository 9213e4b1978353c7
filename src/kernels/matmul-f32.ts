/** llm.c-style fp32 matmuls for the model engine (flat row-major buffers). */
import { kernelEngine } from './engine.js';
import { nativeKernels } from './native.js';

/**
 * Up to this many tokens the products read the weights in place (dot / axpy kernels, memory
 * bound) instead of packing them for the register-blocked GEMM, whose packing would cost more
 * than the product.
 */
export const SMALL_T = 8;

function need(name: string, arr: Float32Array, len: number): void {
  if (arr.length < len) throw new Error(`helora: ${name} has ${arr.length} values, expected at least ${len}`);
}
function dims(T: number, C: number, OC: number): void {
  for (const [n, v] of [['T', T], ['C', C], ['OC', OC]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`helora: matmul ${n} must be a non-negative integer, got ${v}`);
  }
}

/** out[T,OC] = inp[T,C] · weight[OC,C]^T (+ bias[OC] if given); overwrites out. Plain TS. */
export function matmulForwardReference(out: Float32Array, inp: Float32Array, weight: Float32Array, bias: Float32Array | null, T: number, C: number, OC: number): void {
  dims(T, C, OC); need('out', out, T * OC); need('inp', inp, T * C); need('weight', weight, OC * C);
  if (bias) need('bias', bias, OC);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < OC; o++) {
      let s = bias ? bias[o]! : 0;
      for (let c = 0; c < C; c++) s += inp[t * C + c]! * weight[o * C + c]!;
      out[t * OC + o] = s;
    }
  }
}

/** dinp[T,C] += dout[T,OC] · weight[OC,C]. Plain TS. */
export function matmulBackwardInputReference(dinp: Float32Array, dout: Float32Array, weight: Float32Array, T: number, C: number, OC: number): void {
  dims(T, C, OC); need('dinp', dinp, T * C); need('dout', dout, T * OC); need('weight', weight, OC * C);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < OC; o++) {
      const d = dout[t * OC + o]!;
      for (let c = 0; c < C; c++) dinp[t * C + c]! += d * weight[o * C + c]!;
    }
  }
}

/** dweight[OC,C] += dout[T,OC]^T · inp[T,C]. Plain TS. */
export function matmulBackwardWeightReference(dweight: Float32Array, dout: Float32Array, inp: Float32Array, T: number, C: number, OC: number): void {
  dims(T, C, OC); need('dweight', dweight, OC * C); need('dout', dout, T * OC); need('inp', inp, T * C);
  for (let o = 0; o < OC; o++) {
    for (let t = 0; t < T; t++) {
      const d = dout[t * OC + o]!;
      for (let c = 0; c < C; c++) dweight[o * C + c]! += d * inp[t * C + c]!;
    }
  }
}

/** out[T,OC] = inp[T,C] · weight[OC,C]^T (+ bias[OC] if given); overwrites out. Native kernels, else WebAssembly SIMD. */
export function matmulForward(out: Float32Array, inp: Float32Array, weight: Float32Array, bias: Float32Array | null, T: number, C: number, OC: number): void {
  dims(T, C, OC); need('out', out, T * OC); need('inp', inp, T * C); need('weight', weight, OC * C);
  if (bias) need('bias', bias, OC);
  if (T === 0 || OC === 0) return;
  const nk = nativeKernels();
  if (nk && T <= SMALL_T) return nk.smallMatmul('fwd', out, inp, weight, bias, T, C, OC);
  if (nk) return nk.sgemm(T, OC, C, { data: inp, offset: 0, si: C, sj: 1 }, { data: weight, offset: 0, si: 1, sj: C }, { data: out, offset: 0, si: OC, sj: 1 }, false, bias);
  const e = kernelEngine();
  if (T <= SMALL_T) return e.smallMatmul('fwd', out, inp, weight, bias, T, C, OC);
  const ap = e.packF32A({ data: inp, offset: 0, si: C, sj: 1 }, T, C, false);
  const bp = e.packF32B({ data: weight, offset: 0, si: 1, sj: C }, C, OC, false);
  e.gemmF32Packed(ap, bp, T, C, OC, { data: out, offset: 0, si: OC, sj: 1 }, false, bias);
}

/** dinp[T,C] += dout[T,OC] · weight[OC,C]. Native kernels, else WebAssembly SIMD. */
export function matmulBackwardInput(dinp: Float32Array, dout: Float32Array, weight: Float32Array, T: number, C: number, OC: number): void {
  dims(T, C, OC); need('dinp', dinp, T * C); need('dout', dout, T * OC); need('weight', weight, OC * C);
  if (T === 0 || C === 0 || OC === 0) return;
  const nk = nativeKernels();
  if (nk && T <= SMALL_T) return nk.smallMatmul('bwdIn', dinp, dout, weight, null, T, C, OC);
  if (nk) return nk.sgemm(T, C, OC, { data: dout, offset: 0, si: OC, sj: 1 }, { data: weight, offset: 0, si: C, sj: 1 }, { data: dinp, offset: 0, si: C, sj: 1 }, true, null);
  const e = kernelEngine();
  if (T <= SMALL_T) return e.smallMatmul('bwdIn', dinp, dout, weight, null, T, C, OC);
  const ap = e.packF32A({ data: dout, offset: 0, si: OC, sj: 1 }, T, OC, false);
  const bp = e.packF32B({ data: weight, offset: 0, si: C, sj: 1 }, OC, C, false);
  e.gemmF32Packed(ap, bp, T, OC, C, { data: dinp, offset: 0, si: C, sj: 1 }, true, null);
}

/** dweight[OC,C] += dout[T,OC]^T · inp[T,C]. Native kernels, else WebAssembly SIMD. */
export function matmulBackwardWeight(dweight: Float32Array, dout: Float32Array, inp: Float32Array, T: number, C: number, OC: number): void {
  dims(T, C, OC); need('dweight', dweight, OC * C); need('dout', dout, T * OC); need('inp', inp, T * C);
  if (T === 0 || C === 0 || OC === 0) return;
  const nk = nativeKernels();
  if (nk && T <= SMALL_T) return nk.smallMatmul('bwdW', dweight, dout, inp, null, T, C, OC);
  if (nk) return nk.sgemm(OC, C, T, { data: dout, offset: 0, si: 1, sj: OC }, { data: inp, offset: 0, si: C, sj: 1 }, { data: dweight, offset: 0, si: C, sj: 1 }, true, null);
  const e = kernelEngine();
  if (T <= SMALL_T) return e.smallMatmul('bwdW', dweight, dout, inp, null, T, C, OC);
  const ap = e.packF32A({ data: dout, offset: 0, si: 1, sj: OC }, OC, T, false);
  const bp = e.packF32B({ data: inp, offset: 0, si: C, sj: 1 }, T, C, false);
  e.gemmF32Packed(ap, bp, OC, T, C, { data: dweight, offset: 0, si: C, sj: 1 }, true, null);
}
