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

/**
 * The parameter-set fields the product depends on (an RlweParams from src/crypto/params.ts fits:
 * kernels sit below crypto, so they name the fields instead of importing the type).
 */
export interface ZqModulus {
  readonly name: string;
  /** q = 2^logQ. */
  readonly logQ: number;
  /** b arrives rounded to its top uploadBits bits. */
  readonly uploadBits: number;
  /** Both results leave rounded to downloadBits bits. */
  readonly downloadBits: number;
  /** Largest |W| the parameter set allows. */
  readonly maxAbsWeight: number;
}

/** Widths of one product, all derived from the modulus. */
export interface ZqLayout {
  logQ: number;
  /** b is shifted back by logQ - uploadBits. */
  bShift: number;
  /** Bits dropped by the output modulus switch: logQ - downloadBits. */
  dropBits: number;
  /** Bytes per expanded mask word a (little-endian, low logQ bits used). */
  aBytes: number;
  /** Bytes per uploaded body word b. */
  bBytes: number;
}

/** Largest |W| the limb split is exact for (the lowest limb's int32 bound, engine.ts ZQ_MAX_EXACT_COLS). */
export const ZQ_MAX_ABS_W = 127;

export function zqLayout(m: ZqModulus): ZqLayout {
  return {
    logQ: m.logQ,
    bShift: m.logQ - m.uploadBits,
    dropBits: m.logQ - m.downloadBits,
    aBytes: Math.ceil(m.logQ / 8),
    bBytes: Math.ceil(m.uploadBits / 8),
  };
}

/**
 * The layout of the one limb plan the WebAssembly kernel implements (12+16+16 bits of a, 8+16+16
 * of b << 4, 32-bit results). A parameter set with other widths needs its own limb plan here.
 */
export const ZQ_KERNEL_LAYOUT: Readonly<ZqLayout> = Object.freeze({ logQ: 44, bShift: 4, dropBits: 12, aBytes: 6, bBytes: 5 });

/** The product's layout for this modulus; throws when the kernel has no limb plan for it. */
export function kernelLayout(m: ZqModulus): ZqLayout {
  const l = zqLayout(m);
  const k = ZQ_KERNEL_LAYOUT;
  if (l.logQ !== k.logQ || l.bShift !== k.bShift || l.dropBits !== k.dropBits || l.aBytes !== k.aBytes || l.bBytes !== k.bBytes || m.maxAbsWeight > ZQ_MAX_ABS_W) {
    throw new Error(`helora: the Z_q kernel has a limb plan only for logQ ${k.logQ}, upload ${k.logQ - k.bShift} bits, download ${k.logQ - k.dropBits} bits, |W| <= ${ZQ_MAX_ABS_W}; ` +
      `parameter set ${m.name} has logQ ${m.logQ}, upload ${m.uploadBits}, download ${m.downloadBits}, |W| <= ${m.maxAbsWeight}`);
  }
  return l;
}

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

function checkWeightShape(w: Int8Array, rows: number, cols: number): void {
  if (!Number.isInteger(rows) || rows <= 0) throw new Error(`helora: zq weights rows must be a positive integer, got ${rows}`);
  if (!Number.isInteger(cols) || cols <= 0) throw new Error(`helora: zq weights cols must be a positive integer, got ${cols}`);
  if (w.length !== rows * cols) throw new Error(`helora: zq weights have ${w.length} values, expected rows*cols = ${rows * cols}`);
}

/** Shape, and the limb plan's weight range. */
export function checkWeights(w: Int8Array, rows: number, cols: number): void {
  checkWeightShape(w, rows, cols);
  const bad = w.indexOf(-128);
  if (bad >= 0) throw new Error(`helora: zq weights must satisfy |W| <= ${ZQ_MAX_ABS_W}; found -128 at index ${bad}`);
}

/** Validates the shapes of one product call (shared by the single-thread and pool paths). */
export function checkZqCall(layout: ZqLayout, rows: number, cols: number, aBytes: Uint8Array, bBytes: Uint8Array, N: number, aOut?: Uint32Array, bOut?: Uint32Array): void {
  const { aBytes: ab, bBytes: bb } = layout;
  if (!Number.isInteger(N) || N <= 0 || N % 8 !== 0) throw new Error(`helora: zqMatmul N must be a positive multiple of 8, got ${N}`);
  if (aBytes.length !== cols * N * ab) throw new Error(`helora: zqMatmul aBytes has ${aBytes.length} bytes, expected cols*N*${ab} = ${cols * N * ab}`);
  if (bBytes.length !== cols * N * bb) throw new Error(`helora: zqMatmul bBytes has ${bBytes.length} bytes, expected cols*N*${bb} = ${cols * N * bb}`);
  if (aOut && aOut.length !== rows * N) throw new Error(`helora: zqMatmul aOut has ${aOut.length} values, expected rows*N = ${rows * N}`);
  if (bOut && bOut.length !== rows * N) throw new Error(`helora: zqMatmul bOut has ${bOut.length} values, expected rows*N = ${rows * N}`);
}

/** The encrypted product on one thread (native kernels, else WebAssembly SIMD). Writes aOut, bOut (rows x N). */
export function zqMatmul(modulus: ZqModulus, w: ZqWeights, aBytes: Uint8Array, bBytes: Uint8Array, N: number, aOut: Uint32Array, bOut: Uint32Array): void {
  checkZqCall(kernelLayout(modulus), w.rows, w.cols, aBytes, bBytes, N, aOut, bOut);
  const nk = nativeKernels();
  if (nk) return nk.zq(w.packed, w.rows, w.cols, aBytes, bBytes, N, aOut, bOut);
  const e = kernelEngine();
  const wp = e.loadPacked(w.packed);
  e.zqPacked(wp, w.rows, w.cols, aBytes, bBytes, N, aOut, bOut);
}

const TWO22 = 2 ** 22;

/** Little-endian unsigned integer of `bytes` bytes at byte offset p (bytes <= 6: exact in a double). */
function readWord(src: Uint8Array, p: number, bytes: number): number {
  let v = 0;
  for (let k = bytes - 1; k >= 0; k--) v = v * 256 + src[p + k]!;
  return v;
}

/**
 * Plain-TS reference, independent of the limb method and of the kernel's limb plan (any logQ <= 44
 * and any widths): every operand is split into two 22-bit halves so that all partial sums stay
 * exact in doubles (|W * half| * cols < 2^53 for cols < 2^24).
 */
export function zqMatmulReference(modulus: ZqModulus, w: Int8Array, rows: number, cols: number, aBytes: Uint8Array, bBytes: Uint8Array, N: number, aOut: Uint32Array, bOut: Uint32Array): void {
  const layout = zqLayout(modulus);
  const { bShift, dropBits, aBytes: ab, bBytes: bb } = layout;
  if (modulus.logQ > 44 || ab > 6 || modulus.downloadBits > 32) throw new Error(`helora: zqMatmulReference supports logQ <= 44 and downloads <= 32 bits, got ${modulus.name}`);
  if (cols >= 2 ** 24) throw new Error(`helora: zqMatmulReference supports cols < 2^24, got ${cols}`);
  checkWeightShape(w, rows, cols); // any int8 weight, -128 included: no limb plan here
  checkZqCall(layout, rows, cols, aBytes, bBytes, N, aOut, bOut);
  const q = 2 ** modulus.logQ;
  const total = cols * N;
  const aHi = new Float64Array(total), aLo = new Float64Array(total);
  const bHi = new Float64Array(total), bLo = new Float64Array(total);
  for (let j = 0; j < total; j++) {
    const a = readWord(aBytes, j * ab, ab) % q;
    const b = (readWord(bBytes, j * bb, bb) * 2 ** bShift) % q;
    aHi[j] = Math.floor(a / TWO22); aLo[j] = a % TWO22;
    bHi[j] = Math.floor(b / TWO22); bLo[j] = b % TWO22;
  }
  const half = 2 ** (dropBits - 1);
  const div = 2 ** dropBits;
  const outMod = 2 ** modulus.downloadBits;
  const combine = (hi: number, lo: number): number => {
    // (hi mod 2^22) * 2^22 + lo, then mod q; all terms below 2^53.
    const h = ((hi % TWO22) + TWO22) % TWO22;
    const s = ((h * TWO22 + lo) % q + q) % q;
    return Math.floor((s + half) / div) % outMod;
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
