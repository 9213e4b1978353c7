/**
 * The server's encrypted product over Z_2^44 (batch-packed RLWE, design-notes section 2).
 *
 * For public int8 weights W (rows x cols, |W| <= 127) and one column block of N tokens:
 *   aAcc[o][t] = sum_i W[o,i] * A[i][t]          mod 2^44
 *   bAcc[o][t] = sum_i W[o,i] * (B[i][t] << 4)   mod 2^44
 *   aOut = floor((aAcc + 2^11) / 2^12) mod 2^32,  bOut likewise   (modulus switch 44 -> 32 bits)
 * A(i,t) is the 48-bit little-endian word at aBytes[6*(i*N+t)] masked to 44 bits; B(i,t) the
 * 40-bit word at bBytes[5*(i*N+t)].
 *
 * Method: exact int16 limb GEMMs on i32x4.dot_i16x8_s. An int32 accumulator is exact mod 2^32 even
 * when it wraps, and limb k (weight 2^s_k) only matters mod 2^(44 - s_k), so only the lowest limb
 * must not overflow:
 *   A = a0 + a1*2^12 + a2*2^28, a0 in [-2048, 2047] (127*2048*8192 < 2^31: exact for <= 8192 cols),
 *       a1, a2 int16 (a1 matters mod 2^32, a2 mod 2^16: wrapping is harmless);
 *   B<<4 = b0*2^4 + b1*2^12 + b2*2^28, b0 in [-128, 127], b1, b2 int16.
 * Six int16 GEMMs (one pass over a limb matrix with 6N columns) instead of the eight of 4 x 12-bit
 * limbs. Columns beyond 8192 are processed in chunks whose sums are added mod 2^44 before rounding.
 */
import { kernelEngine, packedInt8Bytes, ZQ_MAX_EXACT_COLS } from './engine.js';
import { nativeKernels } from './native.js';

/** Ciphertext modulus bits. */
export const ZQ_LOG_Q = 44;
/** b travels with 40 bits; it is shifted back by logQ - 40. */
export const ZQ_B_SHIFT = 4;
/** Bits dropped by the output modulus switch to 32 bits: logQ - 32. */
export const ZQ_DROP_BITS = 12;
/** Bytes per uploaded mask word a (48-bit words, masked to 44 bits). */
export const ZQ_A_BYTES = 6;
/** Bytes per uploaded body word b (40 bits). */
export const ZQ_B_BYTES = 5;
/** Largest supported |W|. */
export const ZQ_MAX_ABS_W = 127;

/** Int8 weights packed once (4-row blocks of i16 pairs) for zqMatmul. */
export class ZqWeights {
  private constructor(readonly rows: number, readonly cols: number, readonly packed: Uint8Array) {}

  static pack(w: Int8Array, rows: number, cols: number): ZqWeights {
    checkWeights(w, rows, cols);
    const e = kernelEngine();
    const ptr = e.packInt8(w, rows, cols, false);
    const packed = e.heap.u8(ptr, packedInt8Bytes(rows, cols)).slice();
    return new ZqWeights(rows, cols, packed);
  }
}

export function checkWeights(w: Int8Array, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || rows <= 0) throw new Error(`helora: zq weights rows must be a positive integer, got ${rows}`);
  if (!Number.isInteger(cols) || cols <= 0) throw new Error(`helora: zq weights cols must be a positive integer, got ${cols}`);
  if (w.length !== rows * cols) throw new Error(`helora: zq weights have ${w.length} values, expected rows*cols = ${rows * cols}`);
  const bad = w.indexOf(-128);
  if (bad >= 0) throw new Error(`helora: zq weights must satisfy |W| <= ${ZQ_MAX_ABS_W}; found -128 at index ${bad}`);
}

/** Validates the shapes of one product call (shared by the single-thread and pool paths). */
export function checkZqCall(rows: number, cols: number, aBytes: Uint8Array, bBytes: Uint8Array, N: number, aOut?: Uint32Array, bOut?: Uint32Array): void {
  if (!Number.isInteger(N) || N <= 0 || N % 8 !== 0) throw new Error(`helora: zqMatmul N must be a positive multiple of 8, got ${N}`);
  if (aBytes.length !== cols * N * ZQ_A_BYTES) throw new Error(`helora: zqMatmul aBytes has ${aBytes.length} bytes, expected cols*N*${ZQ_A_BYTES} = ${cols * N * ZQ_A_BYTES}`);
  if (bBytes.length !== cols * N * ZQ_B_BYTES) throw new Error(`helora: zqMatmul bBytes has ${bBytes.length} bytes, expected cols*N*${ZQ_B_BYTES} = ${cols * N * ZQ_B_BYTES}`);
  if (aOut && aOut.length !== rows * N) throw new Error(`helora: zqMatmul aOut has ${aOut.length} values, expected rows*N = ${rows * N}`);
  if (bOut && bOut.length !== rows * N) throw new Error(`helora: zqMatmul bOut has ${bOut.length} values, expected rows*N = ${rows * N}`);
}

function checkShifts(logQ: number, bShift: number, dropBits: number): void {
  if (logQ !== ZQ_LOG_Q || bShift !== ZQ_B_SHIFT || dropBits !== ZQ_DROP_BITS) {
    throw new Error(`helora: zqMatmul supports only logQ=${ZQ_LOG_Q}, bShift=${ZQ_B_SHIFT}, dropBits=${ZQ_DROP_BITS}; got ${logQ}, ${bShift}, ${dropBits}`);
  }
}

/** The encrypted product on one thread (native kernels, else WebAssembly SIMD). Writes aOut, bOut (rows x N). */
export function zqMatmul(w: ZqWeights, aBytes: Uint8Array, bBytes: Uint8Array, N: number, aOut: Uint32Array, bOut: Uint32Array,
  logQ = ZQ_LOG_Q, bShift = ZQ_B_SHIFT, dropBits = ZQ_DROP_BITS): void {
  checkShifts(logQ, bShift, dropBits);
  checkZqCall(w.rows, w.cols, aBytes, bBytes, N, aOut, bOut);
  const nk = nativeKernels();
  if (nk) return nk.zq(w.packed, w.rows, w.cols, aBytes, bBytes, N, aOut, bOut);
  const e = kernelEngine();
  const wp = e.loadPacked(w.packed);
  e.zqPacked(wp, w.rows, w.cols, aBytes, bBytes, N, aOut, bOut);
}

const TWO22 = 2 ** 22;
const TWO44 = 2 ** 44;

/**
 * Plain-TS reference, independent of the limb method: every operand is split into two 22-bit
 * halves so that all partial sums stay exact in doubles (|W * half| * cols < 2^53).
 */
export function zqMatmulReference(w: Int8Array, rows: number, cols: number, aBytes: Uint8Array, bBytes: Uint8Array, N: number, aOut: Uint32Array, bOut: Uint32Array,
  logQ = ZQ_LOG_Q, bShift = ZQ_B_SHIFT, dropBits = ZQ_DROP_BITS): void {
  checkShifts(logQ, bShift, dropBits);
  checkWeights(w, rows, cols);
  checkZqCall(rows, cols, aBytes, bBytes, N, aOut, bOut);
  const total = cols * N;
  const aHi = new Float64Array(total), aLo = new Float64Array(total);
  const bHi = new Float64Array(total), bLo = new Float64Array(total);
  for (let j = 0; j < total; j++) {
    const p = j * ZQ_A_BYTES;
    const a = aBytes[p]! + aBytes[p + 1]! * 2 ** 8 + aBytes[p + 2]! * 2 ** 16 + aBytes[p + 3]! * 2 ** 24 + aBytes[p + 4]! * 2 ** 32 + (aBytes[p + 5]! & 0x0f) * 2 ** 40;
    const q = j * ZQ_B_BYTES;
    const b = (bBytes[q]! + bBytes[q + 1]! * 2 ** 8 + bBytes[q + 2]! * 2 ** 16 + bBytes[q + 3]! * 2 ** 24 + bBytes[q + 4]! * 2 ** 32) * 2 ** bShift;
    aHi[j] = Math.floor(a / TWO22); aLo[j] = a % TWO22;
    bHi[j] = Math.floor(b / TWO22); bLo[j] = b % TWO22;
  }
  const half = 2 ** (dropBits - 1);
  const div = 2 ** dropBits;
  const combine = (hi: number, lo: number): number => {
    // (hi mod 2^22) * 2^22 + lo, then mod 2^44; all terms below 2^53.
    const h = ((hi % TWO22) + TWO22) % TWO22;
    const s = ((h * TWO22 + lo) % TWO44 + TWO44) % TWO44;
    return Math.floor((s + half) / div) % 2 ** 32;
  };
  for (let o = 0; o < rows; o++) {
    for (let t = 0; t < N; t++) {
      let sah = 0, sal = 0, sbh = 0, sbl = 0;
      for (let i = 0; i < cols; i++) {
        const wv = w[o * cols + i]!;
        if (wv === 0) continue;
        const j = i * N + t;
        sah += wv * aHi[j]!; sal += wv * aLo[j]!;
        sbh += wv * bHi[j]!; sbl += wv * bLo[j]!;
      }
      aOut[o * N + t] = combine(sah, sal);
      bOut[o * N + t] = combine(sbh, sbl);
    }
  }
}
