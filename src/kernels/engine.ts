/**
 * One thread's instance of the GEMM WebAssembly module (build/wasm/gemm.wasm) with typed entry
 * points. Used by the single-thread wrappers (gemm-int8.ts, gemm-f32.ts, matmul-f32.ts,
 * zq-matmul.ts) and by each pool worker. Not re-entrant (JS is single-threaded per isolate).
 */
import { instantiateWasm, WasmHeap } from './wasm.js';

export interface GemmExports {
  memory: WebAssembly.Memory;
  heapBase(): number;
  packA8(src: number, M: number, K: number, lda: number, dst: number): void;
  packB8(src: number, K: number, N: number, ldb: number, dst: number): void;
  gemm16(A: number, aK2: number, B: number, bK2: number, q0: number, q1: number, C: number, Mb: number, P: number, ldc: number, overwrite: number): void;
  copyOutI32(C: number, ldc: number, M: number, N: number, out: number): void;
  int16KernelPeak(A: number, B: number, C: number, n: number, reps: number): void;
  zqMatmul(Wp: number, rows: number, cols: number, aBytes: number, bBytes: number, N: number, aOut: number, bOut: number,
    Tb: number, kChunk: number, X: number, C: number, acc: number): void;
  packA32(src: number, M: number, K: number, sai: number, sak: number, dst: number): void;
  packB32(src: number, K: number, N: number, sbk: number, sbj: number, dst: number): void;
  gemm32(A: number, B: number, K: number, C: number, Mb: number, P: number, ldc: number): void;
  finishF32(C: number, ldc: number, M: number, N: number, out: number, soi: number, soj: number, accumulate: number, bias: number): void;
  smallForwardF32(out: number, inp: number, w: number, bias: number, T: number, C: number, OC: number): void;
  smallBackwardInputF32(dinp: number, dout: number, w: number, T: number, C: number, OC: number): void;
  smallBackwardWeightF32(dw: number, dout: number, inp: number, T: number, C: number, OC: number): void;
}

/** Tokens per block of the encrypted product: 6 limbs x 64 tokens = 48 panels of 8 columns. */
export const ZQ_TOKEN_BLOCK = 64;
/** Largest K range whose lowest A limb sums exactly in int32: 127 * 2048 * 8192 < 2^31. */
export const ZQ_MAX_EXACT_COLS = 8192;
const ZQ_LIMBS = 6;

/** Bytes of int8 weights packed into 4-row blocks of i16 pairs. */
export function packedInt8Bytes(M: number, K: number): number {
  return Math.ceil(M / 4) * Math.ceil(K / 2) * 16;
}
/** Bytes of f32 weights packed into 4-row blocks (A form). */
export function packedF32ABytes(M: number, K: number): number {
  return Math.ceil(M / 4) * K * 16;
}
/** Bytes of f32 values packed into 8-column panels (B form). */
export function packedF32BBytes(K: number, N: number): number {
  return Math.ceil(N / 8) * K * 32;
}

/** Strided view of an f32 matrix: element (i, j) at data[offset + i*si + j*sj]. */
export interface F32Operand {
  data: Float32Array;
  offset: number;
  si: number;
  sj: number;
}

export class KernelEngine {
  readonly heap: WasmHeap;
  /** The raw module exports (byte-offset API of gemm.entry.ts), for benchmarks and experiments. */
  readonly ex: GemmExports;

  /** moduleName: build/wasm/<moduleName>.wasm (another name only for A/B experiments). */
  constructor(moduleName = 'gemm') {
    const inst = instantiateWasm(moduleName);
    this.ex = inst.exports as unknown as GemmExports;
    this.heap = new WasmHeap(this.ex.memory, this.ex.heapBase());
  }

  // ---- int8 weights (A side of the int16 kernel) ----

  /** Packs int8 w[M][K]; returns its pointer. permanent: keep it resident (pool workers). */
  packInt8(w: Int8Array, M: number, K: number, permanent: boolean): number {
    const bytes = packedInt8Bytes(M, K);
    const dst = permanent ? this.heap.allocPermanent(bytes) : this.heap.alloc(bytes);
    const src = this.heap.alloc(w.length);
    this.heap.i8(src, w.length).set(w);
    this.ex.packA8(src, M, K, K, dst);
    return dst;
  }

  /** Copies already packed int8 weights (ZqWeights.packed) into scratch. */
  loadPacked(packed: Uint8Array): number {
    const dst = this.heap.alloc(packed.length);
    this.heap.u8(dst, packed.length).set(packed);
    return dst;
  }

  /**
   * out[M][N] = Wpacked · x[K][N], exact int32. The result goes to into[intoOffset...] when given
   * (e.g. a pool's shared result buffer), else to a new array.
   */
  gemmInt8Packed(wp: number, M: number, K: number, x: Int8Array, N: number, into?: Int32Array, intoOffset = 0): Int32Array {
    const ex = this.ex;
    const h = this.heap;
    const K2 = Math.ceil(K / 2);
    const Mb = Math.ceil(M / 4);
    const P = Math.ceil(N / 8);
    const xs = h.alloc(x.length);
    h.i8(xs, x.length).set(x);
    const xp = h.alloc(P * K2 * 32);
    ex.packB8(xs, K, N, N, xp);
    const ldc = P * 8;
    const c = h.alloc(Mb * 4 * ldc * 4);
    ex.gemm16(wp, K2, xp, K2, 0, K2, c, Mb, P, ldc, 1);
    let o = c; // already compact when no padding was needed
    if (ldc !== N) {
      o = h.alloc(M * N * 4);
      ex.copyOutI32(c, ldc, M, N, o);
    }
    const result = h.i32(o, M * N);
    if (!into) return result.slice();
    into.set(result, intoOffset);
    return into;
  }

  /** The encrypted product over packed weights; see zq-matmul.ts for the contract. */
  zqPacked(wp: number, rows: number, cols: number, aBytes: Uint8Array, bBytes: Uint8Array, N: number, aOut: Uint32Array, bOut: Uint32Array, tokenBlock = ZQ_TOKEN_BLOCK): void {
    const ex = this.ex;
    const h = this.heap;
    const Tb = Math.min(tokenBlock, N);
    const kChunk = Math.min(ZQ_MAX_EXACT_COLS, cols + (cols & 1));
    const ap = h.alloc(aBytes.length);
    h.u8(ap, aBytes.length).set(aBytes);
    const bp = h.alloc(bBytes.length);
    h.u8(bp, bBytes.length).set(bBytes);
    const xBuf = h.alloc(Math.ceil(kChunk / 2) * 32 * (ZQ_LIMBS * Tb) / 8);
    const cBuf = h.alloc(Math.ceil(rows / 4) * 4 * ZQ_LIMBS * Tb * 4);
    const accBuf = cols > kChunk ? h.alloc(rows * 2 * Tb * 8) : 0;
    const ao = h.alloc(rows * N * 4);
    const bo = h.alloc(rows * N * 4);
    ex.zqMatmul(wp, rows, cols, ap, bp, N, ao, bo, Tb, kChunk, xBuf, cBuf, accBuf);
    aOut.set(h.u32(ao, rows * N));
    bOut.set(h.u32(bo, rows * N));
  }

  // ---- f32 ----

  /** Packs A (M x K, strided) into 4-row blocks. */
  packF32A(a: F32Operand, M: number, K: number, permanent: boolean): number {
    const dst = permanent ? this.heap.allocPermanent(packedF32ABytes(M, K)) : this.heap.alloc(packedF32ABytes(M, K));
    const src = this.stage(a, M, K);
    this.ex.packA32(src.ptr, M, K, a.si, a.sj, dst);
    return dst;
  }

  /** Packs B (K x N, strided) into 8-column panels. */
  packF32B(b: F32Operand, K: number, N: number, permanent: boolean): number {
    const dst = permanent ? this.heap.allocPermanent(packedF32BBytes(K, N)) : this.heap.alloc(packedF32BBytes(K, N));
    const src = this.stage(b, K, N);
    this.ex.packB32(src.ptr, K, N, b.si, b.sj, dst);
    return dst;
  }

  /**
   * out(i, j) (= or +=) sum_k A(i,k) B(k,j) (+ bias[j]) for packed A (M x K) and B (K x N);
   * out element (i, j) at out.data[out.offset + i*out.si + j*out.sj].
   */
  gemmF32Packed(ap: number, bp: number, M: number, K: number, N: number, out: F32Operand, accumulate: boolean, bias: Float32Array | null): void {
    const ex = this.ex;
    const h = this.heap;
    const Mb = Math.ceil(M / 4);
    const P = Math.ceil(N / 8);
    const ldc = P * 8;
    const cLen = Mb * 4 * ldc;
    const c = h.alloc(cLen * 4);
    h.f32(c, cLen).fill(0);
    if (K > 0) ex.gemm32(ap, bp, K, c, Mb, P, ldc);
    let bp2 = 0;
    if (bias) {
      bp2 = h.alloc(N * 4);
      h.f32(bp2, N).set(bias.subarray(0, N));
    }
    // Stage the output region (contiguous span covering all (i, j)), finish in wasm, copy back.
    const st = this.stage(out, M, N);
    ex.finishF32(c, ldc, M, N, st.ptr, out.si, out.sj, accumulate ? 1 : 0, bp2);
    out.data.set(h.f32(st.ptr, st.len), st.first);
  }

  /**
   * Few-token llm.c matmuls (see matmul-f32.ts) that read the weights in place instead of packing
   * them. Arrays are used from index 0 with the lengths given by T, C, OC.
   */
  smallMatmul(op: 'fwd' | 'bwdIn' | 'bwdW', target: Float32Array, x: Float32Array, y: Float32Array, bias: Float32Array | null, T: number, C: number, OC: number): void {
    const ex = this.ex;
    const put = (a: Float32Array, n: number): number => {
      const p = this.heap.alloc(n * 4);
      this.heap.f32(p, n).set(a.subarray(0, n));
      return p;
    };
    if (op === 'fwd') {
      const ip = put(x, T * C), wp = put(y, OC * C), bp = bias ? put(bias, OC) : 0;
      const op2 = this.heap.alloc(T * OC * 4);
      ex.smallForwardF32(op2, ip, wp, bp, T, C, OC);
      target.set(this.heap.f32(op2, T * OC));
    } else if (op === 'bwdIn') {
      const tp = put(target, T * C), dp = put(x, T * OC), wp = put(y, OC * C);
      ex.smallBackwardInputF32(tp, dp, wp, T, C, OC);
      target.set(this.heap.f32(tp, T * C));
    } else {
      const tp = put(target, OC * C), dp = put(x, T * OC), ip = put(y, T * C);
      ex.smallBackwardWeightF32(tp, dp, ip, T, C, OC);
      target.set(this.heap.f32(tp, OC * C));
    }
  }

  /**
   * Copies the smallest contiguous span of a strided operand (rows x cols) into scratch; returns
   * the pointer of element (0,0) in wasm memory (strides unchanged) and the span.
   */
  private stage(a: F32Operand, rows: number, cols: number): { ptr: number; first: number; len: number } {
    if (a.si < 0 || a.sj < 0) throw new Error('helora: negative strides are not supported');
    const first = a.offset;
    const len = rows === 0 || cols === 0 ? 0 : (rows - 1) * a.si + (cols - 1) * a.sj + 1;
    if (first + len > a.data.length) throw new Error(`helora: f32 operand needs ${first + len} values, has ${a.data.length}`);
    const ptr = this.heap.alloc(len * 4);
    this.heap.f32(ptr, len).set(a.data.subarray(first, first + len));
    return { ptr, first, len };
  }
}

let engine: KernelEngine | null = null;

/** This thread's engine (created on first use). Each call resets its scratch memory. */
export function kernelEngine(): KernelEngine {
  if (!engine) engine = new KernelEngine();
  engine.heap.resetScratch();
  return engine;
}
