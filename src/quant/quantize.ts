// HE-compatible symmetric integer quantization (design-notes section 3).
//
// The server multiplies integers exactly, so everything that carries a real-valued scale must sit on an
// index that the product does NOT sum over:
//   forward  y[t,o]  = sum_i x[t,i] W[o,i]  ~ sx[t] sw[o] sum_i qx[t,i] qw[o,i]       (per-token x, per-row W)
//   backward dx[t,i] = sum_o dy[t,o] W[o,i] ~ s[t]        sum_o q(dy*sw)[t,o] qw[o,i]  (sw folded into dy first)
// Dequantization order is fixed and documented so that other paths (the encrypted one, tests) can
// reproduce results bit for bit: y = fround((acc * sx[t]) * sw[o]) evaluated in double precision.

import { gemmInt8 } from '../kernels/gemm-int8.js';
import { nativeKernels } from '../kernels/native.js';

/** Per-row (per-token) quantized activations: values[T*C] row-major, one scale per row. */
export interface QuantizedActivations {
  values: Int8Array | Int16Array;
  scales: Float32Array;
  rows: number;
  cols: number;
  bits: number;
}

/** Per-output-channel (per-row) 8-bit weights: values[rows*cols] row-major, |q| <= 127. */
export interface QuantizedWeights {
  values: Int8Array;
  scales: Float32Array;
  rows: number;
  cols: number;
}

/** Weights are always 8 bits (|q| <= WEIGHT_QMAX); the server kernels rely on it. */
export const WEIGHT_BITS = 8;
export const WEIGHT_QMAX = symmetricQmax(WEIGHT_BITS);
/** Default activation / gradient width. */
export const DEFAULT_ACT_BITS = 8;
export const MIN_BITS = 2;
export const MAX_BITS = 16;
/** Largest |accumulator| an int32 GEMM may hold exactly. */
const INT32_MAX = 2147483647;
/** src/kernels/gemm-int8 refuses longer sums (its own int32 headroom bound); beyond it we sum in doubles. */
const GEMM_INT8_MAX_K = 131072;

/** Largest |sum_k q_a q_w| for actBits-wide activations, weightBits-wide weights and K summed terms. */
export function maxAbsProduct(actBits: number, weightBits: number, K: number): number {
  checkBits(actBits, 'actBits');
  checkBits(weightBits, 'weightBits');
  checkDim(K, 'K');
  return symmetricQmax(actBits) * symmetricQmax(weightBits) * K;
}

/** 1.5 * 2^52: doubles in [2^52, 2^53) have unit spacing, so v + ROUND_MAGIC rounds v to an integer. */
const ROUND_MAGIC = 6755399441055744;

/** Round half to even; exact for |v| < 2^52 because v - floor(v) is exact there. */
export function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

function checkBits(bits: number, name = 'bits'): void {
  if (!Number.isInteger(bits) || bits < MIN_BITS || bits > MAX_BITS) {
    throw new Error(`helora: ${name} must be an integer in ${MIN_BITS}..${MAX_BITS}, got ${bits}`);
  }
}

function checkDim(n: number, name: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`helora: ${name} must be a non-negative integer, got ${n}`);
}

function checkLen(a: ArrayLike<number>, expected: number, what: string): void {
  if (a.length !== expected) throw new Error(`helora: ${what} has length ${a.length}, expected ${expected}`);
}

/** Finite-input check with the position of the first bad value, so a NaN in training is traceable. */
function checkFinite(x: ArrayLike<number>, cols: number, what: string): void {
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) throw nonFinite(x[i]!, i, cols, what);
  }
}

function nonFinite(v: number, i: number, cols: number, what: string): Error {
  const r = cols > 0 ? Math.floor(i / cols) : 0;
  const c = cols > 0 ? i % cols : 0;
  return new Error(`helora: cannot quantize ${what}: non-finite value ${v} at [${r}, ${c}] (expected finite numbers)`);
}

/** Largest |q| of symmetric `bits`-wide quantization (127 for 8 bits: -128 is never used). */
export function symmetricQmax(bits: number): number {
  return 2 ** (bits - 1) - 1;
}

/** Quantizes each row of x (rows x cols) with its own scale max|row| / qmax (the native kernel's reference). */
export function quantizeRowsReference(
  x: ArrayLike<number>, rows: number, cols: number, bits: number, out: Int8Array | Int16Array, scales: Float32Array,
): void {
  const qmax = symmetricQmax(bits);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let m = 0;
    for (let c = 0; c < cols; c++) {
      const a = Math.abs(x[base + c]);
      if (a > m) m = a;
    }
    // Stored in f32 because that is what travels/gets reused; quantize with the stored value so that
    // q * scale is the reconstruction everywhere.
    const s = Math.fround(m / qmax);
    scales[r] = s;
    // s == 0: a zero row, or one so tiny (< ~1e-43) that its scale underflows f32: all zeros, never NaN.
    if (s === 0) continue;
    for (let c = 0; c < cols; c++) {
      // |x/s| <= qmax (1 + 2^-23) < 2^51, so adding and removing ROUND_MAGIC rounds half to even
      // in the FPU's default mode: the same result as roundHalfEven, about 2x faster.
      let q = (x[base + c] / s + ROUND_MAGIC) - ROUND_MAGIC;
      if (q > qmax) q = qmax;
      else if (q < -qmax) q = -qmax;
      out[base + c] = q;
    }
  }
}

/** Dynamic per-token symmetric quantization of activations x[T, C] to `bits` bits (|q| <= 2^(bits-1)-1). */
export function quantizePerToken(x: Float32Array, T: number, C: number, bits = DEFAULT_ACT_BITS): QuantizedActivations {
  return quantizePerTokenAs(x, T, C, bits, 'activations');
}

/**
 * Per-token quantization of x, or of x times colScale per column (the backward's folded weight
 * scale: the product rounded to f32, then quantized) when given; a non-finite value is reported
 * with its position, in x as `what`, in the product as `what * weight scale`.
 */
function quantizePerTokenAs(x: Float32Array, T: number, C: number, bits: number, what: string, colScale: Float32Array | null = null): QuantizedActivations {
  checkBits(bits);
  checkDim(T, 'T');
  checkDim(C, 'C');
  checkLen(x, T * C, what);
  const values = bits <= 8 ? new Int8Array(T * C) : new Int16Array(T * C);
  const scales = new Float32Array(T);
  const productWhat = `${what} * weight scale`;
  const nk = nativeKernels();
  if (nk) {
    // One pass: the product, its check and the quantization (bit for bit the loops below).
    const bad = nk.quantizeRows(x, colScale, T, C, symmetricQmax(bits), values, scales);
    if (bad >= 0) throw nonFinite(x[bad]!, bad, C, what);
    if (bad <= -2) throw nonFinite(Math.fround(x[-bad - 2]! * colScale![(-bad - 2) % C]!), -bad - 2, C, productWhat);
    return { values, scales, rows: T, cols: C, bits };
  }
  checkFinite(x, C, what);
  let q = x;
  if (colScale) {
    q = new Float32Array(T * C);
    for (let t = 0; t < T; t++) {
      const base = t * C;
      for (let c = 0; c < C; c++) q[base + c] = x[base + c] * colScale[c];
    }
    // The product overflows f32 only for absurd gradients; that is reported, never quantized as Infinity.
    checkFinite(q, C, productWhat);
  }
  quantizeRowsReference(q, T, C, bits, values, scales);
  return { values, scales, rows: T, cols: C, bits };
}

/**
 * Static per-tensor quantization (one scale for all tokens), for comparison only: it loses badly on
 * activations with outlier tokens. Same output layout as quantizePerToken (the scale repeated per row).
 */
export function quantizePerTensor(x: Float32Array, T: number, C: number, bits = DEFAULT_ACT_BITS): QuantizedActivations {
  checkBits(bits);
  checkDim(T, 'T');
  checkDim(C, 'C');
  checkLen(x, T * C, 'activations');
  checkFinite(x, C, 'activations');
  const values = bits <= 8 ? new Int8Array(T * C) : new Int16Array(T * C);
  const one = new Float32Array(1);
  // Quantize as one long row, then repeat its scale per token.
  quantizeRowsReference(x, 1, T * C, bits, values, one);
  const scales = new Float32Array(T).fill(one[0]);
  return { values, scales, rows: T, cols: C, bits };
}

/** x ~ q * scale[row], rounded to f32. */
export function dequantizePerToken(q: QuantizedActivations): Float32Array {
  const { values, scales, rows, cols } = q;
  checkLen(values, rows * cols, 'quantized values');
  checkLen(scales, rows, 'quantized scales');
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = scales[r];
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[base + c] = values[base + c] * s;
  }
  return out;
}

/**
 * The range of per-channel weight scales a server may publish and a client accepts (both powers of
 * two, exact in f32): 2^-40 (about 9.1e-13, a largest |w| of about 1.2e-10) to 2^20 (about 1.05e6,
 * a largest |w| of about 1.3e8). Real checkpoints sit far inside (scales around 1e-4 .. 1e-1).
 */
export const MIN_WEIGHT_SCALE = 2 ** -40;
export const MAX_WEIGHT_SCALE = 2 ** 20;
/**
 * The scale published for a weight row that quantizes to all zeros (an all-zero row, or one whose
 * largest |w| is below 127 * MIN_WEIGHT_SCALE): any positive scale reconstructs zeros, and a tiny
 * one keeps the row's folded gradient (dy * scale, see prepareBackwardInput) from widening the
 * per-token range of the others.
 */
export const ZERO_ROW_WEIGHT_SCALE = 2 ** -30;

/** Per-output-channel 8-bit weights for W[rows = out features, cols = in features]. */
export function quantizeWeightsPerChannel(w: Float32Array, rows: number, cols: number): QuantizedWeights {
  checkDim(rows, 'rows');
  checkDim(cols, 'cols');
  checkLen(w, rows * cols, 'weights');
  checkFinite(w, cols, 'weights');
  const values = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  quantizeRowsReference(w, rows, cols, WEIGHT_BITS, values, scales);
  for (let r = 0; r < rows; r++) {
    if (scales[r] > MAX_WEIGHT_SCALE) {
      throw new Error(`helora: weight row ${r} has |w| up to ${scales[r] * symmetricQmax(WEIGHT_BITS)}, above the supported ${MAX_WEIGHT_SCALE * symmetricQmax(WEIGHT_BITS)}`);
    }
    if (scales[r] < MIN_WEIGHT_SCALE) {
      values.fill(0, r * cols, (r + 1) * cols);
      scales[r] = ZERO_ROW_WEIGHT_SCALE;
    }
  }
  return { values, scales, rows, cols };
}

/** y[t,o] = fround((acc[t,o] * sx[t]) * sw[o]); acc is T x OC row-major. */
export function dequantizeForward(
  acc: Int32Array | Float64Array, xScales: Float32Array, w: QuantizedWeights | Float32Array, T: number, OC: number,
): Float32Array {
  checkDim(T, 'T');
  checkDim(OC, 'OC');
  const sw = w instanceof Float32Array ? w : w.scales;
  checkLen(acc, T * OC, 'accumulator');
  checkLen(xScales, T, 'activation scales');
  checkLen(sw, OC, 'weight scales');
  const y = new Float32Array(T * OC);
  dequantizeForwardRange(acc, xScales, sw, OC, y, 0, T, 0, OC);
  return y;
}

/**
 * dequantizeForward for tokens [t0, t0 + tn) and outputs [o0, o0 + on) only, into y (T x OC): for
 * consuming results as their row ranges arrive. The caller has checked the shapes.
 */
export function dequantizeForwardRange(acc: Int32Array | Float64Array, xScales: Float32Array, sw: Float32Array, OC: number,
  y: Float32Array, t0: number, tn: number, o0: number, on: number): void {
  const nk = nativeKernels();
  if (nk) return nk.dequantize(acc, xScales, sw, OC, y, t0, tn, o0, on);
  dequantizeForwardRangeReference(acc, xScales, sw, OC, y, t0, tn, o0, on);
}

/** dequantizeForwardRange in TypeScript (the native kernel's reference). */
export function dequantizeForwardRangeReference(acc: Int32Array | Float64Array, xScales: Float32Array, sw: Float32Array, OC: number,
  y: Float32Array, t0: number, tn: number, o0: number, on: number): void {
  for (let t = t0; t < t0 + tn; t++) {
    const sx = xScales[t];
    const base = t * OC;
    for (let o = o0; o < o0 + on; o++) y[base + o] = (acc[base + o] * sx) * sw[o];
  }
}

/** Quantizes the backward input dy[t,o] * sw[o] per token (the weight scale folded in, see top). */
export function prepareBackwardInput(
  dy: Float32Array, T: number, OC: number, wScales: Float32Array, bits = DEFAULT_ACT_BITS,
): QuantizedActivations {
  checkBits(bits);
  checkDim(T, 'T');
  checkDim(OC, 'OC');
  checkLen(dy, T * OC, 'gradient');
  checkLen(wScales, OC, 'weight scales');
  return quantizePerTokenAs(dy, T, OC, bits, 'gradient', wScales);
}

/** dx[t,i] = fround(acc[t,i] * s[t]); acc is T x C row-major. */
export function dequantizeBackward(acc: Int32Array | Float64Array, dyScales: Float32Array, T: number, C: number): Float32Array {
  checkDim(T, 'T');
  checkDim(C, 'C');
  checkLen(acc, T * C, 'accumulator');
  checkLen(dyScales, T, 'gradient scales');
  const dx = new Float32Array(T * C);
  dequantizeBackwardRange(acc, dyScales, C, dx, 0, T, 0, C);
  return dx;
}

/** dequantizeBackward for tokens [t0, t0 + tn) and inputs [i0, i0 + n) only, into dx (T x C); shapes checked by the caller. */
export function dequantizeBackwardRange(acc: Int32Array | Float64Array, dyScales: Float32Array, C: number,
  dx: Float32Array, t0: number, tn: number, i0: number, n: number): void {
  const nk = nativeKernels();
  if (nk) return nk.dequantize(acc, dyScales, null, C, dx, t0, tn, i0, n);
  dequantizeBackwardRangeReference(acc, dyScales, C, dx, t0, tn, i0, n);
}

/** dequantizeBackwardRange in TypeScript (the native kernel's reference). */
export function dequantizeBackwardRangeReference(acc: Int32Array | Float64Array, dyScales: Float32Array, C: number,
  dx: Float32Array, t0: number, tn: number, i0: number, n: number): void {
  for (let t = t0; t < t0 + tn; t++) {
    const s = dyScales[t];
    const base = t * C;
    for (let i = i0; i < i0 + n; i++) dx[base + i] = acc[base + i] * s;
  }
}

function checkWeights(wq: QuantizedWeights): void {
  checkDim(wq.rows, 'weight rows');
  checkDim(wq.cols, 'weight cols');
  checkLen(wq.values, wq.rows * wq.cols, 'quantized weights');
  checkLen(wq.scales, wq.rows, 'weight scales');
}

/** True when an int8 x int8 GEMM summing K terms fits an int32 accumulator. */
function int8Fits(bits: number, K: number): boolean {
  return bits <= 8 && K <= GEMM_INT8_MAX_K && maxAbsProduct(bits, WEIGHT_BITS, K) <= INT32_MAX;
}

/** Exact integer accumulators when the result exceeds int32 (bits > 8): doubles are exact below 2^53. */
function checkExactF64(bits: number, K: number): void {
  if (maxAbsProduct(bits, WEIGHT_BITS, K) > Number.MAX_SAFE_INTEGER) {
    throw new Error(`helora: ${bits}-bit activations with K = ${K} overflow exact double accumulation`);
  }
}

/** W^T (cols x rows) of each frozen weight matrix, made on first use. */
const weightTransposes = new WeakMap<QuantizedWeights, Int8Array>();

/** rows x cols row-major -> cols x rows. */
export function transposeInt8(src: Int8Array, rows: number, cols: number): Int8Array {
  const out = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return out;
}

function transposedWeights(wq: QuantizedWeights): Int8Array {
  let wt = weightTransposes.get(wq);
  if (!wt) {
    wt = transposeInt8(wq.values, wq.rows, wq.cols);
    weightTransposes.set(wq, wt);
  }
  return wt;
}

/** Integer y-accumulator acc[t,o] = sum_i qx[t,i] qw[o,i] (T x OC), exact. The weights must not change afterwards (W^T is kept). */
export function forwardAccumulate(qx: QuantizedActivations, wq: QuantizedWeights): Int32Array | Float64Array {
  checkWeights(wq);
  const T = qx.rows, C = qx.cols, OC = wq.rows;
  if (wq.cols !== C) throw new Error(`helora: weight has ${wq.cols} input features, activations have ${C}`);
  checkLen(qx.values, T * C, 'quantized activations');
  if (int8Fits(qx.bits, C) && qx.values instanceof Int8Array) {
    // X (T x C) . W^T (C x OC): the activations are the GEMM's packed left operand and W^T is kept,
    // so the result is token-major and nothing is transposed per call (the sums are the same integers).
    return T * C * OC === 0 ? new Int32Array(T * OC) : gemmInt8(qx.values, transposedWeights(wq), T, C, OC);
  }
  checkExactF64(qx.bits, C);
  const acc = new Float64Array(T * OC);
  const xv = qx.values, wv = wq.values;
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < OC; o++) {
      let s = 0;
      for (let i = 0; i < C; i++) s += xv[t * C + i] * wv[o * C + i];
      acc[t * OC + o] = s;
    }
  }
  return acc;
}

/** Integer dx-accumulator acc[t,i] = sum_o qdy[t,o] qw[o,i] (T x C), exact. */
export function backwardAccumulate(qdy: QuantizedActivations, wq: QuantizedWeights): Int32Array | Float64Array {
  checkWeights(wq);
  const T = qdy.rows, OC = qdy.cols, C = wq.cols;
  if (wq.rows !== OC) throw new Error(`helora: weight has ${wq.rows} output features, gradient has ${OC}`);
  checkLen(qdy.values, T * OC, 'quantized gradient');
  if (int8Fits(qdy.bits, OC) && qdy.values instanceof Int8Array) {
    return T * OC * C === 0 ? new Int32Array(T * C) : gemmInt8(qdy.values, wq.values, T, OC, C);
  }
  checkExactF64(qdy.bits, OC);
  const acc = new Float64Array(T * C);
  const dv = qdy.values, wv = wq.values;
  for (let t = 0; t < T; t++) {
    const row = t * C;
    for (let o = 0; o < OC; o++) {
      const d = dv[t * OC + o];
      if (d === 0) continue;
      const wb = o * C;
      for (let i = 0; i < C; i++) acc[row + i] += d * wv[wb + i];
    }
  }
  return acc;
}

/** Plaintext quantized forward y = x W^T (T x OC): the integers the encrypted path computes. */
export function quantizedLinearForward(x: Float32Array, T: number, C: number, wq: QuantizedWeights, bits = DEFAULT_ACT_BITS): Float32Array {
  checkWeights(wq);
  const qx = quantizePerToken(x, T, C, bits);
  const acc = forwardAccumulate(qx, wq);
  return dequantizeForward(acc, qx.scales, wq, T, wq.rows);
}

/** Plaintext quantized backward dx = dy W (T x C): the integers the encrypted path computes. */
export function quantizedLinearBackward(dy: Float32Array, T: number, OC: number, wq: QuantizedWeights, bits = DEFAULT_ACT_BITS): Float32Array {
  checkWeights(wq);
  if (wq.rows !== OC) throw new Error(`helora: weight has ${wq.rows} output features, gradient has ${OC}`);
  const qdy = prepareBackwardInput(dy, T, OC, wq.scales, bits);
  const acc = backwardAccumulate(qdy, wq);
  return dequantizeBackward(acc, qdy.scales, T, wq.cols);
}
