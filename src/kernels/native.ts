/**
 * The native kernel backend: build/native/helora.node (src/kernels/native/*.c, built by
 * scripts/build-native.mjs with the system C compiler), with runtime CPU dispatch.
 *
 * Backend choice, once per thread: HELORA_KERNELS=native|wasm forces one (native forced but not
 * built or not loadable is an error); unset, native runs when it loads and WebAssembly otherwise.
 * The CPU level is the best this CPU runs; HELORA_NATIVE_LEVEL=<level> or setNativeLevel() picks a
 * lower one (tests run every level). One line on stderr at first use (main thread) says which
 * backend and level run.
 *
 * Every entry checks its sizes here, and the addon checks them again against the arrays it gets.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { isMainThread } from 'node:worker_threads';
import { repoRoot } from '../util/paths.js';
import type { F32Operand } from './engine.js';

interface Addon {
  levels(): { name: string; index: number }[];
  packI8(w: Int8Array, M: number, K: number, dst: Uint8Array): void;
  zq(level: number, wp: Uint8Array, rows: number, cols: number, a: Uint8Array | null, b: Uint8Array | null, N: number,
    aOut: Uint32Array | null, bOut: Uint32Array | null): void;
  gemmI8(level: number, wp: Uint8Array, M: number, K: number, x: Int8Array, N: number, out: Int32Array, threads: number): void;
  sgemm(level: number, M: number, N: number, K: number, A: Float32Array, aOff: number, sai: number, sak: number,
    B: Float32Array, bOff: number, sbk: number, sbj: number, C: Float32Array, cOff: number, sci: number, scj: number,
    accumulate: number, bias: Float32Array | null, threads: number): void;
  smallF32(level: number, op: number, target: Float32Array, x: Float32Array, y: Float32Array, bias: Float32Array | null, T: number, C: number, OC: number): void;
  peak(level: number, reps: number): number;
  ccEncrypt(level: number, mem: Uint8Array, layout: Uint32Array, nPolys: number, a: number, m: number, rnd: number, cdt: number, nCdt: number,
    deltaShift: number, upShift: number, outBytes: number, out: number, mLimit: number, mBytes: number, pairHigh: number): number;
  ccDecrypt(level: number, mem: Uint8Array, layout: Uint32Array, nRows: number, a: number, b: number, sh: number, y: number, accumulate: number): void;
  ccTranspose(level: number, mem: Uint8Array, src: number, rows: number, cols: number, dst: number): void;
  ccDecryptFrom(level: number, mem: Uint8Array, layout: Uint32Array, nRows: number, a: Uint32Array, b: Uint32Array, sh: number, y: number, accumulate: number): void;
  ccTransposeInto(mem: Uint8Array, y: number, nRows: number, n: number, acc: Int32Array | Float64Array, rows: number, r0: number, t0: number, tn: number): void;
  crossEntropy(level: number, logits: Float32Array, targets: Int32Array, T: number, V: number, grad: number, inv: number, losses: Float64Array, threads: number): void;
  swiglu(level: number, op: number, n: number, gate: Float32Array, up: Float32Array, out: Float32Array, dgate: Float32Array | null, dup: Float32Array | null, threads: number): void;
  lora(level: number, op: number, T: number, inDim: number, outDim: number, rank: number, scale: number, keep: number, x: Float32Array, A: Float32Array, B: Float32Array,
    mask: Uint8Array | null, y: Float32Array, h: Float32Array, dx: Float32Array | null, gradA: Float32Array | null, gradB: Float32Array | null, threads: number): void;
  dropoutMask(level: number, stream: Uint8Array, threshold: number, mask: Uint8Array): void;
  rmsnorm(level: number, op: number, T: number, C: number, inp: Float32Array, weight: Float32Array, a: Float32Array, rstd: Float32Array | null,
    dout: Float32Array | null, eps: number, threads: number): void;
  quantizeRows(level: number, x: Float32Array, colScale: Float32Array | null, rows: number, cols: number, qmax: number, out: Int8Array | Int16Array,
    scales: Float32Array, threads: number): number;
  dequantize(level: number, acc: Int32Array | Float64Array, sx: Float32Array, sw: Float32Array | null, OC: number, y: Float32Array,
    t0: number, tn: number, o0: number, on: number): void;
  attention(level: number, op: number, T: number, nH: number, nKv: number, hd: number, seqIds: Int32Array, q: Float32Array, k: Float32Array,
    v: Float32Array, out: Float32Array, lse: Float32Array | null, dout: Float32Array | null, dq: Float32Array | null, dk: Float32Array | null,
    dv: Float32Array | null, threads: number): void;
}

/**
 * Threads of the native fp32 work started from this thread: HELORA_THREADS, else every core on
 * the main thread (the client's model work) and 1 in worker threads (a pool's worker is one of
 * several already sharing the cores).
 */
function defaultThreads(): number {
  const env = process.env.HELORA_THREADS;
  if (env !== undefined && env !== '') {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1 || n > 256) throw new Error(`helora: HELORA_THREADS must be an integer in [1, 256], got ${env}`);
    return isMainThread ? n : 1;
  }
  return isMainThread ? availableParallelism() : 1;
}

/** Path of the built addon under the package root. */
export function nativeAddonPath(): string {
  return join(repoRoot(), 'build', 'native', 'helora.node');
}

/** The native kernels at one CPU level. */
export class NativeKernels {
  /** Threads of sgemm, crossEntropy, swiglu and attention (see defaultThreads). */
  threads = defaultThreads();

  constructor(private readonly addon: Addon, private levelIndex: number, public level: string) {}

  /** The CPU levels this machine runs, best first (e.g. avx512vnni, avx512, avx2, scalar; on arm64 dotprod, neon, scalar). */
  levels(): string[] {
    return this.addon.levels().map((l) => l.name);
  }

  /** Switches this thread's level; returns the previous one. */
  setLevel(name: string): string {
    const l = this.addon.levels().find((x) => x.name === name);
    if (!l) throw new Error(`helora: native kernel level ${name} is not supported on this CPU (supported: ${this.levels().join(', ')})`);
    const prev = this.level;
    this.levelIndex = l.index;
    this.level = l.name;
    return prev;
  }

  /** Int8 w[M][K] packed into 4-row blocks of i16 pairs (the layout of ZqWeights.packed). */
  packI8(w: Int8Array, M: number, K: number): Uint8Array {
    const dst = new Uint8Array(Math.ceil(M / 4) * Math.ceil(K / 2) * 16);
    this.addon.packI8(w, M, K, dst);
    return dst;
  }

  /**
   * The Z_2^44 product of zq-matmul.ts over packed weights; the a part runs when a and aOut are
   * given, the b part when b and bOut are (at least one).
   */
  zq(packed: Uint8Array, rows: number, cols: number, a: Uint8Array | null, b: Uint8Array | null, N: number,
    aOut: Uint32Array | null, bOut: Uint32Array | null): void {
    if ((a === null) !== (aOut === null) || (b === null) !== (bOut === null) || (a === null && b === null)) {
      throw new Error('helora: native zq needs a with aOut and/or b with bOut');
    }
    this.addon.zq(this.levelIndex, packed, rows, cols, a, b, N, aOut, bOut);
  }

  /** The a part alone: aOut = round(W·A) (48-bit mask words, 6 bytes each). */
  zqA(packed: Uint8Array, rows: number, cols: number, a: Uint8Array, N: number, aOut: Uint32Array): void {
    this.zq(packed, rows, cols, a, null, N, aOut, null);
  }

  /** The b part alone: bOut = round(W·(B << 4)) (40-bit body words, 5 bytes each); all a public mask table needs. */
  zqB(packed: Uint8Array, rows: number, cols: number, b: Uint8Array, N: number, bOut: Uint32Array): void {
    this.zq(packed, rows, cols, null, b, N, null, bOut);
  }

  /** out[M][N] = W · x[K][N] in int32 for packed W (rows split over `threads`); into `out` when given. */
  gemmI8(packed: Uint8Array, M: number, K: number, x: Int8Array, N: number, out: Int32Array = new Int32Array(M * N)): Int32Array {
    this.addon.gemmI8(this.levelIndex, packed, M, K, x, N, out, this.threads);
    return out;
  }

  /**
   * out(i, j) (= or +=) sum_k A(i,k) B(k,j) (+ bias[j]) over strided views (see F32Operand);
   * M, N >= 1, K >= 0.
   */
  sgemm(M: number, N: number, K: number, A: F32Operand, B: F32Operand, out: F32Operand, accumulate: boolean, bias: Float32Array | null): void {
    for (const v of [A, B, out]) {
      if (v.si < 0 || v.sj < 0 || v.offset < 0) throw new Error('helora: native sgemm needs non-negative strides and offsets');
    }
    this.addon.sgemm(this.levelIndex, M, N, K, A.data, A.offset, A.si, A.sj, B.data, B.offset, B.si, B.sj,
      out.data, out.offset, out.si, out.sj, accumulate ? 1 : 0, bias, this.threads);
  }

  /**
   * Cross entropy of logits[T][V] (targets -100 = ignored, else in [0, V)): each row's loss
   * (logsumexp - logit[target], 0 when ignored) into losses[T]; with grad the logits are replaced
   * by the gradient of (sum of losses) * inv.
   */
  crossEntropy(logits: Float32Array, targets: Int32Array, T: number, V: number, grad: boolean, inv: number, losses: Float64Array): void {
    this.addon.crossEntropy(this.levelIndex, logits, targets, T, V, grad ? 1 : 0, inv, losses, this.threads);
  }

  /** out[n] = silu(gate) * up. */
  swigluForward(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
    this.addon.swiglu(this.levelIndex, 0, n, gate, up, out, null, null, this.threads);
  }

  /**
   * The LoRA branch of one projection: y[T][out] += scale * (dropout(x) A^T) B^T, h[T][rank] =
   * dropout(x) A^T; dropout keeps x * keep where mask is 1 (no mask: none). A [rank][in], B [out][rank].
   */
  loraForward(y: Float32Array, h: Float32Array, x: Float32Array, A: Float32Array, B: Float32Array, mask: Uint8Array | null, keep: number,
    T: number, inDim: number, outDim: number, rank: number, scale: number): void {
    this.addon.lora(this.levelIndex, 0, T, inDim, outDim, rank, scale, keep, x, A, B, mask, y, h, null, null, null, this.threads);
  }

  /** gradA, gradB (and dx when given) += the gradients of loraForward for dy; h as loraForward left it. */
  loraBackward(dx: Float32Array | null, gradA: Float32Array, gradB: Float32Array, dy: Float32Array, x: Float32Array, h: Float32Array, A: Float32Array, B: Float32Array,
    mask: Uint8Array | null, keep: number, T: number, inDim: number, outDim: number, rank: number, scale: number): void {
    this.addon.lora(this.levelIndex, 1, T, inDim, outDim, rank, scale, keep, x, A, B, mask, dy, h, dx, gradA, gradB, this.threads);
  }

  /** out[T][C] = weight * x / sqrt(mean(x^2) + eps) per row; rstd[t] = that row's 1/sqrt(..) when given. */
  rmsnormForward(out: Float32Array, rstd: Float32Array | null, inp: Float32Array, weight: Float32Array, T: number, C: number, eps: number): void {
    this.addon.rmsnorm(this.levelIndex, 0, T, C, inp, weight, out, rstd, null, eps, this.threads);
  }

  /** dinp += the input gradient of rmsnormForward for dout (the weight's gradient is not computed). */
  rmsnormBackward(dinp: Float32Array, dout: Float32Array, inp: Float32Array, weight: Float32Array, rstd: Float32Array, T: number, C: number): void {
    this.addon.rmsnorm(this.levelIndex, 1, T, C, inp, weight, dinp, rstd, dout, 0, this.threads);
  }

  /**
   * Per-row symmetric quantization of x[rows][cols] (each column times colScale first, in float,
   * when given) to |q| <= qmax: bit for bit quantize.ts. Returns -1; or the first index of a
   * non-finite x value; or -(index + 2) for a non-finite product (nothing is then guaranteed about out).
   */
  quantizeRows(x: Float32Array, colScale: Float32Array | null, rows: number, cols: number, qmax: number, out: Int8Array | Int16Array, scales: Float32Array): number {
    return this.addon.quantizeRows(this.levelIndex, x, colScale, rows, cols, qmax, out, scales, this.threads);
  }

  /** y[t][o] = fround((acc * sx[t]) * sw[o]) (sw null: fround(acc * sx[t])) for t in [t0, t0+tn), o in [o0, o0+on). */
  dequantize(acc: Int32Array | Float64Array, sx: Float32Array, sw: Float32Array | null, OC: number, y: Float32Array, t0: number, tn: number, o0: number, on: number): void {
    this.addon.dequantize(this.levelIndex, acc, sx, sw, OC, y, t0, tn, o0, on);
  }

  /** mask[i] = 1 where the i-th little-endian 16-bit word of stream is >= threshold, else 0. */
  dropoutMask(stream: Uint8Array, threshold: number, mask: Uint8Array): void {
    this.addon.dropoutMask(this.levelIndex, stream, threshold, mask);
  }

  /** dgate, dup += the gradients of swigluForward for dout. */
  swigluBackward(dgate: Float32Array, dup: Float32Array, dout: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
    this.addon.swiglu(this.levelIndex, 1, n, gate, up, dout, dgate, dup, this.threads);
  }

  /**
   * Grouped-query causal attention with a packing mask (attentionForwardReference in
   * src/model/layers.ts): out[T, nH*hd] and, when given, lse[nH*T] from q[T, nH*hd] and
   * k, v[T, nKv*hd]; key s is visible to query t iff s <= t and seqIds[s] == seqIds[t].
   */
  attentionForward(out: Float32Array, lse: Float32Array | null, q: Float32Array, k: Float32Array, v: Float32Array, seqIds: Int32Array,
    T: number, nH: number, nKv: number, hd: number): void {
    if (T === 0) return;
    this.addon.attention(this.levelIndex, 0, T, nH, nKv, hd, seqIds, q, k, v, out, lse, null, null, null, null, this.threads);
  }

  /** dq, dk, dv += the gradients of attentionForward for dout, given its out and lse. */
  attentionBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dout: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array,
    out: Float32Array, lse: Float32Array, seqIds: Int32Array, T: number, nH: number, nKv: number, hd: number): void {
    if (T === 0) return;
    this.addon.attention(this.levelIndex, 1, T, nH, nKv, hd, seqIds, q, k, v, out, lse, dout, dq, dk, dv, this.threads);
  }

  /**
   * The few-token llm.c matmuls (see matmul-f32.ts SMALL_T), reading the weights in place:
   * 'fwd' target[T][OC] = x[T][C] · y[OC][C]^T (+ bias); 'bwdIn' target[T][C] += x[T][OC] · y[OC][C];
   * 'bwdW' target[OC][C] += x[T][OC]^T · y[T][C]. Arrays are used from index 0.
   */
  smallMatmul(op: 'fwd' | 'bwdIn' | 'bwdW', target: Float32Array, x: Float32Array, y: Float32Array, bias: Float32Array | null, T: number, C: number, OC: number): void {
    this.addon.smallF32(this.levelIndex, op === 'fwd' ? 0 : op === 'bwdIn' ? 1 : 2, target, x, y, bias, T, C, OC);
  }

  /** Multiply-accumulates of `reps` rounds of the register-only loop of this level's best dot-product instruction. */
  peak(reps: number): number {
    return this.addon.peak(this.levelIndex, reps);
  }

  /**
   * The client crypto's hot loops (src/kernels/native/client-crypto.c), bit-identical twins of the
   * WebAssembly kernel's encryptPolys (FFT path), decryptRowsFft and transposeI32, run on that
   * kernel's own memory: mem is a view of the whole WebAssembly memory, layout its FFT state
   * (n2 and the offsets of twist, untwist, fw, iw, fw4, iw4, secret, fbuf, wide, split), the other
   * pointers offsets into it (the addon checks every region against mem). Used by ClientCryptoKernel.
   */
  ccEncrypt(mem: Uint8Array, layout: Uint32Array, nPolys: number, a: number, m: number, rnd: number, cdt: number, nCdt: number,
    deltaShift: number, upShift: number, outBytes: number, out: number, mLimit: number, mBytes: number, pairHigh: boolean): number {
    return this.addon.ccEncrypt(this.levelIndex, mem, layout, nPolys, a, m, rnd, cdt, nCdt, deltaShift, upShift, outBytes, out, mLimit, mBytes, pairHigh ? 1 : 0);
  }

  ccDecrypt(mem: Uint8Array, layout: Uint32Array, nRows: number, a: number, b: number, sh: number, y: number, accumulate: boolean): void {
    this.addon.ccDecrypt(this.levelIndex, mem, layout, nRows, a, b, sh, y, accumulate ? 1 : 0);
  }

  ccTranspose(mem: Uint8Array, src: number, rows: number, cols: number, dst: number): void {
    this.addon.ccTranspose(this.levelIndex, mem, src, rows, cols, dst);
  }

  /** ccDecrypt with a and b read from the caller's arrays (nRows*N values each) rather than the kernel memory. */
  ccDecryptFrom(mem: Uint8Array, layout: Uint32Array, nRows: number, a: Uint32Array, b: Uint32Array, sh: number, y: number, accumulate: boolean): void {
    this.addon.ccDecryptFrom(this.levelIndex, mem, layout, nRows, a, b, sh, y, accumulate ? 1 : 0);
  }

  /** acc[(t0 + t)*rows + r0 + r] = y[r*n + t] (r < nRows, t < tn) for the int32 rows at y in mem. */
  ccTransposeInto(mem: Uint8Array, y: number, nRows: number, n: number, acc: Int32Array | Float64Array, rows: number, r0: number, t0: number, tn: number): void {
    this.addon.ccTransposeInto(mem, y, nRows, n, acc, rows, r0, t0, tn);
  }

  /** The instruction peak() times at this level. */
  peakInstruction(): string {
    return { avx512vnni: 'vpdpbusd zmm', avx512: 'vpmaddwd+vpaddd zmm', avx2: 'vpmaddwd+vpaddd ymm', dotprod: 'sdot q', neon: 'smlal2 q' }[this.level] ?? 'scalar multiply-add';
  }
}

let chosen: { native: NativeKernels | null } | null = null;

/** Loads the addon (no backend choice): null with the reason when it is not there or does not load. */
export function loadNativeKernels(): { kernels: NativeKernels | null; error: string } {
  const path = nativeAddonPath();
  if (!existsSync(path)) return { kernels: null, error: `${path} is missing (no C compiler at build time, or the build failed; run \`npm run build:native\`)` };
  try {
    const addon = createRequire(import.meta.url)(path) as Addon;
    const best = addon.levels()[0]!;
    const k = new NativeKernels(addon, best.index, best.name);
    const forced = process.env.HELORA_NATIVE_LEVEL;
    if (forced) k.setLevel(forced);
    return { kernels: k, error: '' };
  } catch (e) {
    return { kernels: null, error: e instanceof Error ? e.message : String(e) };
  }
}

/** The native kernels when this thread runs them, null when it runs WebAssembly (see the file comment). */
export function nativeKernels(): NativeKernels | null {
  if (chosen) return chosen.native;
  defaultThreads(); // a bad HELORA_THREADS is an error here, not a reason to fall back to WebAssembly
  const mode = process.env.HELORA_KERNELS ?? '';
  if (mode !== '' && mode !== 'wasm' && mode !== 'native') throw new Error(`helora: HELORA_KERNELS must be wasm or native, got ${mode}`);
  let native: NativeKernels | null = null;
  let why = 'HELORA_KERNELS=wasm';
  if (mode !== 'wasm') {
    const r = loadNativeKernels();
    if (!r.kernels && mode === 'native') throw new Error(`helora: HELORA_KERNELS=native but the native kernels are unavailable: ${r.error}`);
    native = r.kernels;
    why = r.error;
  }
  chosen = { native };
  if (isMainThread) {
    const cpu = cpus()[0]?.model ?? 'unknown CPU';
    process.stderr.write(native
      ? `helora: kernels: native ${native.level} (${cpu}), fp32 work on ${native.threads} thread${native.threads === 1 ? '' : 's'}\n`
      : `helora: kernels: WebAssembly SIMD (${why})\n`);
  }
  return native;
}

/** Which backend this thread runs, and its level. */
export function kernelBackend(): { backend: 'native' | 'wasm'; level: string } {
  const n = nativeKernels();
  return n ? { backend: 'native', level: n.level } : { backend: 'wasm', level: 'wasm-simd128' };
}
